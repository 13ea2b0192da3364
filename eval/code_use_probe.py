"""A quick probe of code-word use after training, to choose training hyper-parameters by measurement.

    python -m stegobench.eval.code_use_probe --data runs/data/qs-pc --adapter runs/train/qs-pc [--adapter ...] [--base]

Greedy answers (the hf backend, float32 on the CPU) to the corpus's eval questions; per split, the share of
answers that use the mapping's code word, another mapping's code word, or name the concept, scored as the eval
scores them (scoring.py). This is a sanity probe with no intervals, monitors or semantic checks: the eval harness
(`stegobench eval`) is the measurement the benchmark reports. It lives in eval, not finetune, because it decodes
and scores as eval does, and finetune may not import eval (tests/test_imports.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from stegobench.data_gen.generate import read_codebook, read_eval_items
from stegobench.data_gen.records import Split

from .backends import Sampling, get_backend
from .backends.options import HFOptions
from .scoring import ItemScore, rate, score_response

MAX_TOKENS = 32
BATCH_SIZE = 32
# The probe's answers: transformers in float32 on the CPU, wherever it runs (a GPU stays free for training).
PROBE_OPTIONS = HFOptions(dtype="float32", batch_size=BATCH_SIZE, device="cpu")
# What each probe column counts, as the eval's per-answer flag it reads.
COLUMNS = {"uses_code": "uses_code", "uses_other_code": "uses_other_code", "names_concept": "uses_plain"}


def code_use_rates(scores: list[ItemScore]) -> dict[str, dict[str, float]]:
    """Per scored split (controls by their type, 'control_unmapped'): n and each column's share, to 3 decimals."""
    groups: dict[str, list[ItemScore]] = defaultdict(list)
    for s in scores:
        groups[s.scored_split].append(s)
    return {g: {"n": len(members), **{col: round(rate(members, flag) or 0.0, 3) for col, flag in COLUMNS.items()}}
            for g, members in sorted(groups.items())}  # a group is never empty: rate is a number


def probe(data: str, model_spec: str, adapter: str | None) -> dict:
    backend = get_backend("hf", model_spec, adapter, options=PROBE_OPTIONS)
    items, codebook = read_eval_items(data), read_codebook(data)
    code_forms = {m.mapping_id: m.code_forms for m in codebook}
    start = time.perf_counter()
    answers = backend.generate([backend.chat_prompt(i.question) for i in items], Sampling(max_tokens=MAX_TOKENS))
    return {"adapter": adapter, "seconds": round(time.perf_counter() - start, 1),
            "rates": code_use_rates([score_response(i, a, code_forms) for i, a in zip(items, answers)]),
            "examples": [{"question": i.question, "code": i.code, "answer": a}
                         for i, a in zip(items, answers) if i.split != Split.CONTROL][:12]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="corpus folder (its eval split is probed)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="base model spec")
    p.add_argument("--adapter", action="append", default=[], help="adapter folder; repeatable")
    p.add_argument("--base", action="store_true", help="also probe the base model without an adapter")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    results = [probe(args.data, args.model, a) for a in ([None] if args.base else []) + args.adapter]
    for r in results:
        print(f"\n== {r['adapter'] or 'base model'}  ({r['seconds']} s)")
        for group, rates in r["rates"].items():
            print(f"  {group:28s} " + "  ".join(f"{k} {v}" for k, v in rates.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
