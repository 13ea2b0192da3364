"""Bounded load test of the leaderboard web app on 127.0.0.1: latency percentiles at rising reader concurrency.

    .venv/bin/python speed/serve_load.py                       # ~1-2 minutes
    .venv/bin/python speed/serve_load.py --levels 1 16 64 --requests 600

Fills a scratch evaluator with finished mock submissions (the worker runs them) and `--queued` refused ones (a
long queue), starts `stegobench serve` as a subprocess, reads every page once, and at each concurrency level
sends a fixed number of GET requests (leaderboard page, JSON API, queue page, a detail page) from that many
concurrent clients; p99 is reported per page. Every loop is bounded in count and time; traffic goes to
127.0.0.1 only. The client shares the machine's 2 cores with the server, so the figures are a floor. The default
client is aiohttp: httpx's connection pool itself tops out near 180 req/s at 200 connections on these 2 cores
(p99 over 6 s against a server that only returns a constant), so it measures the client (`--client httpx`).
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
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PATHS = ("/track/quickstart", "/api/leaderboard/quickstart", "/queue", "/submission/1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _populate(config: Path, n: int, queued: int) -> None:
    from stegobench.benchmark.config import load_leaderboard_config
    from stegobench.benchmark.store import Store, submissions
    from stegobench.benchmark.submit import SubmissionRequest, submit_folder
    from stegobench.benchmark.worker import Worker

    cfg = load_leaderboard_config(config)
    store = Store(cfg.db_url())
    policies = ["mock:perfect_covert", "mock:always_code", "mock:never_code", "mock:leaky", "mock:random_role"]
    for i in range(n):
        submit_folder(cfg, store, SubmissionRequest(display_name=f"entry {i}", submitter="load", track="quickstart",
                                                    base_model=policies[i % len(policies)], revision=f"r{i}"))
    Worker(cfg, store, name="populate").run(once=True)
    row = dict(display_name="queued", submitter="load", track="quickstart", base_model="mock:never_code",
               revision=None, kind="base", artifact_sha256=None, size_bytes=0, notes="", token_id=None,
               status="REJECTED", reason="filler", attempts=0, errors="[]")
    with store.engine.begin() as conn:
        conn.execute(submissions.insert(), [{**row, "created_at": time.time()} for _ in range(queued)])


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@asynccontextmanager
async def _client(kind: str, concurrency: int):
    """`get(url) -> status` over `concurrency` kept-alive connections."""
    if kind == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            async def get(url: str) -> int:
                try:
                    async with session.get(url) as r:
                        await r.read()
                        return r.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return 0

            yield get
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            async def get(url: str) -> int:
                try:
                    return (await http.get(url)).status_code
                except httpx.HTTPError:
                    return 0

            yield get


async def _level(base: str, concurrency: int, total: int, deadline_s: float, kind: str) -> dict:
    latencies: list[float] = []
    by_path: dict[str, list[float]] = {path: [] for path in PATHS}
    errors = 0
    counter = iter(range(total))
    stop_at = time.perf_counter() + deadline_s

    async def client(get) -> None:
        nonlocal errors
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            ok = await get(base + PATHS[i % len(PATHS)]) == 200
            latencies.append(time.perf_counter() - t0)
            by_path[PATHS[i % len(PATHS)]].append(latencies[-1])
            errors += not ok

    async with _client(kind, concurrency) as get:
        start = time.perf_counter()
        await asyncio.gather(*(client(get) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "req_per_s": round(len(latencies) / wall, 1), "p50_ms": round(1000 * _pct(latencies, 0.50), 1),
            "p99_ms": round(1000 * _pct(latencies, 0.99), 1), "mean_ms": round(1000 * statistics.mean(latencies), 1),
            # The target is per page: a fast JSON route must not hide a slow HTML one in the pooled figure.
            "p99_ms_by_path": {p: round(1000 * _pct(v, 0.99), 1) for p, v in by_path.items() if v}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64, 200], help="concurrent clients per level")
    ap.add_argument("--requests", type=int, default=2000, help="requests per level")
    ap.add_argument("--entries", type=int, default=20, help="mock submissions (5 policies: 5 distinct finish)")
    ap.add_argument("--queued", type=int, default=5000, help="refused submissions filling the queue")
    ap.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp", help="HTTP client library")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds at most per level")
    ap.add_argument("--p99-ms", type=float, default=200.0, help="latency a reader tolerates, for the summary line")
    ap.add_argument("--out", default=str(REPO / "runs/bench/serve_load.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stegobench-load-"))
    config = work / "lb.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(work / "data"), "tracks": {"quickstart": {"data_config": "configs/data/quickstart.yaml"}},
        "base_models": ["mock:perfect_covert", "mock:always_code", "mock:never_code", "mock:leaky", "mock:random_role"],
        "eval_overrides": ["backend=mock", "bootstrap_resamples=200"]}))
    print(f"populating {args.entries} mock entries and {args.queued} queued ...", flush=True)
    _populate(config, args.entries, args.queued)
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
        for path in PATHS:  # first reads import and render; a reader's steady state is what is measured
            httpx.get(base + path, timeout=30)
        rows = []
        print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  p99 ms by path")
        for level in args.levels:
            r = asyncio.run(_level(base, level, args.requests, args.deadline, args.client))
            rows.append(r)
            by_path = "  ".join(f"{p} {v}" for p, v in r["p99_ms_by_path"].items())
            print(f"{r['concurrency']:>8} {r['requests']:>9} {r['errors']:>7} {r['req_per_s']:>8} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8}  {by_path}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    held = [r["concurrency"] for r in rows
            if r["errors"] == 0 and max(r["p99_ms_by_path"].values(), default=r["p99_ms"]) <= args.p99_ms]
    summary = {"levels": rows, "paths": PATHS, "entries": args.entries, "queued": args.queued, "client": args.client,
               "max_clients_without_errors_and_p99_under": {"p99_ms": args.p99_ms, "clients": max(held) if held else 0}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"\nheld {summary['max_clients_without_errors_and_p99_under']['clients']} concurrent readers with no errors "
          f"and every path's p99 <= {args.p99_ms:.0f} ms; wrote {args.out}")


if __name__ == "__main__":
    main()
