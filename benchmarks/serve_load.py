"""Bounded load test of the leaderboard web app on 127.0.0.1: latency percentiles at rising reader concurrency.

    .venv/bin/python benchmarks/serve_load.py                       # ~1-2 minutes
    .venv/bin/python benchmarks/serve_load.py --levels 1 16 64 --requests 600

Fills a scratch evaluator with finished mock submissions (the worker runs them), starts `stegobench serve` as a
subprocess, and at each concurrency level sends a fixed number of GET requests (leaderboard page, JSON API, queue
page, a detail page) from that many concurrent clients. Every loop is bounded in count and time; traffic goes to
127.0.0.1 only. The client shares the machine's 2 cores with the server, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PATHS = ("/track/quickstart", "/api/leaderboard/quickstart", "/queue", "/submission/1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _populate(config: Path, n: int) -> None:
    from stegobench.benchmark.config import load_leaderboard_config
    from stegobench.benchmark.store import Store
    from stegobench.benchmark.submit import SubmissionRequest, submit_folder
    from stegobench.benchmark.worker import Worker

    cfg = load_leaderboard_config(config)
    store = Store(cfg.db_url())
    policies = ["mock:perfect_covert", "mock:always_code", "mock:never_code", "mock:leaky", "mock:random_role"]
    for i in range(n):
        submit_folder(cfg, store, SubmissionRequest(display_name=f"entry {i}", submitter="load", track="quickstart",
                                                    base_model=policies[i % len(policies)], revision=f"r{i}"))
    Worker(cfg, store, name="populate").run(once=True)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _level(base: str, concurrency: int, total: int, deadline_s: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    stop_at = time.perf_counter() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                r = await http.get(base + PATHS[i % len(PATHS)])
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "req_per_s": round(len(latencies) / wall, 1), "p50_ms": round(1000 * _pct(latencies, 0.50), 1),
            "p99_ms": round(1000 * _pct(latencies, 0.99), 1), "mean_ms": round(1000 * statistics.mean(latencies), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64, 128], help="concurrent clients per level")
    ap.add_argument("--requests", type=int, default=400, help="requests per level")
    ap.add_argument("--entries", type=int, default=20, help="finished submissions on the leaderboard")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds at most per level")
    ap.add_argument("--p99-ms", type=float, default=1000.0, help="latency a reader tolerates, for the summary line")
    ap.add_argument("--out", default=str(REPO / "runs/bench/serve_load.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stegobench-load-"))
    config = work / "lb.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(work / "data"), "tracks": {"quickstart": {"data_config": "configs/data/quickstart.yaml"}},
        "base_models": ["mock:perfect_covert", "mock:always_code", "mock:never_code", "mock:leaky", "mock:random_role"],
        "eval_overrides": ["backend=mock", "bootstrap_resamples=200"]}))
    print(f"populating {args.entries} finished entries ...", flush=True)
    _populate(config, args.entries)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "stegobench.benchmark.cli", "serve", "--config", str(config), "--port",
                               str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(240):
            try:
                httpx.get(base + "/queue", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.25)
        rows = []
        print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for level in args.levels:
            r = asyncio.run(_level(base, level, args.requests, args.deadline))
            rows.append(r)
            print(f"{r['concurrency']:>8} {r['requests']:>9} {r['errors']:>7} {r['req_per_s']:>8} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    held = [r["concurrency"] for r in rows if r["errors"] == 0 and r["p99_ms"] <= args.p99_ms]
    summary = {"levels": rows, "paths": PATHS, "entries": args.entries,
               "max_clients_without_errors_and_p99_under": {"p99_ms": args.p99_ms, "clients": max(held) if held else 0}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"\nheld {summary['max_clients_without_errors_and_p99_under']['clients']} concurrent readers with no errors "
          f"and p99 <= {args.p99_ms:.0f} ms; wrote {args.out}")


if __name__ == "__main__":
    main()
