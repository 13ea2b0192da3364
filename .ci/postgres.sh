#!/usr/bin/env bash
# Start a throwaway PostgreSQL server (Debian package) for the store tests and print its SQLAlchemy URL.
#   export STEGOBENCH_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)
# Installs the server if missing; runs it as the `postgres` user (the server refuses root) on 127.0.0.1:5433.
set -euo pipefail
cd /  # the postgres user may not be allowed into the caller's directory
PORT=${PGPORT_TEST:-5433}
DIR=${PGDATA_TEST:-/tmp/stegobench-pg}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if ! as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
  rm -rf "$DIR"; mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  as_pg "$BIN/initdb" -A trust -U postgres -D "$DIR/data" >/dev/null
  as_pg "$BIN/pg_ctl" -s -w -D "$DIR/data" -l "$DIR/log" -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
fi
as_pg "$BIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='stegobench_test'" | grep -q 1 \
  || as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres stegobench_test >&2
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/stegobench_test"
