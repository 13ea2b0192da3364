"""The queue's invariants on SQLite and PostgreSQL: atomic claims, heartbeats, requeue, one result per job."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from stegobench.benchmark.store import Store

CLAIMER = Path(__file__).with_name("claim_until_empty.py")


def _add(store: Store, n: int, **kw) -> list[int]:
    ids = []
    for i in range(n):
        sid, dup = store.add_submission(display_name=f"m{i}", submitter="t", track="quickstart",
                                        base_model="mock:never_code", revision=None, kind="base",
                                        artifact_sha256=None, size_bytes=0, dedup_key=kw.get("key", f"k{i}"))
        ids.append(sid)
    return ids


def test_claim_is_oldest_first_and_exclusive(db_url):
    store = Store(db_url)
    ids = _add(store, 3)
    first, second = store.claim("w1"), store.claim("w2")
    assert (first.id, second.id) == (ids[0], ids[1])
    assert first.attempts == 1 and store.get(first.id)["status"] == "RUNNING"
    assert store.claim("w3").id == ids[2]
    assert store.claim("w4") is None


def test_duplicate_is_rejected_naming_the_original(db_url):
    store = Store(db_url)
    (a,) = _add(store, 1, key="same")
    b, original = store.add_submission(display_name="again", submitter="t", track="quickstart",
                                       base_model="mock:never_code", revision=None, kind="base",
                                       artifact_sha256=None, size_bytes=0, dedup_key="same")
    assert original == a
    assert store.get(b)["status"] == "REJECTED" and f"#{a}" in store.get(b)["reason"]
    assert store.claim("w").id == a and store.claim("w") is None


def test_result_written_once_with_finished(db_url):
    store = Store(db_url)
    _add(store, 1)
    job = store.claim("w1")
    assert store.finish(job, "/runs/1", "key", {"score": {"value": 0.5}})
    assert not store.finish(job, "/runs/1", "key", {"score": {"value": 0.5}})  # never twice
    sub = store.get(job.id)
    assert sub["status"] == "FINISHED" and sub["result"]["summary"]["score"]["value"] == 0.5


def test_stale_job_is_requeued_and_the_old_worker_cannot_finish_it(db_url):
    store = Store(db_url)
    _add(store, 1)
    dead = store.claim("dead")
    time.sleep(0.05)
    assert store.requeue_stale(timeout=0.01, max_attempts=3) == [dead.id]
    assert store.get(dead.id)["status"] == "PENDING"
    alive = store.claim("alive")
    assert alive.id == dead.id and alive.attempts == 2
    assert not store.heartbeat(dead) and store.heartbeat(alive)
    assert not store.finish(dead, "/late", "key", {"score": {}})  # the dead worker's late result is refused
    assert store.finish(alive, "/ok", "key", {"score": {}})
    assert store.get(alive.id)["result"]["run_dir"] == "/ok"


def test_failures_retry_then_fail_with_reason(db_url):
    store = Store(db_url)
    _add(store, 1)
    for attempt in (1, 2):
        job = store.claim("w")
        assert job.attempts == attempt
        assert store.fail(job, "RuntimeError: out of memory", max_attempts=3) == "PENDING"
    job = store.claim("w")
    assert store.fail(job, "RuntimeError: out of memory", max_attempts=3) == "FAILED"
    sub = store.get(job.id)
    assert sub["status"] == "FAILED" and "3 the same way" in sub["reason"] and "out of memory" in sub["reason"]
    assert len(sub["errors"]) == 3 and store.claim("w") is None


def test_lost_heartbeats_count_as_attempts(db_url):
    store = Store(db_url)
    (sid,) = _add(store, 1)
    for _ in range(2):
        store.claim("w")
        time.sleep(0.02)
        store.requeue_stale(timeout=0.01, max_attempts=2)
    sub = store.get(sid)
    assert sub["status"] == "FAILED" and "heartbeat" in sub["reason"]


def test_tokens_are_stored_hashed_and_can_be_revoked(db_url):
    import sqlalchemy as sa

    from stegobench.benchmark.store import tokens

    store = Store(db_url)
    token = store.add_token("alice")
    assert store.token_owner(token)[1] == "alice"
    assert store.token_owner(token + "x") is None and store.token_owner("") is None
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(tokens.c.token_sha256)).scalars().all()
    assert token not in stored and len(stored[0]) == 64
    assert store.revoke_token("alice") == 1 and store.token_owner(token) is None


def test_concurrent_claimers_never_share_a_job(db_url):
    """Four processes claim as fast as they can; every job is claimed exactly once."""
    store = Store(db_url)
    ids = _add(store, 60)
    procs = [subprocess.Popen([sys.executable, str(CLAIMER), db_url, f"w{i}"], stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    claimed = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        claimed += [int(x) for x in out.split()]
    assert sorted(claimed) == ids  # none lost, none twice
    assert all(store.get(i)["status"] == "RUNNING" for i in ids)


def test_upload_slots_are_reserved_atomically_under_parallel_uploads(db_url):
    """40 parallel uploads with one token got 18 accepted against a limit of 10 (count, then insert, raced)."""
    from concurrent.futures import ThreadPoolExecutor

    store = Store(db_url)
    alice, bob = (store.token_owner(store.add_token(n))[0] for n in ("alice", "bob"))
    with ThreadPoolExecutor(40) as pool:
        taken = list(pool.map(lambda _: store.reserve_upload(alice, 10, 3600), range(40)))
    assert sum(taken) == 10
    assert store.reserve_upload(bob, 10, 3600)  # another token has its own slots
    assert store.reserve_upload(alice, 10, 0.0)  # slots older than the window are free again


def test_a_database_made_before_an_index_was_added_gets_it_at_open(db_url):
    """create_all makes a missing table with its indexes, never an index added to an existing table."""
    import sqlalchemy as sa

    store = Store(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_submissions_track_status"))
    store.dispose()
    store = Store(db_url)
    assert "ix_submissions_track_status" in {i["name"] for i in sa.inspect(store.engine).get_indexes("submissions")}
