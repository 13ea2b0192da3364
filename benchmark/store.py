"""The queue and the results, in SQL through SQLAlchemy: SQLite (WAL) on one machine, PostgreSQL for many.

A submission is one row whose `status` moves PENDING -> RUNNING -> FINISHED | FAILED (or REJECTED at once,
when validation refuses it). The invariants the tests hold this to:
- a claim is one UPDATE guarded by `status = 'PENDING'` (and, on PostgreSQL, `FOR UPDATE SKIP LOCKED`), so no
  two workers ever hold the same job;
- a result is written in the same transaction that moves the job from RUNNING (held by this worker, this
  attempt) to FINISHED, and `results.submission_id` is unique: never FINISHED without a result, never two results;
- a job whose worker stopped heartbeating returns to PENDING, and after `max_attempts` lost or failed attempts
  it becomes FAILED with the reason.
Times are Unix seconds from the writer's clock (workers on several machines need roughly synchronised clocks).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from stegobench.core.errors import ResourceError


class JobState(StrEnum):
    """A submission's `status` column: each member is the string stored (and compares equal to it)."""

    REJECTED = "REJECTED"  # validation refused it; never queued
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


STATES = tuple(s.value for s in JobState)  # the stored strings, in the order the queue's summary lists them

metadata = sa.MetaData()

submissions = sa.Table(
    "submissions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("submitter", sa.String(200), nullable=False),
    sa.Column("track", sa.String(100), nullable=False),
    sa.Column("base_model", sa.String(500), nullable=False),
    sa.Column("revision", sa.String(100), nullable=True),
    sa.Column("kind", sa.String(20), nullable=False),  # adapter | merged | base
    sa.Column("artifact_sha256", sa.String(64), nullable=True),  # sha256 of the canonical file listing
    sa.Column("size_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("notes", sa.Text, nullable=False, default=""),
    sa.Column("token_id", sa.Integer, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    # Set only for accepted submissions: a unique index turns a racing duplicate into an IntegrityError.
    sa.Column("dedup_key", sa.String(64), nullable=True, unique=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("claimed_at", sa.Float, nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("errors", sa.Text, nullable=False, default="[]"),  # JSON list of {attempt, worker, error}
    sa.Index("ix_submissions_status_created", "status", "created_at"),
    sa.Index("ix_submissions_track_status", "track", "status"),  # a track's finished rows; claims by track
)

results = sa.Table(
    "results", metadata,
    sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("baseline_key", sa.String(64), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # JSON: the leaderboard row's numbers
)

baselines = sa.Table(
    "baselines", metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 of track split, base model, eval config
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("track", sa.String(100), nullable=False),
    sa.Column("base_model", sa.String(500), nullable=False),
    sa.Column("run_dir", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)

# One row per web upload a token started, kept for the rate limit's window: a slot is taken before the body is
# read, so the limit counts uploads, accepted or not.
upload_slots = sa.Table(
    "upload_slots", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_upload_slots_token_created", "token_id", "created_at"),
)


@dataclass(frozen=True)
class Job:
    id: int
    track: str
    base_model: str
    revision: str | None
    kind: str
    artifact_sha256: str | None
    attempts: int
    worker: str


class StoreError(ResourceError):
    """The leaderboard database cannot be opened (a server that does not answer, a file that cannot be written)."""


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a plain digest is enough; a slow KDF protects low-entropy passwords.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor the writer the readers
    cur.execute("PRAGMA busy_timeout=30000")  # writers queue for the lock instead of failing at once
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps the database consistent
    cur.close()


class Store:
    """Every read and write of the queue. One instance per process; safe across threads (pooled connections)."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("sqlite"):
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        try:
            metadata.create_all(self.engine)
            # create_all makes a missing table with its indexes, never an index added to an existing table.
            with self.engine.begin() as conn:
                for table in metadata.sorted_tables:
                    for index in table.indexes:
                        conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open the leaderboard database {self.safe_url()}: {exc.orig}") from None

    def safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- tokens ---------------------------------------------------------------------------------------

    def add_token(self, name: str) -> str:
        """Create a submitter token; only its hash is stored, so this is the one time it can be shown."""
        token = "sb_" + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(tokens.insert().values(name=name, token_sha256=hash_token(token), created_at=time.time(),
                                                revoked=False))
        return token

    def token_owner(self, token: str | None) -> tuple[int, str] | None:
        """(token id, name) for a valid, unrevoked token; None otherwise."""
        if not token:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tokens.c.id, tokens.c.name).where(
                tokens.c.token_sha256 == hash_token(token), tokens.c.revoked.is_(False))).first()
        return (row.id, row.name) if row else None

    def revoke_token(self, name: str) -> int:
        with self.engine.begin() as conn:
            return conn.execute(tokens.update().where(tokens.c.name == name).values(revoked=True)).rowcount

    def reserve_upload(self, token_id: int, limit: int, window_seconds: float) -> bool:
        """Take one of the token's `limit` upload slots per `window_seconds`; False when all are taken.

        Count and insert are one transaction that starts with a write to the token's row: that write takes the
        row's lock (PostgreSQL) or the database's write lock (SQLite), so two uploads with one token cannot both
        count the same free slot."""
        now = time.time()
        since = now - window_seconds
        with self.engine.begin() as conn:
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked=tokens.c.revoked))
            conn.execute(upload_slots.delete().where(upload_slots.c.token_id == token_id,
                                                     upload_slots.c.created_at < since))
            taken = conn.execute(sa.select(sa.func.count()).select_from(upload_slots).where(
                upload_slots.c.token_id == token_id, upload_slots.c.created_at >= since)).scalar_one()
            if taken >= limit:
                return False
            conn.execute(upload_slots.insert().values(token_id=token_id, created_at=now))
        return True

    # -- submissions ----------------------------------------------------------------------------------

    def add_submission(self, *, display_name: str, submitter: str, track: str, base_model: str,
                       revision: str | None, kind: str, artifact_sha256: str | None, size_bytes: int,
                       notes: str = "", token_id: int | None = None, reason: str | None = None,
                       dedup_key: str | None = None) -> tuple[int, int | None]:
        """Insert a submission: PENDING, or REJECTED with `reason`. Returns (id, id of the original when this
        one duplicates it). A duplicate is stored as REJECTED too, naming the original."""
        row = dict(created_at=time.time(), display_name=display_name, submitter=submitter, track=track,
                   base_model=base_model, revision=revision, kind=kind, artifact_sha256=artifact_sha256,
                   size_bytes=size_bytes, notes=notes, token_id=token_id, attempts=0, errors="[]")
        if reason is None and dedup_key is not None:
            try:
                with self.engine.begin() as conn:
                    new_id = conn.execute(submissions.insert().values(**row, status="PENDING", dedup_key=dedup_key)
                                          ).inserted_primary_key[0]
                return new_id, None
            except IntegrityError:
                with self.engine.connect() as conn:
                    original = conn.execute(sa.select(submissions.c.id).where(submissions.c.dedup_key == dedup_key)
                                            ).scalar() or 0  # 0: freed again since (FAILED); rare
                reason = self.duplicate_reason(original)
                with self.engine.begin() as conn:
                    new_id = conn.execute(submissions.insert().values(**row, status="REJECTED", reason=reason)
                                          ).inserted_primary_key[0]
                return new_id, original
        with self.engine.begin() as conn:
            new_id = conn.execute(submissions.insert().values(
                **row, status="REJECTED" if reason else "PENDING", reason=reason)).inserted_primary_key[0]
        return new_id, None

    def holder(self, dedup_key: str) -> int | None:
        """The submission that holds `dedup_key` (queued, running or ranked), if any."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(submissions.c.id).where(submissions.c.dedup_key == dedup_key)).scalar()

    def names_in_use(self) -> list[tuple[int, str, str]]:
        """(id, display name, submitter) of every submission that was not refused: names a new one must not imitate."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(
                submissions.c.id, submissions.c.display_name, submissions.c.submitter).where(
                submissions.c.status != "REJECTED"))]

    @staticmethod
    def duplicate_reason(original: int) -> str:
        return f"duplicate of submission #{original} (same track, base model and adapter content)"

    def artifact_in_use(self, artifact_sha256: str) -> bool:
        """Whether a submission that was not refused names these stored files."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(submissions.c.id).where(
                submissions.c.artifact_sha256 == artifact_sha256, submissions.c.status != "REJECTED").limit(1)
            ).first() is not None

    def get(self, submission_id: int) -> dict[str, Any] | None:
        if not 0 < submission_id < 2**63:  # beyond the column's range: no such submission (not a database error)
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(submissions).where(submissions.c.id == submission_id)).mappings().first()
            if row is None:
                return None
            out = dict(row)
            res = conn.execute(sa.select(results).where(results.c.submission_id == submission_id)).mappings().first()
        out["errors"] = json.loads(out["errors"] or "[]")
        out["result"] = {**dict(res), "summary": json.loads(res["summary"])} if res else None
        return out

    def list_submissions(self, status: str | None = None, track: str | None = None, limit: int = 200,
                         before: int | None = None) -> list[dict]:
        """The newest `limit` submissions, or the newest older than id `before` (the next page: a range of the
        primary key, as fast on page 1000 as on page 1)."""
        q = sa.select(submissions).order_by(submissions.c.id.desc()).limit(limit)
        if before is not None:
            q = q.where(submissions.c.id < before)
        if status:
            q = q.where(submissions.c.status == status)
        if track:
            q = q.where(submissions.c.track == track)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(submissions.c.status, sa.func.count()).group_by(submissions.c.status))
            found = dict(rows.all())
        return {s: found.get(s, 0) for s in STATES}

    def finished(self, track: str | None = None) -> list[dict]:
        """FINISHED submissions with their result summaries (what the leaderboard ranks)."""
        q = sa.select(submissions, results.c.summary, results.c.run_dir, results.c.baseline_key).join(
            results, results.c.submission_id == submissions.c.id).where(submissions.c.status == "FINISHED")
        if track:
            q = q.where(submissions.c.track == track)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["summary"] = json.loads(r["summary"])
        return rows

    # -- the queue ------------------------------------------------------------------------------------

    def claim(self, worker: str, tracks: list[str] | None = None, skip_ids: Iterable[int] = ()) -> Job | None:
        """Atomically take the oldest PENDING job for `worker` (of one of `tracks`, when given, and not one of
        `skip_ids`); None when there is none."""
        claimable = [submissions.c.status == "PENDING"]
        if tracks is not None:
            claimable.append(submissions.c.track.in_(tracks))
        if skip := sorted(set(skip_ids)):
            claimable.append(submissions.c.id.not_in(skip))
        for _ in range(20):  # PostgreSQL may hand a racing claimer 0 rows; try the next job
            pick = sa.select(submissions.c.id).where(*claimable).order_by(
                submissions.c.created_at, submissions.c.id).limit(1)
            if self.dialect == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            now = time.time()
            stmt = submissions.update().where(
                submissions.c.id == pick.scalar_subquery(), submissions.c.status == "PENDING",
            ).values(status="RUNNING", worker=worker, claimed_at=now, heartbeat_at=now,
                     attempts=submissions.c.attempts + 1).returning(
                submissions.c.id, submissions.c.track, submissions.c.base_model, submissions.c.revision,
                submissions.c.kind, submissions.c.artifact_sha256, submissions.c.attempts)
            with self.engine.begin() as conn:
                row = conn.execute(stmt).first()
            if row is not None:
                return Job(row.id, row.track, row.base_model, row.revision, row.kind, row.artifact_sha256,
                           row.attempts, worker)
            with self.engine.connect() as conn:
                pending = conn.execute(sa.select(sa.func.count()).select_from(submissions).where(*claimable)
                                       ).scalar_one()
            if not pending:
                return None
        return None

    def running(self) -> list[dict[str, Any]]:
        """RUNNING jobs: id, worker and last heartbeat (time.time() of the worker's clock)."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(
                submissions.c.id, submissions.c.worker, submissions.c.heartbeat_at).where(
                submissions.c.status == "RUNNING").order_by(submissions.c.id)).mappings()]

    def pending_tracks(self) -> dict[str, int]:
        """{track: number of PENDING jobs}."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(submissions.c.track, sa.func.count()).where(
                submissions.c.status == "PENDING").group_by(submissions.c.track))
            return dict(rows.all())

    def _held(self, job: Job):
        """The WHERE clause that says this worker still holds this attempt of the job."""
        return sa.and_(submissions.c.id == job.id, submissions.c.status == "RUNNING",
                       submissions.c.worker == job.worker, submissions.c.attempts == job.attempts)

    def heartbeat(self, job: Job) -> bool:
        """Refresh the job's heartbeat; False when the job was taken away (requeued after a timeout)."""
        with self.engine.begin() as conn:
            return conn.execute(submissions.update().where(self._held(job)).values(heartbeat_at=time.time())
                                ).rowcount == 1

    def finish(self, job: Job, run_dir: str, baseline_key: str, summary: dict[str, Any]) -> bool:
        """Store the result and mark the job FINISHED, in one transaction. False (and nothing written) when
        this worker no longer holds the job."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                if conn.execute(submissions.update().where(self._held(job)).values(
                        status="FINISHED", finished_at=now, heartbeat_at=now)).rowcount != 1:
                    raise _Lost()
                conn.execute(results.insert().values(submission_id=job.id, created_at=now, attempt=job.attempts,
                                                     run_dir=run_dir, baseline_key=baseline_key,
                                                     summary=json.dumps(summary, sort_keys=True)))
        except (_Lost, IntegrityError):
            return False
        return True

    def fail(self, job: Job, error: str, max_attempts: int, final: bool = False) -> str | None:
        """Record a failed attempt: back to PENDING, or FAILED when attempts are spent or `final`.
        Returns the new status (None when this worker no longer held the job)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(submissions.c.errors).where(self._held(job))).first()
            if row is None:
                return None
            errors = json.loads(row.errors or "[]") + [{"attempt": job.attempts, "worker": job.worker, "error": error}]
            status = "FAILED" if final or job.attempts >= max_attempts else "PENDING"
            reason = _failure_reason(errors) if status == "FAILED" else None
            # A FAILED entry gives up its dedup key: the same adapter may be submitted again.
            freed = {"dedup_key": None} if status == "FAILED" else {}
            done = conn.execute(submissions.update().where(self._held(job)).values(
                status=status, reason=reason, errors=json.dumps(errors), worker=None,
                finished_at=time.time() if status == "FAILED" else None, **freed)).rowcount
        return status if done == 1 else None

    def release(self, job: Job, error: str) -> bool:
        """Give a claimed job back, PENDING with its attempt uncounted: the evaluator's fault (its track config, a
        lost artifact, a locked database), never the submission's. The error is kept, marked as the evaluator's,
        for the operator. False when this worker no longer held the job."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(submissions.c.errors).where(self._held(job))).first()
            if row is None:
                return False
            errors = json.loads(row.errors or "[]") + [
                {"attempt": job.attempts, "worker": job.worker, "error": error, "evaluator": True}]
            return conn.execute(submissions.update().where(self._held(job)).values(
                status="PENDING", worker=None, attempts=job.attempts - 1, errors=json.dumps(errors))).rowcount == 1

    def requeue_stale(self, timeout: float, max_attempts: int) -> list[int]:
        """Jobs whose worker stopped heartbeating: back to PENDING, or FAILED after `max_attempts`."""
        cutoff = time.time() - timeout
        changed = []
        with self.engine.begin() as conn:
            stale = conn.execute(sa.select(submissions.c.id, submissions.c.attempts, submissions.c.worker,
                                           submissions.c.errors).where(
                submissions.c.status == "RUNNING", submissions.c.heartbeat_at < cutoff)).all()
            for row in stale:
                errors = json.loads(row.errors or "[]") + [
                    {"attempt": row.attempts, "worker": row.worker,
                     "error": f"worker stopped heartbeating for over {timeout:.0f} s (killed or lost)"}]
                status = "FAILED" if row.attempts >= max_attempts else "PENDING"
                done = conn.execute(submissions.update().where(
                    submissions.c.id == row.id, submissions.c.status == "RUNNING",
                    submissions.c.attempts == row.attempts, submissions.c.heartbeat_at < cutoff,
                ).values(status=status, worker=None, errors=json.dumps(errors),
                         reason=_failure_reason(errors) if status == "FAILED" else None,
                         **({"dedup_key": None} if status == "FAILED" else {}))).rowcount
                if done:
                    changed.append(row.id)
        return changed

    # -- baselines ------------------------------------------------------------------------------------

    def failed(self, ids: list[int] | None = None) -> list[dict[str, Any]]:
        """FAILED submissions (all, or those in `ids`): what `requeue` may put back."""
        where = [submissions.c.status == "FAILED"] + ([submissions.c.id.in_(ids)] if ids else [])
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(
                submissions.c.id, submissions.c.track, submissions.c.base_model, submissions.c.kind,
                submissions.c.artifact_sha256).where(*where).order_by(submissions.c.id)).mappings()]

    def requeue(self, submission_id: int, dedup_key: str) -> int | None:
        """A FAILED submission back to PENDING with its attempts reset (its error history kept), for an operator
        who fixed the evaluator's fault. It takes its dedup key back first: when another entry holds that key
        now (the same adapter, resubmitted after the failure), nothing changes and that entry's id is returned."""
        try:
            with self.engine.begin() as conn:
                conn.execute(submissions.update().where(submissions.c.id == submission_id,
                                                        submissions.c.status == "FAILED").values(
                    status="PENDING", attempts=0, reason=None, worker=None, finished_at=None, dedup_key=dedup_key))
        except IntegrityError:
            return self.holder(dedup_key) or 0
        return None

    def baseline(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(baselines).where(baselines.c.key == key)).mappings().first()
        return {**dict(row), "summary": json.loads(row["summary"])} if row else None

    def put_baseline(self, key: str, track: str, base_model: str, run_dir: str, summary: dict[str, Any]) -> dict:
        """Store a baseline unless another worker stored it first; return the stored one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(baselines.insert().values(key=key, created_at=time.time(), track=track,
                                                       base_model=base_model, run_dir=run_dir,
                                                       summary=json.dumps(summary, sort_keys=True)))
        except IntegrityError:
            pass
        return self.baseline(key)


    def baselines_all(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(baselines)).mappings().all()
        return [{**dict(r), "summary": json.loads(r["summary"])} for r in rows]

    def replace_summaries(self, results_by_id: dict[int, dict[str, Any]],
                          baselines_by_key: dict[str, dict[str, Any]]) -> None:
        """Store rescored summaries of finished results and baselines, all in one transaction (a rescore that
        fails half-way changes nothing)."""
        with self.engine.begin() as conn:
            for sid, summary in results_by_id.items():
                conn.execute(results.update().where(results.c.submission_id == sid)
                             .values(summary=json.dumps(summary, sort_keys=True)))
            for key, summary in baselines_by_key.items():
                conn.execute(baselines.update().where(baselines.c.key == key)
                             .values(summary=json.dumps(summary, sort_keys=True)))


class _Lost(Exception):
    pass


def _failure_reason(errors: list[dict]) -> str:
    errors = [e for e in errors if not e.get("evaluator")]  # the evaluator's faults are not the submission's
    last = errors[-1]["error"]
    same = sum(1 for e in errors if e["error"] == last)
    return f"failed {len(errors)} time(s)" + (f", {same} the same way" if len(errors) > 1 else "") + f": {last}"
