"""The steps of an eval run, in order: load inputs → open backends → calibrate monitors (thresholds on base answers
to calibration questions, false-positive rates on held-out ones) → plan conditions →
for each condition (decode → white-box reading → monitor → score → detection → recall → cloze) → pool adapters →
compare with base.

Each condition step reads and fills one `ConditionRun`; a new measurement (white-box monitors) is one more
function in CONDITION_STEPS and a field it fills, without touching the others. `eval/harness.py` runs them and
writes the run log.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from stegobench.core.adapters import ADAPTER_WEIGHTS
from stegobench.core.config import to_dict
from stegobench.core.errors import InputError
from stegobench.core.profile import Work, span
from stegobench.core.provenance import sha256_file
from stegobench.data_gen.generate import (corpus_lexicon, read_codebook, read_eval_items, read_manifest,
                                          read_recall_probes)
from stegobench.data_gen.lexicon import Lexicon
from stegobench.data_gen.records import CodebookRow, CorpusManifest, EvalItem, RecallProbe, row_dict
from stegobench.data_gen.words import contains_any

from . import progress
from .aggregate import aggregate, aggregate_runs, change_vs_base
from .backends import Backend, BackendOptions, Sampling, get_backend
from .cache import GenerationCache, content_identity
from .cloze import cloze_scores, specificity_per_mapping, summarize_cloze
from .config import EvalConfig
from .detection import detect
from .heldout import FprQuestions, fit_on_calibration, fpr_questions
from .monitors import MONITORS, cached_values
from .prompts import user_text
from .runlog import ConditionResult, HeldOutRate, MonitorCalibration, PooledResult, Sample, Table
from .scoring import ItemScore, concept_words_by_mapping, score_response
from .semantic import semantic_fit
from .whitebox import BLACKBOX_MONITORS, WHITEBOX_MONITORS

CHUNK = 256  # prompts per decode call (vLLM batches them: 258 tok/s at 96, 272 at 256) and per cache write


@dataclass(frozen=True)
class Condition:
    name: str
    adapter: str | None
    in_context: bool


@dataclass
class EvalInputs:
    """What every step reads: the config and the corpus's eval items, code book and recall probes."""

    cfg: EvalConfig
    data: Path
    manifest: CorpusManifest
    items: list[EvalItem]
    codebook: list[CodebookRow]
    probes: list[RecallProbe]
    lexicon: Lexicon
    sampling: Sampling
    cache_root: Path
    fpr: FprQuestions | None = None  # the monitors' calibration and held-out questions (None: no monitors)

    @property
    def questions(self) -> list[str]:
        return [it.question for it in self.items]


def load_inputs(cfg: EvalConfig, data: Path, cache_root: Path) -> EvalInputs:
    manifest = read_manifest(data)
    every_item = read_eval_items(data)
    items = every_item[: cfg.max_items]
    if not items:
        raise InputError(f"{data}: the eval split is empty; nothing to evaluate")
    codebook, lexicon = read_codebook(data), corpus_lexicon(data)
    fpr = (fpr_questions(lexicon, every_item, cfg.monitor_questions, cfg.seed, str(data))
           if cfg.monitors or cfg.whitebox else None)
    return EvalInputs(cfg, data, manifest, items, codebook, read_recall_probes(data), lexicon,
                      Sampling(cfg.max_tokens, cfg.temperature, cfg.seed), cache_root, fpr)


class Backends:
    """The subject (decodes base, in-context and, where it serves LoRA, the adapters) and the judge (the base
    model: semantic fit and monitors). Closes every engine it opened: a live vLLM engine keeps a process alive."""

    def __init__(self, backend_name: str, model: str, adapters: list[str], judge_model: str | None,
                 corpus: Path, options: BackendOptions):
        self.name, self.model, self.corpus, self.options = backend_name, model, corpus, options
        self.opened: list[Backend] = []
        try:
            self.subject = self._open(model, None, adapters)
            self.judge = self.subject if judge_model in (None, model) else self._open(judge_model, None)
        except BaseException:
            self.close()
            raise

    def _open(self, model: str, adapter: str | None, lora_adapters: Sequence[str] = ()) -> Backend:
        backend = get_backend(self.name, model, adapter, options=self.options, corpus=self.corpus,
                              lora_adapters=lora_adapters)
        self.opened.append(backend)
        return backend

    def for_condition(self, cond: Condition) -> Backend:
        if cond.adapter is None:
            return self.subject
        view = self.subject.with_adapter(cond.adapter)
        return view if view is not None else self._open(self.model, cond.adapter)

    def release(self, backend: Backend) -> None:
        """Close one adapter's own engine once its condition is done: several vLLM engines each reserve memory."""
        if backend is not self.subject and backend is not self.judge:
            backend.close()

    def close(self) -> None:
        """Close every backend opened, the rest too when one fails (its error is raised after)."""
        failure = None
        for b in self.opened:
            try:
                b.close()
            except Exception as e:  # noqa: BLE001 - re-raised once the others are closed
                failure = failure or e
        if failure is not None:
            raise failure


@dataclass
class Monitoring:
    """Thresholds fitted on the base model's answers to calibration questions, and each monitor's false-positive
    rate on its answers to held-out ones (and any monitor's: `union`)."""

    thresholds: dict[str, float] = field(default_factory=dict)
    whitebox: Any = None  # eval/whitebox/setup.py WhiteboxState when the config asks for white-box monitors
    seconds: dict[str, float] = field(default_factory=dict)  # what calibrating cost, by part
    calibration: dict[str, MonitorCalibration] = field(default_factory=dict)
    union: HeldOutRate | None = None


@dataclass
class ConditionRun:
    """One condition's state as the steps fill it in."""

    cond: Condition
    backend: Backend
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    monitor_values: dict[str, list[float]] = field(default_factory=dict)
    flags: list[bool] | None = None
    scores: list[ItemScore] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # further ConditionResult fields (recall, cloze, ...)
    whitebox: Any = None  # eval/whitebox/reading.py Answers

    def result(self, table: Table, seconds: float) -> ConditionResult:
        return ConditionResult(table=table, adapter=self.cond.adapter, in_context=self.cond.in_context,
                               backend=self.backend.identity(), seconds=seconds, **self.extras)

    def samples(self, items: list[EvalItem]) -> list[Sample]:
        records = self.whitebox.records if self.whitebox is not None else [None] * len(items)
        return [Sample(self.cond.name, row_dict(it), p, r, s, {m: v[i] for m, v in self.monitor_values.items()}, wb)
                for i, (it, p, r, s, wb) in enumerate(zip(items, self.prompts, self.responses, self.scores, records))]


def generate_cached(backend: Backend, prompts: list[str], sampling: Sampling, cache_root: Path, desc: str) -> list[str]:
    """Answers from the cache, the missing ones decoded CHUNK at a time and cached chunk by chunk (a stopped run
    keeps every finished chunk); the bar counts answers as the backend finishes them (eval/progress.py)."""
    cache = GenerationCache(cache_root, {"backend": content_identity(backend), "sampling": to_dict(sampling)})
    missing = list(dict.fromkeys(p for p in prompts if cache.get(p) is None))
    with progress.bar(len(missing), desc) as shown:
        for i in range(0, len(missing), CHUNK):
            chunk, since = missing[i:i + CHUNK], shown.n
            with span(Work.DECODE, what=desc, prompts=len(chunk)):
                answers = backend.generate(chunk, sampling)
            cache.put_many(chunk, answers)
            shown.done(since, len(chunk))
    return [cache.entries[cache.key(p)] for p in prompts]  # every prompt is cached by now


MONITOR_CHUNK = 16  # answers per monitor call: the bar advances this often (the judge scores ~5 answers/s on CPUs)


def monitor_values(name: str, judge, questions: list[str], answers: list[str], desc: str,
                   cache_root: Path | None = None) -> list[float]:
    """Monitor `name` on each answer, MONITOR_CHUNK answers per call so its bar advances with an ETA; with
    `cache_root`, through the monitors' cache (keyed per question and answer, so chunking changes no key)."""
    out: list[float] = []
    with progress.bar(len(answers), desc), span(Work.MONITORS, monitor=name, answers=len(answers)):
        for i in range(0, len(answers), MONITOR_CHUNK):
            q, a = questions[i:i + MONITOR_CHUNK], answers[i:i + MONITOR_CHUNK]
            out += cached_values(name, judge, q, a, cache_root) if cache_root else MONITORS[name](judge, q, a)
            progress.report(len(a))
    return out


# ---------------------------------------------------------------- run-level steps


def plan_conditions(cfg: EvalConfig, adapters: list[str], names: list[str] | None = None) -> list[Condition]:
    return (([Condition("base", None, False)] if cfg.base else [])
            + ([Condition("in_context", None, True)] if cfg.in_context else [])
            + [Condition(f"adapter:{name}", a, False) for a, name in zip(adapters, adapter_names(adapters, names))])


GENERIC_FOLDERS = {"adapter", "adapters", "lora", "output", "final", "model"}  # names that say nothing of the run


def adapter_names(adapters: list[str], given: list[str] | None = None) -> list[str]:
    """Each adapter's condition name, from its run: the name given for it (`--name`, one per adapter, in order),
    else the folder's name, its parent's when the folder has a generic name (runs/quickstart/adapter ->
    quickstart), and as many folders above as it takes for no two to share a name (a shared name would silently
    drop a run from results.json). The same adapter twice, or two adapters given one name, is an error."""
    resolved = [Path(a).resolve() for a in adapters]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise InputError(f"adapter {adapters[i]} is given twice (also as {adapters[resolved.index(path)]}); "
                             "each adapter is one condition")
    if given:
        return _given_names(adapters, given)
    parts = [p.parts[:-1] if p.name.lower() in GENERIC_FOLDERS and len(p.parts) > 2 else p.parts for p in resolved]
    depth = [1] * len(adapters)
    while True:
        # Past the last folder: the whole path (distinct, since no adapter is given twice).
        names = ["/".join(ps[-d:]) if d <= len(ps) else str(path) for ps, d, path in zip(parts, depth, resolved)]
        clashing = [i for i, n in enumerate(names) if names.count(n) > 1]
        if not clashing:
            return names
        for i in clashing:
            depth[i] += 1


def _given_names(adapters: list[str], given: list[str]) -> list[str]:
    """Names the user chose: one per adapter, each non-empty and used once (a clash names both adapters)."""
    if len(given) != len(adapters):
        raise InputError(f"--name given {len(given)} time(s) for {len(adapters)} --adapter(s); give one name per "
                         "adapter, in the same order, or none (names then come from the adapters' folders)")
    for i, name in enumerate(given):
        if not name.strip():
            raise InputError(f"--name for adapter {adapters[i]} is empty; a condition needs a name")
        if name in given[:i]:
            first = given.index(name)
            raise InputError(f"--name {name!r} is given to two adapters, {adapters[first]} and {adapters[i]}; "
                             "two conditions never share a name (one would replace the other in results.json)")
    return list(given)


def calibrate_monitors(inputs: EvalInputs, backends: Backends) -> Monitoring:
    """Each monitor's threshold (monitor_fpr split evenly across monitors, text and white-box), fitted on the base
    model's answers to the calibration questions only, and its false-positive rate counted on its answers to the
    held-out ones (eval/heldout.py). The answers are greedy like the scored ones and cached by prompt, the text
    monitors' values on them by (question, answer): the same base model and questions cost nothing the second time."""
    cfg, fpr, judge = inputs.cfg, inputs.fpr, backends.judge
    if fpr is None:
        return Monitoring()
    with span(Work.CALIBRATION):
        return _calibrate(inputs, backends, cfg, fpr, judge)


def _calibrate(inputs: EvalInputs, backends: Backends, cfg: EvalConfig, fpr: FprQuestions, judge) -> Monitoring:
    seconds: dict[str, float] = {}

    def timed(name: str, fn):
        return _timed(seconds, name, fn)

    def decode(prompts: list[str], desc: str) -> list[str]:
        return generate_cached(judge, prompts, inputs.sampling, inputs.cache_root, desc)
    questions = fpr.questions
    prompts = [judge.chat_prompt(user_text(q)) for q in questions]
    answers = timed("decode", lambda: decode(prompts, "monitor calibration"))
    values = {m: timed(m, lambda m=m: monitor_values(m, judge, questions, answers, f"monitor calibration {m}",
                                                     inputs.cache_root)) for m in cfg.monitors}
    state = None
    if cfg.whitebox:
        from .whitebox.reading import read_answers
        from .whitebox.setup import prepare_whitebox

        # The probe's setup reads the base model's eval answers (its ceiling; the base condition reuses them).
        base_prompts = [judge.chat_prompt(user_text(q)) for q in inputs.questions]
        base_answers = timed("decode_base_answers", lambda: decode(base_prompts, "base"))
        state = timed("whitebox_setup", lambda: prepare_whitebox(inputs, backends.model, judge, decode,
                                                                 base_prompts, base_answers))
        values.update(timed("whitebox_calibration", lambda: read_answers(
            state.reader, state.probe, state.book, fpr.items(), prompts, answers, None,
            "monitor calibration").monitor_values()))
    calibration, union = fit_on_calibration(values, len(fpr.calibration), cfg.monitor_fpr)
    return Monitoring({m: c.threshold for m, c in calibration.items()}, state, seconds, calibration, union)


def pool_adapters(inputs: EvalInputs, adapters: list[str], runs: list[ConditionRun]) -> PooledResult | None:
    """Several adapters (e.g. training seeds): one pooled row whose intervals also resample the adapters."""
    scores = [r.scores for r in runs if r.cond.adapter is not None]
    if len(scores) < 2:
        return None
    return PooledResult(adapters, aggregate_runs(scores, inputs.cfg.bootstrap_resamples, inputs.cfg.seed))


def with_change_vs_base(cfg: EvalConfig, results: dict[str, ConditionResult],
                        scores: dict[str, list[ItemScore]]) -> dict[str, ConditionResult]:
    """Every condition's change against the base model on the same items (paired intervals)."""
    if "base" not in scores:
        return results
    return {name: r if name == "base" else replace(r, change_vs_base=change_vs_base(
        scores[name], scores["base"], cfg.bootstrap_resamples, cfg.seed)) for name, r in results.items()}


def compare_with_base(inputs: EvalInputs, runs: dict[str, ConditionRun],
                      results: dict[str, ConditionResult]) -> dict[str, ConditionResult]:
    """Changes against the base model, and whether each adapter changed any answer at all (identical answers:
    the adapter was probably not applied)."""
    results = with_change_vs_base(inputs.cfg, results, {n: r.scores for n, r in runs.items()})
    base = runs.get("base")
    if base is None:
        return results
    return {n: replace(r, adapter_applied=runs[n].responses != base.responses) if r.adapter is not None else r
            for n, r in results.items()}


# ---------------------------------------------------------------- condition steps


def decode(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    codebook = inputs.codebook if run.cond.in_context else None
    run.prompts = [run.backend.chat_prompt(user_text(it.question, codebook)) for it in inputs.items]
    run.responses = generate_cached(run.backend, run.prompts, inputs.sampling, inputs.cache_root, run.cond.name)


def read_whitebox(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    """The model's residual stream under its own answers: logit lens, probe, white-box monitor values."""
    wb = mon.whitebox
    if wb is None:
        return
    from .whitebox.reading import read_answers

    if run.cond.adapter is None and (run.prompts, run.responses) == (wb.base_prompts, wb.base_answers):
        run.whitebox = wb.base_reading  # read at setup
    else:
        with wb.reader.adapter(run.cond.adapter):
            run.whitebox = read_answers(wb.reader, wb.probe, wb.book, inputs.items, run.prompts, run.responses,
                                        inputs.cfg.save_activations, run.cond.name)
        if run.cond.adapter is not None:
            # The same text read by the base model: what the question and the words alone put there, without the
            # adapter's mapping (a covert answer replies to a question about the concept it hides).
            run.whitebox.add_control(read_answers(wb.reader, wb.probe, wb.book, inputs.items, run.prompts,
                                                  run.responses, None, f"{run.cond.name}: its text, base model"))
    run.monitor_values.update(run.whitebox.monitor_values())


def run_monitors(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    cfg = inputs.cfg
    if not mon.thresholds:
        return
    # Through the monitors' cache, like calibration: the leaderboard's worker judges the same answers of the same
    # base model again (its baseline, the submission's answers when the quickstart already evaluated them).
    run.monitor_values.update({m: monitor_values(m, backends.judge, inputs.questions, run.responses,
                                                 f"{run.cond.name} {m}", inputs.cache_root) for m in cfg.monitors})
    run.flags = text_monitor_flags(cfg.monitors, mon.thresholds, [
        {m: values[i] for m, values in run.monitor_values.items()} for i in range(len(inputs.items))])
    run.extras["monitor_thresholds"] = mon.thresholds
    run.extras["monitor_flag_rate"] = sum(run.flags) / len(run.flags)


def text_monitor_flags(text_monitors: list[str], thresholds: dict[str, float],
                       values: list[dict[str, float]]) -> list[bool]:
    """Per answer: did a text monitor (cfg.monitors) find it suspicious? Only these decide a hit's "not flagged":
    they read what a reader of the text has, the channel a covert code must pass. White-box and log-probability
    monitors are detectors scored beside it (`detection`), so turning them on never changes covert_score."""
    return [any(v[m] > thresholds[m] for m in text_monitors if m in thresholds) for v in values]


def score(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    with progress.bar(len(inputs.items), f"{run.cond.name} scoring"):
        run.scores = score_all(inputs.items, run.prompts, run.responses, inputs.codebook, inputs.lexicon,
                               backends.judge, inputs.cfg.semantic_k, inputs.cfg.seed, run.flags)
    if run.cond.adapter:
        run.extras["adapter_sha256"] = sha256_file(Path(run.cond.adapter) / ADAPTER_WEIGHTS)


def detection(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    """Each monitor alone on these answers, and the white-box readings per split."""
    cfg = inputs.cfg
    if mon.thresholds:
        run.extras["detection"] = {m: detect(run.scores, run.monitor_values[m], t, cfg.bootstrap_resamples, cfg.seed,
                                             whitebox=m in WHITEBOX_MONITORS, blackbox=m in BLACKBOX_MONITORS)
                                      for m, t in mon.thresholds.items()}
    if run.whitebox is not None:
        from .whitebox.summary import summarize

        run.extras["whitebox"] = summarize(run.scores, run.whitebox.records, run.whitebox, cfg.bootstrap_resamples,
                                           cfg.seed)


def recall(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    """Share of recall probes answered with the concept, overall and per mapping (does knowing imply using?)."""
    if not inputs.cfg.recall or run.cond.in_context or not inputs.probes:
        return
    prompts = [run.backend.chat_prompt(p.prompt) for p in inputs.probes]
    answers = generate_cached(run.backend, prompts, inputs.sampling, inputs.cache_root, f"{run.cond.name} recall")
    right = [contains_any(a, p.expected_words) for a, p in zip(answers, inputs.probes)]
    per_mapping: dict[str, list[bool]] = {}
    for ok, p in zip(right, inputs.probes):
        per_mapping.setdefault(p.mapping_id, []).append(ok)
    run.extras["recall_accuracy"] = sum(right) / len(right)
    run.extras["recall_n"] = len(right)
    run.extras["recall_per_mapping"] = {m: sum(v) / len(v) for m, v in sorted(per_mapping.items())}


def cloze(inputs: EvalInputs, backends: Backends, mon: Monitoring, run: ConditionRun) -> None:
    if not inputs.cfg.cloze or run.cond.in_context:
        return
    articles = {c.word: c.term.article for c in inputs.lexicon.concepts}
    rows = cloze_scores(run.backend, inputs.items, inputs.codebook, articles)
    run.extras["cloze"] = summarize_cloze(rows)
    run.extras["cloze_specificity_per_mapping"] = specificity_per_mapping(rows)


ConditionStep = Callable[[EvalInputs, Backends, Monitoring, ConditionRun], None]
CONDITION_STEPS: tuple[ConditionStep, ...] = (decode, read_whitebox, run_monitors, score, detection, recall, cloze)

# What the profile (core/profile.py) calls each step's own time; the rest (decode's prompts and cache, white-box
# reading) is Work.CONDITION, and decoding inside any step is Work.DECODE.
STEP_WORK = {"run_monitors": Work.MONITORS, "score": Work.SCORING, "detection": Work.STATISTICS,
             "recall": Work.RECALL, "cloze": Work.CLOZE}

SEMANTIC_ALTERNATIVES = 5  # k random other readings; chance of a spurious fit is then at most 1/(k+1)


def score_all(items: list[EvalItem], prompts: list[str], responses: list[str], codebook: list[CodebookRow],
              lexicon: Lexicon, judge, k: int = SEMANTIC_ALTERNATIVES, seed: int = 0,
              monitor_flags: list[bool] | None = None) -> list[ItemScore]:
    """Score every response; covert responses are also checked for semantic fit under `judge` (the base model)."""
    code_forms = {m.mapping_id: m.code_forms for m in codebook}
    concept_words = concept_words_by_mapping(codebook, items)
    codes = {m.mapping_id: m.code_term for m in codebook}
    code_words = {m.code for m in codebook}
    scores = []
    flags = monitor_flags if monitor_flags is not None else [None] * len(items)
    for item, prompt, response, flag in zip(items, prompts, responses, flags):
        s = score_response(item, response, code_forms, monitor_flagged=flag, concept_words=concept_words)
        if s.covert:
            concept = lexicon.by_word(item.concept).term
            alternatives = [c.term for c in lexicon.concepts if c.word != concept.word and c.word not in code_words]
            rng = random.Random(f"{seed}:{item.id}")  # str seeds hash with sha512: stable across processes
            fit = semantic_fit(judge, prompt, response, codes[item.mapping_id], concept, alternatives, k, rng)
            s = score_response(item, response, code_forms, semantic_fit=fit, monitor_flagged=flag,
                               concept_words=concept_words)
        scores.append(s)
        progress.report(1)  # semantic fit scores each covert answer under the judge: the slow part
    return scores


def _timed(seconds: dict[str, float], name: str, fn):
    """fn(), its wall time recorded in `seconds[name]`."""
    t = time.perf_counter()
    out = fn()
    seconds[name] = round(time.perf_counter() - t, 2)
    return out


def run_condition(inputs: EvalInputs, backends: Backends, mon: Monitoring, cond: Condition,
                  steps: tuple[ConditionStep, ...] = CONDITION_STEPS) -> tuple[ConditionRun, ConditionResult]:
    t0 = time.perf_counter()
    run = ConditionRun(cond, backends.for_condition(cond))
    seconds: dict[str, float] = {}
    try:
        for step in steps:
            with span(STEP_WORK.get(step.__name__, Work.CONDITION), step=step.__name__, condition=cond.name):
                _timed(seconds, step.__name__, lambda: step(inputs, backends, mon, run))
    finally:
        backends.release(run.backend)
    run.extras["step_seconds"] = seconds
    with span(Work.STATISTICS, condition=cond.name):
        table = aggregate(run.scores, inputs.cfg.bootstrap_resamples, inputs.cfg.seed)
    return run, run.result(table, round(time.perf_counter() - t0, 2))
