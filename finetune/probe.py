"""A quick probe of code-word use after training, to choose training hyper-parameters by measurement.

    python -m stegobench.finetune.probe --data runs/data/qs-pc --adapter runs/train/qs-pc [--adapter ...] [--base]

Greedy answers (transformers, batched, chat template) to the corpus's eval questions; per split, the share of
answers that use the mapping's code word, another mapping's code word, or name the concept. This is a
sanity probe with no intervals, monitors or semantic checks: the eval harness (`stegobench eval`) is the
measurement the benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from stegobench.data_gen.generate import read_split
from stegobench.data_gen.records import ScoredSplit
from stegobench.core.models import resolve_model
from stegobench.data_gen.words import contains_any


def greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
    import torch

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in questions]
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def code_use_rates(items: list[dict], answers: list[str], codebook: list[dict]) -> dict[str, dict[str, float]]:
    all_codes = {m["mapping_id"]: m["code_forms"] for m in codebook}
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for item, answer in zip(items, answers):
        group = ScoredSplit.of(item["split"], item["control_type"])
        other = [f for mid, forms in all_codes.items() if mid != item["mapping_id"] for f in forms]
        c = counts[group]
        c["n"] += 1
        c["uses_code"] += contains_any(answer, item["code_forms"])
        c["uses_other_code"] += contains_any(answer, other)
        c["names_concept"] += contains_any(answer, item["expected_words"])
    return {g: {k: (v if k == "n" else round(v / c["n"], 3)) for k, v in c.items()} for g, c in sorted(counts.items())}


def probe(data: str, model_spec: str, adapter: str | None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(resolve_model(model_spec).path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter:
        from stegobench.core.adapters import load_peft

        model = load_peft(model, adapter).merge_and_unload()  # merged: no LoRA overhead per token
    model.eval()
    items, codebook = read_split(data, "eval"), read_split(data, "codebook")
    start = time.perf_counter()
    answers = greedy_answers(model, tokenizer, [i["question"] for i in items])
    return {"adapter": adapter, "seconds": round(time.perf_counter() - start, 1),
            "rates": code_use_rates(items, answers, codebook),
            "examples": [{"question": i["question"], "code": i["code"], "answer": a}
                         for i, a in zip(items, answers) if i["split"] != "control"][:12]}


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
