"""Decode speed of every evaluation path on the same prompts, side by side in one run.

    .venv/bin/python benchmarks/decode_speed.py [--model smollm2-135m-instruct] [--prompts 96] [--tokens 32]

Paths: transformers one prompt at a time (naive), transformers batched, vLLM base model, vLLM with an adapter
served as LoRA, vLLM with the adapter merged before serving. Every answer is forced to exactly --tokens new
tokens so the rates compare like with like. The adapter is a rank-16 LoRA with random B matrices (speed does not
depend on its values). The ceiling is the measured float32 matmul rate divided by ~2 x parameters FLOPs per token.
Writes runs/bench/decode_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def matmul_gflops(seconds: float = 3.0) -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - start) / 1e9


def random_adapter(model_path: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.config import ALL_PROJECTIONS

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(ALL_PROJECTIONS), task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    peft.save_pretrained(str(out))
    return out


def timed(label: str, fn, n_prompts: int, tokens: int, rows: list) -> None:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    rows.append({"path": label, "seconds": round(seconds, 2), "new_tokens": n_prompts * tokens,
                 "tokens_per_second": round(n_prompts * tokens / seconds, 1)})
    print(f"{label:28s} {rows[-1]['tokens_per_second']:>8.1f} new tok/s  ({n_prompts} prompts x {tokens}, {seconds:.1f} s)",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=96)
    p.add_argument("--naive-prompts", type=int, default=16, help="prompts for the one-at-a-time path (it is slow)")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--out", default=str(REPO / "runs/bench/decode_speed.json"))
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_gen.config import load_config
    from data_gen.generate import generate
    from data_gen.models import resolve_model
    from data_gen.provenance import atomic_write_json, environment
    from data_gen.track import TrackConfig

    work = Path(tempfile.mkdtemp(prefix="stegobench-decode-"))
    generate(load_config(TrackConfig, REPO / "configs/data/real-v1.yaml"), work / "data")
    questions = [json.loads(l)["question"] for l in (work / "data/jsonl/eval.jsonl").read_text().splitlines()][: args.prompts]
    ref = resolve_model(args.model)
    tok = AutoTokenizer.from_pretrained(str(ref.path))
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in questions]
    adapter = random_adapter(ref.path, work / "adapter")
    rows: list[dict] = []

    model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32).eval()
    tok.padding_side = "left"

    def hf(batch: list[str]) -> None:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)

    timed("hf, one prompt at a time", lambda: [hf([q]) for q in prompts[: args.naive_prompts]], args.naive_prompts,
          args.tokens, rows)
    timed("hf, batched (32)", lambda: [hf(prompts[i:i + 32]) for i in range(0, len(prompts), 32)], len(prompts),
          args.tokens, rows)
    model = None  # free it before the vLLM engines start

    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        print("vLLM not installed: skipping the vLLM paths")
    else:
        from eval.backends.vllm_backend import merged_model_folder

        sp = SamplingParams(temperature=0, max_tokens=args.tokens, ignore_eos=True)
        for label, serve, lora in [("vllm, base model", ref.path, False), ("vllm, adapter as LoRA", ref.path, True),
                                   ("vllm, adapter merged", None, False)]:
            start = time.perf_counter()
            path = serve if serve is not None else merged_model_folder(ref.path, str(adapter))
            kwargs = dict(enable_lora=True, max_lora_rank=16, max_loras=1) if lora else {}
            llm = LLM(model=str(path), tokenizer=str(ref.path), dtype="float32", gpu_memory_utilization=0.15,
                      max_model_len=1024, seed=0, **kwargs)
            startup = time.perf_counter() - start
            req = LoRARequest("a", 1, str(adapter)) if lora else None
            timed(label, lambda: llm.generate(prompts, sp, lora_request=req, use_tqdm=False), len(prompts), args.tokens, rows)
            rows[-1]["engine_start_seconds"] = round(startup, 1)
            del llm
            import gc

            gc.collect()

    gflops = matmul_gflops()
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(ref.path)).parameters())
    ceiling = gflops * 1e9 / (2 * params)
    print(f"\nfloat32 matmul {gflops:.0f} GFLOP/s -> decode ceiling ~{ceiling:.0f} tok/s for {params / 1e6:.0f}M parameters")
    by = {r["path"]: r["tokens_per_second"] for r in rows}
    best = max(by.values())
    print(f"best path {best:.0f} tok/s = {best / ceiling:.2f} of the ceiling")
    if "vllm, base model" in by:
        base = by["vllm, base model"]
        print(f"adapter vs base (vLLM): LoRA {by['vllm, adapter as LoRA'] / base:.2f}x, merged {by['vllm, adapter merged'] / base:.2f}x")
    print(f"hf batched vs one at a time: {by['hf, batched (32)'] / by['hf, one prompt at a time']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"rows": rows, "matmul_gflops": round(gflops, 1), "ceiling_tokens_per_second": round(ceiling, 1),
                                 "model": ref.identity, "environment": environment()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
