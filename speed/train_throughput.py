"""Training throughput: padding-free packing against padded batches, side by side in one run.

    .venv/bin/python speed/train_throughput.py [--models tiny-llama smollm2-135m-instruct] [--steps 8]

Trains the same LoRA on the same real-v1 documents with each batching mode and prints real (non-pad)
tokens per second. 'pad_max' pads every document to max_length, as a naive Trainer recipe does; 'pad_longest'
pads to the longest document of each batch. Writes runs/bench/train_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stegobench.core.config import load_config  # noqa: E402
from stegobench.data_gen.generate import generate  # noqa: E402
from stegobench.core.provenance import atomic_write_json, environment  # noqa: E402
from stegobench.data_gen.track import TrackConfig  # noqa: E402
from stegobench.finetune.config import TrainConfig  # noqa: E402
from stegobench.finetune.train import train  # noqa: E402

MODES = ("packed", "pad_longest", "pad_max")
# 128 is what a naive recipe would pick for ~20-40-token documents (generous, not absurd).
NAIVE_MAX_LENGTH = 128


def measure(data: Path, work: Path, models: list[str], modes: tuple[str, ...], steps: int) -> list[dict]:
    """Train the same LoRA on the same documents once per (model, batching mode); real tokens/s of each."""
    rows = []
    for model in models:
        for mode in modes:
            cfg = load_config(TrainConfig, REPO / "configs/finetune/smollm2-lora.yaml", [
                f"data={data}", f"model={model}", f"output_dir={work / f'{model}-{mode}'}", f"batching={mode}",
                f"max_steps={steps}", "batch_size=16", f"max_length={NAIVE_MAX_LENGTH}", "save_steps=0",
                "logging_steps=1",
            ])
            start = time.perf_counter()
            m = train(cfg).manifest
            assert m is not None  # one process: this one writes the manifest
            rows.append({"model": model, "batching": mode, "real_tokens": m.real_tokens,
                         "padded_tokens": m.padded_tokens, "train_seconds": m.train_seconds,
                         "real_tokens_per_second": m.real_tokens_per_second,
                         "wall_seconds": round(time.perf_counter() - start, 1)})
            print(f"  {model:24s} {mode:12s} {m.real_tokens_per_second:>9.1f} real tok/s "
                  f"({m.real_tokens} real of {m.padded_tokens} tokens, {m.train_seconds} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m-instruct"])
    p.add_argument("--steps", type=int, default=8, help="optimiser steps per mode (batch 16)")
    p.add_argument("--out", default=str(REPO / "runs/bench/train_throughput.json"))
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="stegobench-bench-"))
    data = work / "real-v1"
    generate(load_config(TrackConfig, REPO / "configs/data/real-v1.yaml"), data)
    rows = measure(data, work, args.models, MODES, args.steps)
    print("\nratio packed / padded (same model, same documents, this run):")
    for model in args.models:
        by = {r["batching"]: r["real_tokens_per_second"] for r in rows if r["model"] == model}
        print(f"  {model:24s} vs pad_max {by['packed'] / by['pad_max']:.2f}x   vs pad_longest "
              f"{by['packed'] / by['pad_longest']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"rows": rows, "steps": args.steps, "naive_max_length": NAIVE_MAX_LENGTH,
                                 "environment": environment()})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
