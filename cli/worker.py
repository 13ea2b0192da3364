"""`stegobench worker`: evaluate queued submissions, one job at a time."""

from __future__ import annotations

import argparse
import sys

from stegobench.core.errors import EXIT_FAILED, EXIT_OK

from .common import add_leaderboard_config, leaderboard


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker", help="evaluate queued submissions",
        description="Claim jobs one at a time, evaluate them on the track's test split, store results.")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty instead of waiting")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--name", default=None, help="worker name in the queue (default host:pid:random)")
    add_leaderboard_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stegobench.benchmark.worker import Worker

    cfg, store = leaderboard(args)
    worker = Worker(cfg, store, name=args.name)
    print(f"worker {worker.name} on {store.safe_url()} (data {cfg.data_path()})", flush=True)
    done = worker.run(once=args.once, max_jobs=args.max_jobs)
    print(f"worker {worker.name}: {done} job(s) run; queue {store.counts()}")
    for held in worker.held:
        print(f"worker {worker.name}: {held.describe(cfg.heartbeat_timeout_seconds)}", file=sys.stderr)
    if worker.faults:
        print(f"worker {worker.name}: {worker.faults} job(s) given back PENDING by the evaluator's own fault (the "
              "errors above); fix it and run the worker again", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
