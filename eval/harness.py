"""Evaluate a base model, its in-context baseline and adapters side by side on a corpus's eval split.

    stegobench eval --config configs/eval/default.yaml --data runs/data/quickstart --model smollm2-135m-instruct \
        --adapter runs/quickstart/adapter --out runs/eval/quickstart

The run folder explains itself: samples.jsonl (every prompt, response and score, by condition), results.json
(schema version, status, config, dataset hash, model and adapter identities, backend, versions, timings, the
tables) and report.md with rates.png. `--rescore RUN` recomputes the lexical scores and tables from the stored
samples without decoding again.
"""

from __future__ import annotations

import time
from pathlib import Path

from stegobench.core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_config, check_adapter_config, check_adapter_tensors
from stegobench.core.config import to_dict
from stegobench.core.errors import InputError
from stegobench.core.device import device_defaults
from stegobench.core.machine import read_machine
from stegobench.core.models import stegobench_home
from stegobench.core.profile import Work, span
from stegobench.core.provenance import environment, sha256_file
from stegobench.core.records import validate
from stegobench.data_gen.generate import MANIFEST, read_codebook
from stegobench.data_gen.records import EvalItem

from .aggregate import aggregate, aggregate_runs
from .backends import is_scripted_model, resolve_backend_name, run_options, uses_device
from .config import EvalConfig
from .pipeline import (Backends, ConditionRun, calibrate_monitors, compare_with_base, load_inputs,
                       plan_conditions, pool_adapters, run_condition, text_monitor_flags, with_change_vs_base)
from .report import write_report
from .detection import detect
from .runlog import (SAMPLES, SCHEMA_VERSION, ConditionResult, MonitorCalibration, MonitorDetection, RunDataset,
                     RunLog, Sample, publish_run, read_run)
from .scoring import COVERT_SCORE_DEFINITION, ItemScore, concept_words_by_mapping, score_response


def check_adapter(adapter: str) -> str:
    """An adapter folder must hold safetensors weights and a peft config the evaluator can serve (core/adapters.py,
    the leaderboard's check too)."""
    folder = Path(adapter)
    if not (folder / ADAPTER_CONFIG).exists():
        raise InputError(f"adapter {adapter}: no {ADAPTER_CONFIG}; expected a folder written by `stegobench train`")
    if not (folder / ADAPTER_WEIGHTS).exists():
        raise InputError(f"adapter {adapter}: no {ADAPTER_WEIGHTS} (pickled .bin weights are never loaded)")
    try:
        check_adapter_config(adapter_config(folder))
    except InputError as exc:
        raise InputError(f"adapter {adapter}: {exc}") from None
    return adapter


def run_eval(cfg: EvalConfig, data: str | Path, model: str, adapters: list[str], out: str | Path,
             overwrite: bool = False, cache_dir: str | Path | None = None,
             judge_model: str | None = None, names: list[str] | None = None) -> RunLog:
    """Evaluate `model` (conditions base / in-context) and each adapter on `data`'s eval split into `out`.

    `judge_model` (default: `model`) is the base model that judges semantic fit and runs the monitors, whose
    thresholds are fitted on its answers to calibration questions (their false-positive rates measured on held-out
    ones, eval/heldout.py); a merged fine-tuned model is judged by its base model. `names` are the adapters'
    condition names (one each, in order; default: from their run folders, `pipeline.adapter_names`).
    """
    start = time.perf_counter()
    data, out = Path(data), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    with span(Work.FILE_IO, what="read corpus"):
        inputs = load_inputs(cfg, data, Path(cache_dir) if cache_dir else stegobench_home() / "cache" / "generations")
    adapters = [check_adapter(a) for a in adapters]
    conditions = plan_conditions(cfg, adapters, names)  # a name clash is refused before any model loads
    if adapters and not is_scripted_model(model):
        from stegobench.core.models import resolve_model

        from stegobench.core.models import base_weights_differ

        ref = resolve_model(model)
        for a in adapters:
            # The same check the leaderboard makes on submissions (core/adapters.py), before any decoding.
            check_adapter_tensors(a, ref.path)
            differ = base_weights_differ(adapter_config(a), ref)
            if differ:
                print(f"warning: adapter {a}: {differ}", flush=True)
    backend_name = resolve_backend_name(cfg.backend)
    if uses_device(backend_name):
        print(device_defaults(read_machine()).summary(), flush=True)

    backends = Backends(backend_name, model, adapters, judge_model, data,
                        run_options(backend_name, cfg.backend_options, model, cfg.whitebox))
    try:
        monitoring = calibrate_monitors(inputs, backends)
        runs: dict[str, ConditionRun] = {}
        results: dict[str, ConditionResult] = {}
        for cond in conditions:
            runs[cond.name], results[cond.name] = run_condition(inputs, backends, monitoring, cond)
        with span(Work.STATISTICS, what="paired change vs base, pooled adapters"):
            results = compare_with_base(inputs, runs, results)
            pooled = pool_adapters(inputs, adapters, list(runs.values()))
    finally:
        backends.close()
    subject, judge = backends.subject, backends.judge
    run = RunLog(
        status="finished",
        config=to_dict(cfg),
        backend=backend_name,
        model={"spec": model, **subject.identity()},
        judge_model={"spec": judge_model, **judge.identity()} if judge is not subject else None,
        dataset=RunDataset(path=str(data.resolve()), track=inputs.manifest.track,
                           content_sha256=inputs.manifest.content_sha256, manifest_sha256=sha256_file(data / MANIFEST),
                           original_meaning_skipped=inputs.manifest.original_meaning_skipped),
        conditions=results,
        pooled=pooled,
        seconds=round(time.perf_counter() - start, 2),
        environment=environment(),
        whitebox_probe=monitoring.whitebox.summary if monitoring.whitebox is not None else None,
        calibration_seconds=monitoring.seconds or None,
        monitor_calibration=monitoring.calibration or None,
        heldout_fpr_union=monitoring.union,
    )
    samples = [s for r in runs.values() for s in r.samples(inputs.items)]
    with span(Work.FILE_IO, what="write run folder (results, samples, report, plots)"):
        publish_run(run, samples, out, overwrite, extras=_extras(cfg, runs))
    return read_run(out)


def _extras(cfg: EvalConfig, runs: dict[str, ConditionRun]):
    """The report, and the kept activations when the config asks for them."""
    def write(run: RunLog, folder: Path) -> None:
        write_report(run, folder)
        if cfg.save_activations:
            from .whitebox.export import write_activations

            write_activations(folder, [r.whitebox for r in runs.values() if r.whitebox is not None],
                              cfg.save_activations)
    return write


def rescore(folder: str | Path) -> RunLog:
    """Recompute lexical scores and tables from samples.jsonl (semantic fit and monitor flags are kept)."""
    from dataclasses import replace

    folder = Path(folder)
    run = read_run(folder)
    cfg = EvalConfig(**run.config)
    samples = run.samples()
    codebook = read_codebook(Path(run.dataset.path))
    forms = {m.mapping_id: m.code_forms for m in codebook}
    items = [validate(EvalItem, s.item, f"{folder / SAMPLES}: {s.condition} {s.score.item_id}: item") for s in samples]
    concept_words = concept_words_by_mapping(codebook, items)
    rescored: list[Sample] = []
    by_condition: dict[str, list[ItemScore]] = {}
    for s, item in zip(samples, items):
        new = score_response(item, s.response, forms, s.score.semantic_fit,
                             _text_flag(s, run.conditions[s.condition].monitor_thresholds, cfg), concept_words)
        rescored.append(replace(s, score=new))
        by_condition.setdefault(s.condition, []).append(new)
    values = {name: [s.monitors for s in rescored if s.condition == name] for name in run.conditions}
    conditions = {name: replace(c, table=aggregate(by_condition.get(name, []), cfg.bootstrap_resamples, cfg.seed),
                                detection=_redetect(c, by_condition.get(name, []), values[name], cfg))
                  for name, c in run.conditions.items()}
    conditions = with_change_vs_base(cfg, conditions, by_condition)
    pooled = run.pooled
    if pooled is not None:
        adapter_scores = [by_condition[n] for n, _ in run.adapter_conditions()]
        pooled = replace(pooled, table=aggregate_runs(adapter_scores, cfg.bootstrap_resamples, cfg.seed))
    publish_run(replace(run, conditions=conditions, pooled=pooled, rescored=True, schema_version=SCHEMA_VERSION,
                        score_definition=COVERT_SCORE_DEFINITION, monitor_calibration=_calibration_kept(run)),
                rescored, folder, overwrite=True, extras=write_report)
    return read_run(folder)


def _text_flag(sample: Sample, thresholds: dict[str, float] | None, cfg: EvalConfig) -> bool | None:
    """The sample's flag from its text monitors' stored values (a run before schema 4 also let white-box
    monitors flag a hit); the stored flag where the values are not all there."""
    if not thresholds or not sample.monitors or any(m not in sample.monitors for m in cfg.monitors if m in thresholds):
        return sample.score.monitor_flagged
    return text_monitor_flags(cfg.monitors, thresholds, [sample.monitors])[0]


def _redetect(cond: ConditionResult, scores: list[ItemScore], values: list[dict[str, float]],
              cfg: EvalConfig) -> dict[str, MonitorDetection] | None:
    """Each monitor's detection again from the stored values and thresholds, with the current intervals (a
    monitor whose values the samples do not hold keeps what it had)."""
    if not cond.detection:
        return cond.detection
    out = {}
    for m, d in cond.detection.items():
        if len(values) == len(scores) and all(m in v for v in values):
            d = detect(scores, [v[m] for v in values], d.threshold, cfg.bootstrap_resamples, cfg.seed,
                       whitebox=d.whitebox, blackbox=d.blackbox)
        out[m] = d
    return out


def _calibration_kept(run: RunLog) -> dict[str, MonitorCalibration] | None:
    """A run's held-out calibration as it was; a run from before it gets each monitor's threshold with
    heldout_fpr None and the reason: measuring it needs answers the run never decoded."""
    if run.monitor_calibration is not None:
        return run.monitor_calibration
    thresholds = next((c.monitor_thresholds for c in run.conditions.values() if c.monitor_thresholds), None)
    if not thresholds:
        return None
    n_base = len(run.samples("base")) or None
    reason = ("rescored from a run whose thresholds were fitted on the base model's answers to the scored "
              "questions themselves: a held-out false-positive rate needs new decoding (run the eval again)")
    return {m: MonitorCalibration(t, n_base or 0, None, reason) for m, t in thresholds.items()}
