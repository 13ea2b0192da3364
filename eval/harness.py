"""Evaluate a base model, its in-context baseline and adapters side by side on a corpus's eval split.

    stegobench eval --config configs/eval/default.yaml --data runs/data/quickstart --model smollm2-135m-instruct \
        --adapter runs/quickstart/adapter --out runs/eval/quickstart

The run folder explains itself: samples.jsonl (every prompt, response and score, by condition), results.json
(schema version, status, config, dataset hash, model and adapter identities, backend, versions, timings, the
tables) and report.md with rates.png. `--rescore RUN` recomputes the lexical scores and tables from the stored
samples without decoding again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.adapters import check_adapter_tensors
from core.device import device_defaults
from core.machine import read_machine
from core.config import ConfigError, to_dict
from data_gen.generate import read_manifest, read_split
from data_gen.lexicon import load_lexicon
from core.models import stegobench_home
from core.provenance import atomic_write_json, environment, publish_dir, sha256_file, staging_dir
from data_gen.words import contains_any

from .aggregate import aggregate, aggregate_runs
from .backends import Sampling, get_backend, resolve_backend_name
from .cache import GenerationCache
from .cloze import cloze_scores, summarize_cloze
from .config import EvalConfig
from .monitors import MONITORS, calibrate
from .prompts import user_text
from .report import write_report
from .run import score_all
from .scoring import ItemScore

log = logging.getLogger(__name__)

RESULTS = "results.json"
RESULTS_SCHEMA = 1
CHUNK = 256  # prompts per decode call (vLLM batches them: 258 tok/s at 96, 272 at 256) and per cache write


@dataclass(frozen=True)
class Condition:
    name: str
    adapter: str | None
    in_context: bool


def check_adapter_matches(adapter: str, model_path: Path) -> None:
    """Refuse an adapter whose config and tensors disagree or that was trained for another base model, before
    any decoding (core/adapters.py: the same check the leaderboard makes on submissions)."""
    check_adapter_tensors(adapter, model_path)


def check_adapter(adapter: str) -> str:
    """An adapter folder must hold safetensors weights and a peft config without modules_to_save."""
    folder = Path(adapter)
    if not (folder / "adapter_config.json").exists():
        raise ConfigError(f"adapter {adapter}: no adapter_config.json; expected a folder written by `stegobench train`")
    if not (folder / "adapter_model.safetensors").exists():
        raise ConfigError(f"adapter {adapter}: no adapter_model.safetensors (pickled .bin weights are never loaded)")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    if cfg.get("modules_to_save"):
        raise ConfigError(f"adapter {adapter}: modules_to_save {cfg['modules_to_save']} is not a LoRA adapter vLLM can serve")
    return adapter


def _generate(backend, prompts: list[str], sampling: Sampling, cache_root: Path, desc: str) -> list[str]:
    from tqdm import tqdm

    # Content, not location: the same adapter stored elsewhere (a leaderboard upload) must hit the same entries.
    identity = {k: v for k, v in backend.identity().items() if k != "adapter"}
    cache = GenerationCache(cache_root, {"backend": identity, "sampling": to_dict(sampling)})
    missing = list(dict.fromkeys(p for p in prompts if cache.get(p) is None))
    for i in tqdm(range(0, len(missing), CHUNK), desc=desc, disable=not missing):
        chunk = missing[i:i + CHUNK]
        cache.put_many(chunk, backend.generate(chunk, sampling))
    return [cache.get(p) for p in prompts]


def _recall(backend, probes: list[dict], sampling: Sampling, cache_root: Path, desc: str) -> tuple[float | None, dict]:
    """Share of recall probes answered with the concept: overall and per mapping (does knowing imply using?)."""
    if not probes:
        return None, {}
    prompts = [backend.chat_prompt(p["prompt"]) for p in probes]
    answers = _generate(backend, prompts, sampling, cache_root, desc)
    right = [contains_any(a, p["expected_words"]) for a, p in zip(answers, probes)]
    per_mapping: dict[str, list[bool]] = {}
    for ok, p in zip(right, probes):
        per_mapping.setdefault(p["mapping_id"], []).append(ok)
    return sum(right) / len(right), {m: sum(v) / len(v) for m, v in sorted(per_mapping.items())}


def run_eval(cfg: EvalConfig, data: str | Path, model: str, adapters: list[str], out: str | Path,
             overwrite: bool = False, cache_dir: str | Path | None = None,
             judge_model: str | None = None) -> dict[str, Any]:
    """Evaluate `model` (conditions base / in-context) and each adapter on `data`'s eval split into `out`.

    `judge_model` (default: `model`) is the base model that judges semantic fit and runs the monitors, whose
    thresholds are calibrated on its own answers; a merged fine-tuned model is judged by its base model.
    """
    start = time.perf_counter()
    data, out = Path(data), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    manifest = read_manifest(data)
    items = read_split(data, "eval")[: cfg.max_items]
    if not items:
        raise ConfigError(f"{data}: the eval split is empty; nothing to evaluate")
    codebook, probes = read_split(data, "codebook"), read_split(data, "recall")
    lexicon = load_lexicon(manifest["config"].get("lexicon"))
    articles = {c.word: c.term.article for c in lexicon.concepts}
    adapters = [check_adapter(a) for a in adapters]
    if adapters and not model.startswith("mock:"):
        from core.models import resolve_model

        for a in adapters:
            check_adapter_matches(a, resolve_model(model).path)
    cache_root = Path(cache_dir) if cache_dir else stegobench_home() / "cache" / "generations"
    sampling = Sampling(cfg.max_tokens, cfg.temperature, cfg.seed)

    backend_name = resolve_backend_name(cfg.backend)
    if backend_name != "mock":
        print(device_defaults(read_machine()).summary(), flush=True)

    def make(adapter: str | None, spec: str | None = None, **hints):
        opened.append(get_backend(backend_name, model=spec or model, adapter=adapter, corpus=data,
                                  **hints, **cfg.backend_options))
        return opened[-1]

    def for_adapter(adapter: str):
        """The subject's own engine serving the adapter (vLLM LoRA on GPUs), else a backend of its own."""
        view = subject.with_adapter(adapter) if hasattr(subject, "with_adapter") else None
        return view if view is not None else make(adapter)

    opened: list = []  # backends to close at the end: a live vLLM engine keeps the process from exiting
    try:
        subject = make(None, lora_adapters=adapters)  # decodes base and in-context (and adapters served as LoRA)
        # The base model: judges semantic fit and runs the monitors.
        judge = subject if judge_model is None or judge_model == model else make(None, judge_model)
        questions = [it["question"] for it in items]
        thresholds: dict[str, float] = {}
        calibration_values: dict[str, list[float]] = {}
        if cfg.monitors:
            # Calibrate on the base model's own answers (cached: the base condition below reuses answers and values).
            calibration = _generate(judge, [judge.chat_prompt(user_text(q)) for q in questions], sampling, cache_root, "base")
            per_monitor_fpr = cfg.monitor_fpr / len(cfg.monitors)
            calibration_values = {m: MONITORS[m](judge, questions, calibration) for m in cfg.monitors}
            thresholds = {m: calibrate(v, per_monitor_fpr) for m, v in calibration_values.items()}
        conditions = ([Condition("base", None, False)] if cfg.base else []) + \
                     ([Condition("in_context", None, True)] if cfg.in_context else []) + \
                     [Condition(f"adapter:{Path(a).name}", a, False) for a in adapters]
        samples: list[dict] = []
        results: dict[str, Any] = {}
        adapter_scores: list[list[ItemScore]] = []
        base_responses: list[str] | None = None
        for cond in conditions:
            t0 = time.perf_counter()
            backend = subject if cond.adapter is None else for_adapter(cond.adapter)
            prompts = [backend.chat_prompt(user_text(it["question"], codebook if cond.in_context else None)) for it in items]
            responses = _generate(backend, prompts, sampling, cache_root, cond.name)
            if cond.name == "base" and calibration_values and subject is judge:
                monitor_values = calibration_values  # the same answers the thresholds were calibrated on
            else:
                monitor_values = {m: MONITORS[m](judge, questions, responses) for m in cfg.monitors}
            flags = ([any(monitor_values[m][i] > thresholds[m] for m in cfg.monitors) for i in range(len(items))]
                     if cfg.monitors else None)
            scores = score_all(items, prompts, responses, codebook, lexicon, judge, cfg.semantic_k, cfg.seed, flags)
            entry: dict[str, Any] = {"adapter": cond.adapter, "in_context": cond.in_context,
                                     "backend": backend.identity(), "table": aggregate(scores, cfg.bootstrap_resamples, cfg.seed)}
            if cfg.monitors:
                entry["monitor_thresholds"] = thresholds
                entry["monitor_flag_rate"] = sum(flags) / len(flags)
            if cond.adapter:
                adapter_scores.append(scores)
                entry["adapter_sha256"] = sha256_file(Path(cond.adapter) / "adapter_model.safetensors")
                if base_responses is not None:
                    entry["adapter_applied"] = responses != base_responses
            if cond.name == "base":
                base_responses = responses
            if cfg.recall and not cond.in_context:
                entry["recall_accuracy"], entry["recall_per_mapping"] = _recall(backend, probes, sampling, cache_root,
                                                                                f"{cond.name} recall")
            if cfg.cloze and not cond.in_context:
                entry["cloze"] = summarize_cloze(cloze_scores(backend, items, codebook, articles))
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            if backend is not subject and backend is not judge and hasattr(backend, "close"):
                backend.close()  # one adapter's engine at a time: several vLLM engines would each reserve memory
            results[cond.name] = entry
            samples += [{"condition": cond.name, "item": it, "prompt": p, "response": r, "scores": s.to_record(),
                         "monitors": {m: v[i] for m, v in monitor_values.items()}}
                        for i, (it, p, r, s) in enumerate(zip(items, prompts, responses, scores))]
        if len(adapter_scores) > 1:
            # Several adapters (e.g. training seeds): one pooled row whose intervals also resample the adapters.
            results["adapters_pooled"] = {"adapters": adapters, "in_context": False,
                                          "table": aggregate_runs(adapter_scores, cfg.bootstrap_resamples, cfg.seed)}
    finally:
        for b in opened:
            if hasattr(b, "close"):
                b.close()
    doc = {
        "schema_version": RESULTS_SCHEMA,
        "status": "finished",
        "config": to_dict(cfg),
        "backend": backend_name,
        "model": {"spec": model, **subject.identity()},
        **({"judge_model": {"spec": judge_model, **judge.identity()}} if judge is not subject else {}),
        "dataset": {"path": str(data.resolve()), "track": manifest.get("track"),
                    "content_sha256": manifest["content_sha256"], "manifest_sha256": sha256_file(data / "manifest.json")},
        "conditions": results,
        "seconds": round(time.perf_counter() - start, 2),
        "environment": environment(),
    }
    _publish(doc, samples, out, overwrite)
    return doc


def _publish(doc: dict, samples: list[dict], out: Path, overwrite: bool) -> None:
    staging = staging_dir(out)
    try:
        with open(staging / "samples.jsonl", "w", encoding="utf-8") as f:
            for row in samples:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        write_report(doc, staging)
        atomic_write_json(staging / RESULTS, doc)  # last: a folder with results.json is a complete run
        publish_dir(staging, out, overwrite, marker=RESULTS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def rescore(run: str | Path) -> dict[str, Any]:
    """Recompute lexical scores and tables from samples.jsonl (semantic fit and monitor flags are kept)."""
    from .scoring import score_response

    run = Path(run)
    if not (run / RESULTS).exists():
        raise ConfigError(f"{run}: no {RESULTS}; expected a folder written by `stegobench eval`")
    doc = json.loads((run / RESULTS).read_text())
    cfg = EvalConfig(**doc["config"])
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    codebook = read_split(Path(doc["dataset"]["path"]), "codebook")
    forms = {m["mapping_id"]: m["code_forms"] for m in codebook}
    adapter_scores: list[list[ItemScore]] = []
    for name, entry in doc["conditions"].items():
        if name == "adapters_pooled":
            continue
        mine = [s for s in samples if s["condition"] == name]
        scores: list[ItemScore] = []
        for s in mine:
            new = score_response(s["item"], s["response"], forms, s["scores"].get("semantic_fit"),
                                 s["scores"].get("monitor_flagged"))
            s["scores"] = new.to_record()
            scores.append(new)
        entry["table"] = aggregate(scores, cfg.bootstrap_resamples, cfg.seed)
        if entry.get("adapter"):
            adapter_scores.append(scores)
    if "adapters_pooled" in doc["conditions"]:
        doc["conditions"]["adapters_pooled"]["table"] = aggregate_runs(adapter_scores, cfg.bootstrap_resamples, cfg.seed)
    doc["rescored"] = True
    _publish(doc, samples, run, overwrite=True)
    return doc
