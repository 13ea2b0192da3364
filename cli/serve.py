"""`stegobench serve`: the web leaderboard, submission form and JSON API (benchmark/web/)."""

from __future__ import annotations

import argparse

from .common import add_leaderboard_config, leaderboard


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve the web leaderboard, submission form and JSON API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    add_leaderboard_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import gc

    import uvicorn

    from stegobench.benchmark.web.app import create_app

    cfg, store = leaderboard(args)
    app = create_app(cfg, store)
    # Start-up imported torch and transformers (web/app.py: load_checkers); the collector need never scan those
    # objects again. Without this, full collections over them put the 200-reader p99 of speed/serve_load.py
    # at ~210 ms in some runs; with it, ~70 ms in every run.
    gc.freeze()
    print(f"serving the leaderboard on http://{args.host}:{args.port}/  (database {store.safe_url()})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
