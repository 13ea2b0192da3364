"""A worker: claim a job, evaluate it with the harness on the track's test split, store the result.

    stegobench worker --config configs/leaderboard/default.yaml            # until stopped
    stegobench worker --once                                               # drain the queue, then exit

Any number of workers, on one machine (SQLite) or many (PostgreSQL), share the queue: a claim is atomic, a
heartbeat thread keeps the job alive, and a worker that dies (SIGKILL, power loss) leaves a job that returns to
PENDING once its heartbeat is `heartbeat_timeout_seconds` old. Base-model and in-context baselines are computed
once per (track split, base model, eval config) and reused by every submission on that base.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from stegobench.core.config import load_config, to_dict
from stegobench.core.errors import StegobenchError, UserError
from stegobench.core.profile import Work, span
from stegobench.core.provenance import OutputDirError, sha256_json

from .artifacts import artifact_folder
from .config import LeaderboardConfig, track_config
from .ranking import summarize_condition
from .store import Job, Store

log = logging.getLogger(__name__)


def prepare_track(cfg: LeaderboardConfig, name: str) -> Path:
    """The track's test corpus, generated once into the data directory (private questions when configured)."""
    from stegobench.data_gen.generate import generate, read_manifest
    from stegobench.core.provenance import sha256_file

    setup = cfg.tracks[name]
    track_cfg = track_config(cfg, name)
    key = sha256_json({"config": to_dict(track_cfg),
                       "private": sha256_file(setup.private_questions) if setup.is_private else None})[:16]
    folder = cfg.data_path() / "tracks" / f"{name}-{key}"
    if not (folder / "manifest.json").exists():
        try:
            generate(track_cfg, folder)
        except OutputDirError:
            if not (folder / "manifest.json").exists():  # not a concurrent worker's finished corpus
                raise
    read_manifest(folder)
    return folder


def plots_beside_baseline(run_dir: str | Path, base_run_dir: str | Path) -> None:
    """Redraw a submission's rates.png and per_mapping.png with its base model's and in-context bars beside it:
    its run holds the submission alone (the baselines are evaluated once per base model, in their own run)."""
    from stegobench.eval.report import write_plots
    from stegobench.eval.runlog import read_run

    try:
        reference = read_run(base_run_dir)
    except StegobenchError:
        log.warning("baseline run %s cannot be read; the plots of %s show the submission alone", base_run_dir, run_dir)
        return
    write_plots(read_run(run_dir), Path(run_dir), reference)


# How long a worker leaves a track (or a job) alone after the evaluator's own fault with it: an operator's fix
# takes minutes, and retrying sooner only repeats the error in the log.
FAULT_BACKOFF_SECONDS = 300.0


class EvaluatorFault(StegobenchError):
    """The evaluator, not the submission, is at fault (its track config, a lost artifact, a locked database): the
    job goes back to PENDING with its attempt uncounted, and this worker leaves it alone for a while."""

    def __init__(self, message: str, job_id: int | None = None):
        super().__init__(message)
        self.job_id = job_id  # a fault of this job alone (its artifact, its base model); None: of its whole track


class Heartbeat:
    """Refreshes a job's heartbeat from a thread while the main thread evaluates."""

    def __init__(self, store: Store, job: Job, every: float):
        self.store, self.job, self.every = store, job, every
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.store.heartbeat(self.job):
                    self.lost = True  # requeued after a timeout: another worker may be running it now
                    log.warning("job %s was taken away from this worker; its result will be discarded", self.job.id)
                    return
            except Exception:  # a database hiccup must not kill the evaluation
                log.exception("heartbeat for job %s failed; retrying", self.job.id)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class HeldJob:
    """A RUNNING job of another worker whose heartbeat has not expired: alive, or dead and not yet noticed."""

    id: int
    worker: str
    heartbeat_age: float  # seconds since its last heartbeat
    reclaimed_in: float  # seconds until requeue_stale takes it back, if no heartbeat comes

    def describe(self, timeout: float) -> str:
        return (f"job #{self.id} is RUNNING on worker {self.worker} (last heartbeat {self.heartbeat_age:.0f} s ago); "
                f"if that worker is dead, the job goes back to PENDING in {self.reclaimed_in:.0f} s "
                f"(heartbeat_timeout_seconds {timeout:g}): run the worker again then")


class Worker:
    def __init__(self, cfg: LeaderboardConfig, store: Store, name: str | None = None):
        self.cfg, self.store = cfg, store
        self.held: list[HeldJob] = []  # after run(once=True): jobs other workers still hold
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # Tracks and jobs left alone after an evaluator fault: name/id -> time.time() until which they are skipped.
        self.faulty_tracks: dict[str, float] = {}
        self.faulty_jobs: dict[int, float] = {}
        self.faults = 0
        # The evaluator's own config is checked before any job is claimed: a typo in it (backend=mokc) is the
        # operator's to fix, never a reason to mark submissions FAILED.
        self._eval_config()

    def _eval_config(self):
        from stegobench.eval.config import EvalConfig

        return load_config(EvalConfig, self.cfg.eval_config_path(), self.cfg.eval_overrides)

    def baseline(self, track: str, corpus: Path, base_model: str, revision: str | None, eval_cfg) -> tuple[str, dict]:
        """(key, stored baseline) of the base model and its in-context baseline on this split, computed once."""
        from stegobench.data_gen.generate import read_manifest
        from stegobench.eval.harness import run_eval

        key = sha256_json({"dataset": read_manifest(corpus).content_sha256, "base_model": base_model,
                           "revision": revision or "", "eval": to_dict(eval_cfg)})
        found = self.store.baseline(key)
        if found is not None:
            return key, found
        run_dir = self.cfg.data_path() / "runs" / "baselines" / key[:16]
        log.info("computing the %s baseline for %s on %s", base_model, track, corpus.name)
        run = run_eval(replace(eval_cfg, base=True, in_context=True), corpus, base_model, [], run_dir, overwrite=True)
        summary = {name: summarize_condition(run, name, None if name == "base" else (run_dir, "base"),
                                             eval_cfg.bootstrap_resamples, eval_cfg.seed)
                   for name in ("base", "in_context")}
        return key, self.store.put_baseline(key, track, base_model, str(run_dir), summary)

    def _setup(self, job: Job) -> tuple[Path, Any, str, dict, str | None]:
        """What the evaluator brings to a job: the track's corpus, its eval config, the base model's baseline and
        the stored artifact. Any failure here is the evaluator's fault, raised as EvaluatorFault."""
        try:
            with span(Work.WORKER_SETUP, what="track corpus, eval config"):
                corpus = prepare_track(self.cfg, job.track)
                eval_cfg = self._eval_config()
        except Exception as exc:  # whatever it is, the submission did not cause it
            raise EvaluatorFault(f"track {job.track!r} cannot be set up on this worker: {type(exc).__name__}: {exc}") \
                from exc
        try:
            key, base = self.baseline(job.track, corpus, job.base_model, job.revision, eval_cfg)
        except OperationalError:
            raise
        except Exception as exc:  # one base model's baseline: the other jobs of the track may run
            raise EvaluatorFault(f"the baseline of {job.base_model} on track {job.track!r} cannot be computed: "
                                 f"{type(exc).__name__}: {exc}", job_id=job.id) from exc
        folder = None
        if job.artifact_sha256:
            path = artifact_folder(self.cfg.data_path(), job.artifact_sha256)
            if not path.is_dir() or not any(path.iterdir()):
                raise EvaluatorFault(f"the stored files of submission #{job.id} are missing from {path} (was the "
                                     "data directory moved or cleaned?)", job_id=job.id)
            folder = str(path)
        return corpus, eval_cfg, key, base, folder

    def _fault(self, job: Job, exc: EvaluatorFault | OperationalError) -> None:
        """Give the job back uncounted and leave its track (or the job alone) for FAULT_BACKOFF_SECONDS."""
        self.faults += 1
        until = time.time() + FAULT_BACKOFF_SECONDS
        if isinstance(exc, EvaluatorFault) and exc.job_id is not None:
            self.faulty_jobs[exc.job_id] = until
            left_alone = f"job {job.id}"
        else:
            self.faulty_tracks[job.track] = until
            left_alone = f"track {job.track!r}"
        message = str(exc) if isinstance(exc, EvaluatorFault) else f"database error: {exc}"
        for wait in (0.5, 1, 2, 4, 8):  # the fault may be the database itself, still locked
            try:
                self.store.release(job, f"evaluator: {message}")
                break
            except OperationalError:
                time.sleep(wait)
        else:
            log.error("job %s could not be given back (the database stays unavailable): it returns to PENDING once "
                      "its heartbeat is %.0f s old, and that counts as an attempt", job.id,
                      self.cfg.heartbeat_timeout_seconds)
        log.error("job %s left PENDING, not failed: the evaluator's fault, for the operator to fix: %s (this "
                  "worker leaves %s alone for %.0f s)", job.id, message,
                  left_alone, FAULT_BACKOFF_SECONDS)

    def _claimable(self) -> tuple[list[str], list[int]]:
        now = time.time()
        self.faulty_tracks = {t: u for t, u in self.faulty_tracks.items() if u > now}
        self.faulty_jobs = {j: u for j, u in self.faulty_jobs.items() if u > now}
        return [t for t in self.cfg.tracks if t not in self.faulty_tracks], list(self.faulty_jobs)

    def evaluate(self, job: Job) -> tuple[str, str, dict[str, Any]]:
        """Run the harness for one job; returns (run folder, baseline key, leaderboard summary)."""
        from stegobench.eval.harness import run_eval

        corpus, eval_cfg, key, base, folder = self._setup(job)
        run_dir = self.cfg.data_path() / "runs" / "submissions" / str(job.id) / f"attempt-{job.attempts}"
        if job.kind == "adapter":
            # Named after the submission: its artifact folder is a 64-hex digest, which said nothing in plots.
            run = run_eval(replace(eval_cfg, base=False, in_context=False), corpus, job.base_model, [folder],
                           run_dir, overwrite=True, names=[f"submission-{job.id}"])
            condition = run.adapter_conditions()[0][0]
        else:  # a merged model (judged by its base model) or a base model itself
            model = folder if job.kind == "merged" else job.base_model
            run = run_eval(replace(eval_cfg, base=True, in_context=False), corpus, model, [], run_dir,
                           overwrite=True, judge_model=job.base_model if job.kind == "merged" else None)
            condition = "base"
        summary = summarize_condition(run, condition, (base["run_dir"], "base"),
                                      eval_cfg.bootstrap_resamples, eval_cfg.seed)
        with span(Work.FILE_IO, what="plots beside the baseline"):
            plots_beside_baseline(run_dir, base["run_dir"])
        summary["private_split"] = self.cfg.tracks[job.track].is_private
        summary["environment"] = run.environment  # the worker's machine, versions and device defaults
        return str(run_dir), key, summary

    def run_one(self) -> Job | None:
        """Requeue dead workers' jobs, then claim and run one job. None when the queue is empty."""
        for sid in self.store.requeue_stale(self.cfg.heartbeat_timeout_seconds, self.cfg.max_attempts):
            log.warning("job %s lost its worker (no heartbeat for %.0f s)", sid, self.cfg.heartbeat_timeout_seconds)
        tracks, skip_ids = self._claimable()
        if not tracks:
            return None
        job = self.store.claim(self.name, tracks, skip_ids)
        if job is None:
            return None
        log.info("worker %s: job %s (attempt %d, track %s, %s on %s)", self.name, job.id, job.attempts, job.track,
                 job.kind, job.base_model)
        fault: EvaluatorFault | OperationalError | None = None
        stopped = False
        with Heartbeat(self.store, job, self.cfg.heartbeat_seconds) as hb:
            try:
                run_dir, key, summary = self.evaluate(job)
            except KeyboardInterrupt:
                stopped = True  # given back below, once the heartbeat has stopped
            except (EvaluatorFault, OperationalError) as exc:
                fault = exc  # given back once the heartbeat has stopped: a beat after it would read as "taken away"
            except UserError as exc:
                # Deterministic: the same submission would fail the same way again.
                status = self.store.fail(job, f"{type(exc).__name__}: {exc}", self.cfg.max_attempts, final=True)
                log.error("job %s failed (%s): %s", job.id, status, exc)
                return job
            except Exception as exc:  # noqa: BLE001 - anything else may be transient: retry up to max_attempts
                log.error("job %s failed:\n%s", job.id, traceback.format_exc())
                status = self.store.fail(job, f"{type(exc).__name__}: {exc}", self.cfg.max_attempts)
                log.error("job %s is now %s", job.id, status)
                return job
        if stopped:
            # Ctrl-C: the job goes back PENDING at once, its attempt uncounted (it would wait out its heartbeat)
            self.store.release(job, "evaluator: the worker was stopped (Ctrl-C) during the job")
            log.warning("job %s given back PENDING: the worker was stopped", job.id)
            raise KeyboardInterrupt
        if fault is not None:
            self._fault(job, fault)
            return job
        if hb.lost or not self.store.finish(job, run_dir, key, summary):
            log.warning("job %s: result discarded (the job was requeued while this worker ran it)", job.id)
        else:
            log.info("job %s finished: score %s", job.id, summary["score"])
        return job

    def held_jobs(self) -> list[HeldJob]:
        """RUNNING jobs of other workers, with how long until each is taken back if its worker is dead: `--once`
        run right after a worker was killed finds an empty queue while that worker's job waits out its timeout."""
        now, timeout = time.time(), self.cfg.heartbeat_timeout_seconds
        return [HeldJob(r["id"], r["worker"] or "?", now - (r["heartbeat_at"] or now),
                        max(0.0, timeout - (now - (r["heartbeat_at"] or now))))
                for r in self.store.running() if r["worker"] != self.name]

    def unknown_tracks(self) -> dict[str, int]:
        """{track: PENDING jobs} for tracks this worker's config does not define. Such a job is the operator's to
        route (to a worker configured with its track), never this worker's to fail: it is left PENDING."""
        return {t: n for t, n in self.store.pending_tracks().items() if t not in self.cfg.tracks}

    def _warn_unknown_tracks(self, last: dict[str, int]) -> dict[str, int]:
        unknown = self.unknown_tracks()
        if unknown and unknown != last:  # once per change, not once per poll
            log.warning("%d PENDING job(s) are for track(s) this worker's config does not define: %s; its tracks: "
                        "%s. They wait for a worker whose config defines them.", sum(unknown.values()),
                        ", ".join(f"{t!r} ({n})" for t, n in sorted(unknown.items())), ", ".join(self.cfg.tracks))
        return unknown

    def run(self, once: bool = False, max_jobs: int | None = None) -> int:
        """Work until stopped (or, with `once`, until the queue is empty). Returns the number of jobs run."""
        done = 0
        warned: dict[str, int] = {}
        while max_jobs is None or done < max_jobs:
            faults = self.faults
            job = self.run_one()
            if job is None:
                warned = self._warn_unknown_tracks(warned)
                if once:
                    self.held = self.held_jobs()
                    for held in self.held:
                        log.warning("%s", held.describe(self.cfg.heartbeat_timeout_seconds))
                    break
                time.sleep(self.cfg.poll_seconds)
                continue
            done += self.faults == faults  # a job given back for the evaluator's fault was not run
        return done
