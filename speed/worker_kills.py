"""Workers SIGKILLed at random mid-evaluation: does every job still end with exactly one result?

    .venv/bin/python speed/worker_kills.py                            # ~2-4 minutes
    .venv/bin/python speed/worker_kills.py --jobs 30 --workers 3 --kill-every 4

A scratch evaluator (SQLite, the mock backend with a per-call latency so a job lasts seconds) gets `--jobs`
adapter submissions; `--workers` worker processes drain the queue while a killer SIGKILLs one that holds a
RUNNING job every `--kill-every` seconds and starts a replacement. It prints the jobs, kills, jobs FINISHED /
FAILED, jobs lost (not ended by the deadline), results duplicated (a job with more than one result row) and
the attempts a job took, and writes them to runs/bench/worker_kills.json. Every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--kill-every", type=float, default=8.0,
                   help="seconds between kills (a job takes a few seconds, a new worker a few more to start)")
    p.add_argument("--latency", type=float, default=0.5, help="seconds per mock decode call (a job makes several)")
    p.add_argument("--deadline", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from stegobench.benchmark.config import load_leaderboard_config
    from stegobench.benchmark.store import Store, results
    from stegobench.benchmark.submit import SubmissionRequest, submit_folder
    from stegobench.core.config import to_dict
    from stegobench.eval.backends.mock import write_scripted_adapter

    import sqlalchemy as sa

    scratch = Path(tempfile.mkdtemp(prefix="worker-kills-"))
    # A short heartbeat timeout so a killed worker's job is reclaimed within seconds; attempts high enough that
    # the kills themselves (several per job, by chance) do not fail jobs: this measures loss and duplication.
    cfg = load_leaderboard_config(None, [
        f"data_dir={scratch / 'lb'}", "tracks={quickstart: {data_config: configs/data/quickstart.yaml}}",
        "base_models=[mock:never_code]", "heartbeat_seconds=0.5", "heartbeat_timeout_seconds=3",
        "poll_seconds=0.5", "max_attempts=20",
        f"eval_overrides=[backend=mock, bootstrap_resamples=100, 'backend_options={{latency_s: {args.latency}}}']"])
    config = scratch / "lb.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    store = Store(cfg.db_url())
    ids = []
    for i in range(args.jobs):
        out = submit_folder(cfg, store, SubmissionRequest(display_name=f"a{i}", submitter="kills", track="quickstart",
                                                          base_model="mock:never_code"),
                            adapter=str(write_scripted_adapter(scratch / "adapters" / f"a{i}", args.seed * 10_000 + i)))
        assert out.status == "PENDING", out.reason
        ids.append(out.id)

    env = {**os.environ, "STEGOBENCH_NO_PRELOAD": "1"}
    n_started = 0

    def start() -> tuple[str, subprocess.Popen]:
        nonlocal n_started
        n_started += 1
        name = f"w{n_started}"
        return name, subprocess.Popen([sys.executable, "-m", "stegobench.cli", "worker", "--config",
                                       str(config), "--name", name], cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    rng = random.Random(args.seed)
    workers = dict(start() for _ in range(args.workers))
    kills, t0 = 0, time.time()
    next_kill = t0 + args.kill_every

    def ended() -> int:
        return sum(store.get(i)["status"] in ("FINISHED", "FAILED") for i in ids)

    shown = None
    try:
        while time.time() - t0 < args.deadline:
            done = ended()
            if (done, kills) != shown:  # one line per change: readable in a log as in a terminal
                print(f"{time.time() - t0:6.0f} s  jobs ended {done}/{len(ids)}  kills {kills}", flush=True)
                shown = (done, kills)
            if done == len(ids):
                break
            if time.time() >= next_kill:
                holding = {store.get(i)["worker"] for i in ids if store.get(i)["status"] == "RUNNING"}
                victims = sorted(n for n in workers if n in holding)
                if victims:
                    name = rng.choice(victims)
                    workers.pop(name).send_signal(signal.SIGKILL)
                    kills += 1
                    workers.update([start()])
                next_kill = time.time() + args.kill_every
            time.sleep(0.25)
    finally:
        for proc in workers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    subs = [store.get(i) for i in ids]
    with store.engine.connect() as conn:
        per_job = Counter(r.submission_id for r in conn.execute(sa.select(results.c.submission_id)).all())
    status = Counter(s["status"] for s in subs)
    figures = {
        "jobs": len(ids), "workers": args.workers, "kills": kills, "seconds": round(time.time() - t0, 1),
        "finished": status.get("FINISHED", 0), "failed": status.get("FAILED", 0),
        "lost": len(ids) - status.get("FINISHED", 0) - status.get("FAILED", 0),
        "duplicated": sum(n - 1 for n in per_job.values() if n > 1),
        "finished_without_result": sum(1 for s in subs if s["status"] == "FINISHED" and per_job.get(s["id"], 0) != 1),
        "attempts": dict(sorted(Counter(s["attempts"] for s in subs).items())),
    }
    for key, value in figures.items():
        print(f"{key:>24}  {value}")
    out = REPO / "runs" / "bench" / "worker_kills.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"wrote {out}")
    ok = figures["lost"] == figures["duplicated"] == figures["finished_without_result"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
