"""Bounded load test of the leaderboard web app on this machine's loopback: every read page's latency under a
defined client, and the throughput with no wait.

    .venv/bin/python speed/serve_load.py                 # ~1-2 minutes: populate, paced readers, no-wait burst
    .venv/bin/python speed/serve_load.py --duration 20 --burst-requests 4000

The client (issue 25), in its own process, never this one or the server's:
- paced: `--readers` (200) concurrent readers, each waiting `--think` (1 s) after every answer before its next
  request (about 200 requests/s offered), for `--duration` seconds; readers start spread over the first think
  time. Reported per page: p50 and p99 latency, against `--p99-ms` (200 ms).
- no wait: `--readers` connections sending `--burst-requests` requests back to back: the throughput ceiling.
The evaluator holds `--entries` finished mock submissions and `--queued` (3,000) refused ones, so the queue pages
read a long table. The server is `stegobench serve` in a subprocess; client, server and this script share the
machine's cores, so the figures are for this machine as loaded. Every loop is bounded in count and time;
requests go to the loopback address only (a base URL elsewhere is refused).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Every read page, HTML and JSON; /submission/1 and /api/submissions/1 are a finished entry.
PATHS = ("/track/quickstart", "/api/leaderboard/quickstart", "/queue", "/api/queue", "/submission/1",
         "/api/submissions/1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_only(base: str) -> str:
    host = urlsplit(base).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"serve_load: {base!r} is not a loopback address; this script loads this machine only")
    return base.rstrip("/")


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
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# -- the client (run in its own process: `--client MODE`) ---------------------------------------------------------

async def _run_client(base: str, mode: str, readers: int, think: float, duration: float, burst: int,
                      deadline: float) -> dict:
    import aiohttp

    by_path: dict[str, list[float]] = {p: [] for p in PATHS}
    timeline: list[tuple[float, float, str]] = []  # (seconds into the run, latency, page): where slow ones fall
    errors = 0
    connector = aiohttp.TCPConnector(limit=readers)
    stop_at = time.perf_counter() + (duration if mode == "paced" else deadline)
    counter = iter(range(burst))
    start = time.perf_counter()

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def get(path: str) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.get(base + path) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            by_path[path].append(time.perf_counter() - t0)
            timeline.append((t0 - start, by_path[path][-1], path))
            errors += not ok

        async def paced(i: int) -> None:
            await asyncio.sleep(random.Random(i).uniform(0, think))  # readers arrive spread over one think time
            for n in range(int(duration / think) + 2):  # bounded in count as well as time
                if time.perf_counter() > stop_at:
                    return
                await get(PATHS[(i + n) % len(PATHS)])
                await asyncio.sleep(think)

        async def no_wait(i: int) -> None:
            for n in counter:
                if time.perf_counter() > stop_at:
                    return
                await get(PATHS[(i + n) % len(PATHS)])

        start = time.perf_counter()
        await asyncio.gather(*((paced if mode == "paced" else no_wait)(i) for i in range(readers)))
        wall = time.perf_counter() - start
    pooled = [v for vs in by_path.values() for v in vs]
    return {"mode": mode, "readers": readers, "think_s": think if mode == "paced" else 0.0,
            "requests": len(pooled), "errors": errors, "seconds": round(wall, 2),
            "req_per_s": round(len(pooled) / wall, 1), "p50_ms": round(1000 * _pct(pooled, 0.50), 1),
            "p99_ms": round(1000 * _pct(pooled, 0.99), 1), "mean_ms": round(1000 * statistics.mean(pooled), 1),
            # The target is per page: a fast JSON route must not hide a slow HTML one in the pooled figure.
            "p50_ms_by_path": {p: round(1000 * _pct(v, 0.50), 1) for p, v in by_path.items() if v},
            "p99_ms_by_path": {p: round(1000 * _pct(v, 0.99), 1) for p, v in by_path.items() if v},
            "slowest": [(round(t, 2), round(1000 * v, 1), p) for t, v, p in sorted(timeline, key=lambda x: -x[1])[:20]]}


def _client_process(base: str, mode: str, args: argparse.Namespace) -> dict:
    """Run one client in a fresh process (this script with --client) and read its JSON answer."""
    cmd = [sys.executable, __file__, "--client", mode, "--base", base, "--readers", str(args.readers), "--think",
           str(args.think), "--duration", str(args.duration), "--burst-requests", str(args.burst_requests),
           "--deadline", str(args.deadline)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.deadline + 60)
    if out.returncode != 0:
        raise SystemExit(f"serve_load: the {mode} client failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print(r: dict) -> None:
    by_path = "  ".join(f"{p} {v}" for p, v in r["p99_ms_by_path"].items())
    print(f"{r['mode']:>8} {r['readers']:>8} {r['think_s']:>6} {r['requests']:>9} {r['errors']:>7} {r['req_per_s']:>8} "
          f"{r['p50_ms']:>8} {r['p99_ms']:>8}  {by_path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readers", type=int, default=200, help="concurrent readers (and connections)")
    ap.add_argument("--think", type=float, default=1.0, help="seconds each paced reader waits between requests")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of paced reading")
    ap.add_argument("--burst-requests", type=int, default=6000, help="requests of the no-wait run")
    ap.add_argument("--deadline", type=float, default=60.0, help="seconds at most for the no-wait run")
    ap.add_argument("--entries", type=int, default=20, help="mock submissions (5 policies: 5 distinct finish)")
    ap.add_argument("--queued", type=int, default=3000, help="refused submissions filling the queue")
    ap.add_argument("--p99-ms", type=float, default=200.0, help="latency a reader tolerates, per page")
    ap.add_argument("--out", default=str(REPO / "runs/bench/serve_load.json"))
    ap.add_argument("--client", choices=["paced", "nowait"], help=argparse.SUPPRESS)  # the client process
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        result = asyncio.run(_run_client(_loopback_only(args.base), args.client, args.readers, args.think,
                                         args.duration, args.burst_requests, args.deadline))
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="stegobench-load-"))
    config = work / "lb.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(work / "data"), "tracks": {"quickstart": {"data_config": "configs/data/quickstart.yaml"}},
        "base_models": ["mock:perfect_covert", "mock:always_code", "mock:never_code", "mock:leaky", "mock:random_role"],
        "eval_overrides": ["backend=mock", "bootstrap_resamples=200"]}))
    print(f"populating {args.entries} mock entries and {args.queued} queued ...", flush=True)
    _populate(config, args.entries, args.queued)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "stegobench.cli", "serve", "--config", str(config),
                               "--port", str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))})
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
        print(f"{'client':>8} {'readers':>8} {'wait s':>6} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} "
              f"{'p99 ms':>8}  p99 ms by page")
        paced = _client_process(base, "paced", args)
        _print(paced)
        burst = _client_process(base, "nowait", args)
        _print(burst)
    finally:
        server.terminate()
        server.wait(timeout=10)
    worst = max(paced["p99_ms_by_path"].values())
    summary = {"paced": paced, "nowait": burst, "paths": PATHS, "entries": args.entries, "queued": args.queued,
               "cpus": os.cpu_count(), "target_p99_ms": args.p99_ms,
               "every_page_under_target": paced["errors"] == 0 and worst <= args.p99_ms}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"\n{args.readers} paced readers ({args.think:g} s between requests): worst page p99 {worst:.0f} ms "
          f"({'meets' if summary['every_page_under_target'] else 'MISSES'} {args.p99_ms:.0f} ms), "
          f"{paced['errors']} errors; no wait: {burst['req_per_s']:.0f} req/s at {args.readers} connections; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
