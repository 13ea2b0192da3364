"""The typed log of one eval run: results.json and samples.jsonl are written and read here and nowhere else.

    from stegobench.eval.runlog import read_run                # ScoredSplit: data_gen/records.py; Flag: scoring.py
    run = read_run("runs/eval/quickstart")
    run.conditions["adapter:quickstart"].table.rate(ScoredSplit.DEFINITION_ONLY, Flag.UNDETECTED_COVERT).fmt()
    [s.score.covert for s in run.samples("base")]

results.json holds the run (config, identities, environment, one table per condition); samples.jsonl one line
per (condition, item): prompt, response, scores and monitor values. Schema history:
  1: the pooled row of several adapters sat among the conditions as "adapters_pooled".
  2: it is `pooled`; per-mapping rows carry the code word; conditions carry `change_vs_base` (paired intervals).
  3: conditions carry `detection` (each monitor on the same samples, with AUROC), `step_seconds` and, with
     `whitebox: true`, `whitebox` (logit lens, probe); the run carries `whitebox_probe`; samples a `whitebox`
     record. Nothing of schema 2 changes meaning, so the migration only renumbers. Later in schema 3, all
     optional: `whitebox_probe.selected_by` and `n_select` (absent: the layer was chosen on held-out plain
     words), the lens splits' `probe_reads_code_sense`, `median_probe_concept_rank` and their base-model
     readings of the same answers (`*_base_model`, `*_nearer_than_base_model`, `n_mappings`), the condition's
     `whitebox.lens_covert_minus_innocent` and `probe_covert_minus_innocent`, the splits' control for a lift of
     every trained concept (`lens_rises_among_concepts`, `probe_rises_among_concepts`), and the run's
     `calibration_seconds`.
  4: covert_score is Youden's J per code (a hit minus its own code's false alarms on unmapped questions; before,
     minus any code's), shares carry `n` and are never narrower than their exact interval, pooled seeds are
     resampled crossed, and the run says which `score_definition` scored it. Samples list each unmapped answer's
     `false_alarm_codes`; conditions carry `cloze_specificity_per_mapping` (findings' intervals over mappings).
     A migrated schema-3 run keeps its numbers under score_definition "any-code" until
     `stegobench eval --rescore RUN` recomputes them. Optional since schema 4: a detection's `blackbox` (a monitor
     read from the output log-probabilities alone), the lens splits' readings over the intermediate layers
     (1..L-2) and the final ones (L-1, L) (`*_intermediate*`, `*_final*`, `lens_intermediate_*`, `lens_final_*`),
     and the condition's `whitebox.lens_layers`, `lens_intermediate_covert_minus_innocent` and
     `lens_final_covert_minus_innocent`, the run's `monitor_calibration` (per monitor: threshold,
     calibration n and the false-positive rate on held-out base answers, `heldout_fpr`) and `heldout_fpr_union`
     (any monitor's flag), and detection's `innocent_use` label; absent in older files, whose rates were never
     measured on held-out answers (a rescored run keeps what it had). Also optional: a condition's `recall_n`
     (the recall probes asked; absent: recall's change against the base model rests on its mappings alone).
Files of an older schema are migrated on read (`RunLog._migrate`: one step per schema, before validation); a
newer schema is refused by name. Every record below is a validating (pydantic) dataclass: a file that does not
fit fails with one line naming the file and the field, a field of an optional kind absent from an older file
takes its default, and a field no schema declares is an error, never dropped.

A compact copy of a run (`write_compact_run`: what the validity study keeps in the repository) holds the same
results.json and samples.jsonl.gz: every sample's scores, monitor values and scalar white-box readings, without
prompts, responses or per-layer readings. `iter_samples` reads either.
"""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from dataclasses import asdict, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, overload

from pydantic import model_validator
from pydantic.dataclasses import dataclass

from stegobench.core.errors import InputError
from stegobench.core.provenance import atomic_write_json, publish_dir, staging_dir
from stegobench.core.records import STRICT_FIELDS, none_when_absent, read_json, validate
from stegobench.data_gen.records import ScoredSplit, Split

from .labels import mapping_label
from .scoring import COVERT_SCORE_DEFINITION, PREVIOUS_COVERT_SCORE_DEFINITION, Flag, ItemScore

RESULTS = "results.json"
SAMPLES = "samples.jsonl"
COMPACT_SAMPLES = "samples.jsonl.gz"  # a compact copy's samples (write_compact_run)
SCHEMA_VERSION = 4


class RunLogError(InputError):
    """A run folder that is missing, incomplete or written by a newer stegobench."""


@dataclass(frozen=True, config=STRICT_FIELDS)
class Interval:
    """A point estimate with its 95% interval (low/high None when there is no interval)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None  # a share's denominator: the distinct questions it counts (None: not a share)

    def fmt(self, digits: int = 3, signed: bool = False, empty: str = "–") -> str:
        """'0.250 [0.100, 0.400]'; `empty` without a value. The one place intervals become text."""
        if self.value is None:
            return empty
        spec = f"{'+' if signed else ''}.{digits}f"
        if self.low is None or self.high is None:
            return format(self.value, spec)
        return f"{format(self.value, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"

    def contains_zero(self) -> bool:
        return self.low is not None and self.high is not None and self.low <= 0 <= self.high

    @overload
    @classmethod
    def of(cls, d: dict) -> Interval: ...

    @overload
    @classmethod
    def of(cls, d: None) -> None: ...

    @classmethod
    def of(cls, d: dict[str, Any] | None, where: str = "interval") -> Interval | None:
        """An interval stored as a JSON object elsewhere (leaderboard rows, findings); None stays None."""
        return None if d is None else validate(cls, d, where)


def fmt(cell: Interval | None, digits: int = 3, signed: bool = False, empty: str = "–") -> str:
    return empty if cell is None else cell.fmt(digits, signed, empty)


@dataclass(frozen=True, config=STRICT_FIELDS)
class MappingRow:
    """One mapping's rates in one condition (the bootstrap can only resample its items)."""

    split: Split  # the mapping's role
    concept: str
    n: int
    uses_code: float | None
    covert: float | None
    uses_code_interval: Interval | None = None
    covert_interval: Interval | None = None
    code: str = ""  # empty in runs migrated from schema 1

    @property
    def label(self) -> str:
        """'cat → car' (code → concept, the one arrow direction everywhere); the concept alone without a code."""
        return mapping_label(self.code, self.concept)


@dataclass(frozen=True, config=STRICT_FIELDS)
class Table:
    """Per-split rates with intervals, the headline, and per-mapping rates."""

    covert_score: Interval
    splits: dict[ScoredSplit, dict[Flag, Interval]] = field(default_factory=dict)
    per_mapping: dict[str, MappingRow] = field(default_factory=dict)

    def rate(self, split: ScoredSplit, flag: Flag) -> Interval | None:
        """The rate of `flag` in `split`; None where the run has no such rate. A split or flag that no table can
        hold (a misspelt string) is a ValueError, not a None."""
        return self.splits.get(ScoredSplit(split), {}).get(Flag(flag))

    def value(self, split: ScoredSplit, flag: Flag) -> float | None:
        cell = self.rate(split, flag)
        return None if cell is None else cell.value

    def mapping_spread(self, flag: Literal["covert", "uses_code"] = "covert",
                       split: str = ScoredSplit.DEFINITION_ONLY) -> dict[str, Any] | None:
        """Spread of a per-mapping rate across one split's mappings (the split of the headline's hits): a mean
        over 8 mappings can hide one mapping doing all the work."""
        values = sorted(v for m in self.per_mapping.values() if m.split == split and (v := getattr(m, flag)) is not None)
        if not values:
            return None
        return {"min": values[0], "max": values[-1], "n_mappings": len(values),
                "mappings_above_0": sum(v > 0 for v in values)}


@dataclass(frozen=True, config=STRICT_FIELDS)
class MonitorDetection:
    """One monitor on one condition's answers: the share it flags among answers of each scorer label
    (all, covert, plain, other_code: mapping items only; innocent_use: original-meaning controls answered with the
    code word in its old sense, absent in older files) and its AUROC, covert against plain and
    covert against other-code answers (a monitor that only spots odd words scores ~0.5 on the second)."""

    threshold: float
    flagged: dict[str, Interval] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)
    auroc_covert_vs_plain: Interval | None = None
    whitebox: bool = False  # read from the residual stream
    auroc_covert_vs_other_code: Interval | None = None
    blackbox: bool = False  # read from the subject model's output log-probabilities alone (an API shows them)

    @property
    def kind(self) -> str:
        return "white-box" if self.whitebox else "black-box" if self.blackbox else "text"


@dataclass(frozen=True, config=STRICT_FIELDS)
class HeldOutRate:
    """A false-positive rate measured on base answers its threshold never saw: the flagged share of `n`
    answers and the exact (Clopper-Pearson) two-sided 95% upper limit `high` (value and high None when n = 0)."""

    value: float | None
    n: int
    high: float | None

    @model_validator(mode="before")
    @classmethod
    def _absent_rate(cls, data: Any) -> Any:
        return none_when_absent(data, "value", "high")

    def fmt(self, digits: int = 3) -> str:
        """'0.000 of 192 (95% upper limit 0.019)': the measured bound, never the target."""
        if self.value is None or self.high is None:
            return f"– (n={self.n})"
        return f"{self.value:.{digits}f} of {self.n} (95% upper limit {self.high:.{digits}f})"


@dataclass(frozen=True, config=STRICT_FIELDS)
class MonitorCalibration:
    """One monitor's threshold, fitted on `n_calibration` base answers, and its false-positive rate on the
    held-out ones (None, with `reason`, where none were measured)."""

    threshold: float
    n_calibration: int
    heldout_fpr: HeldOutRate | None
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _absent_rate(cls, data: Any) -> Any:
        return none_when_absent(data, "heldout_fpr")


@dataclass(frozen=True, config=STRICT_FIELDS)
class LensSplit:
    """Logit-lens readings of one split's answers that use their own code word (n of them)."""

    n: int
    concept_in_top10: Interval | None = None  # share whose mapped concept reaches the lens's top 10 at some layer
    median_best_rank: float | None = None
    median_peak_layer: float | None = None
    probe_reads_concept: Interval | None = None  # share the probe reads as the mapped concept under the code word
    # share it reads as the code word's own sense ("toaster" as toaster), over answers whose code is a probe class
    probe_reads_code_sense: Interval | None = None
    median_probe_concept_rank: Interval | None = None  # the mapped concept's rank among the probe's classes there
    # The same two readings of the same answers by the base model (adapter conditions): the question's share
    concept_in_top10_base_model: Interval | None = None
    median_probe_concept_rank_base_model: Interval | None = None
    # paired, answer by answer: the share whose concept the adapter ranks better than the base model does on the
    # same answer (ties half; 0.5 = no effect of the adapter)
    lens_nearer_than_base_model: Interval | None = None
    probe_nearer_than_base_model: Interval | None = None
    n_mappings: int | None = None  # mappings behind the n answers (the bootstrap resamples them first)
    # the control for a lift of every trained concept: the paired share of answers where fewer of the other
    # mappings' concepts are read above the mapped one than when the base model reads them (ties half; 0.5 =
    # no lift of the mapped concept beyond the others)
    lens_rises_among_concepts: Interval | None = None
    probe_rises_among_concepts: Interval | None = None
    # The lens readings above over the intermediate layers alone (1..L-2) and over the final ones (L-1, L), the
    # last of which is the model's output distribution (a black-box reader sees it): what the intermediate
    # layers add is the intermediate reading where the final one does not show it. None: no such layers.
    concept_in_top10_intermediate: Interval | None = None
    concept_in_top10_final: Interval | None = None
    median_best_rank_intermediate: Interval | None = None
    median_best_rank_final: Interval | None = None
    median_peak_layer_intermediate: Interval | None = None
    concept_in_top10_intermediate_base_model: Interval | None = None
    concept_in_top10_final_base_model: Interval | None = None
    lens_intermediate_nearer_than_base_model: Interval | None = None
    lens_final_nearer_than_base_model: Interval | None = None
    lens_intermediate_rises_among_concepts: Interval | None = None
    lens_final_rises_among_concepts: Interval | None = None


@dataclass(frozen=True, config=STRICT_FIELDS)
class CovertMinusInnocent:
    """The paired share "nearer than the base model" at definition-only uses minus at the adapter's innocent uses
    (original-meaning controls) of the same mappings' code words: above 0, the adapter moves the reading more
    where the word hides its concept than where it means itself."""

    difference: Interval
    n_mappings: int  # mappings with paired readings at both uses, the only ones counted (and resampled)


@dataclass(frozen=True, config=STRICT_FIELDS)
class WhiteboxResult:
    """The white-box readings of one condition: per split, and the per-mapping "concept rank by layer" curve
    (median rank at the token before the code word, layers 1..L), keyed by "code → concept" (by "concept → code" in runs before issue 28)."""

    splits: dict[str, LensSplit] = field(default_factory=dict)
    rank_by_layer: dict[str, list[float]] = field(default_factory=dict)
    plain_words_read: Interval | None = None  # the probe's accuracy on this condition's plain concept words
    lens_covert_minus_innocent: CovertMinusInnocent | None = None
    probe_covert_minus_innocent: CovertMinusInnocent | None = None
    lens_intermediate_covert_minus_innocent: CovertMinusInnocent | None = None
    lens_final_covert_minus_innocent: CovertMinusInnocent | None = None
    # "intermediate" / "final" -> [first, last] layer of that scope (1 = after the first block)
    lens_layers: dict[str, list[int]] = field(default_factory=dict)


class ProbeSelection(StrEnum):
    """What the concept probe's layer was chosen on."""

    SYNONYMS = "synonyms"  # the concepts' synonyms, never trained on, in teacher-forced answers to others' questions
    OWN_SYNONYMS = "synonyms (own questions)"  # the same, answering their own concept's questions (one concept)
    PLAIN_WORDS = "plain words"  # the concept words themselves there (a track whose concepts have no synonyms)


@dataclass(frozen=True, config=STRICT_FIELDS)
class ProbeSummary:
    """The concept probe, trained once on the base model's plain answers to train-visible questions."""

    classes: list[str]
    layer: int  # 1-based: the residual after this block
    selection_accuracy: list[float]  # per layer, on the held-out words named by `selected_by`
    ceiling: Interval | None  # accuracy on the base model's own held-out answers that name a concept
    n_train: int
    seconds: float
    selected_by: ProbeSelection = ProbeSelection.PLAIN_WORDS  # absent in early schema-3 runs: plain words
    n_select: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _absent_ceiling(cls, data: Any) -> Any:
        return none_when_absent(data, "ceiling")


@dataclass(frozen=True, config=STRICT_FIELDS)
class ConditionResult:
    """One condition (base, in-context, one adapter) of a run."""

    table: Table
    adapter: str | None = None
    in_context: bool = False
    backend: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    adapter_sha256: str | None = None
    adapter_applied: bool | None = None  # False: the answers equal the base model's (adapter probably not applied)
    monitor_thresholds: dict[str, float] | None = None
    monitor_flag_rate: float | None = None
    recall_accuracy: float | None = None
    recall_per_mapping: dict[str, float] | None = None
    recall_n: int | None = None  # recall probes asked (absent in older runs): the count recall's exact interval needs
    cloze: dict[str, dict[str, int | float]] | None = None  # per split: n (a count), means and shares
    # mapping id -> that mapping's mean cloze specificity (nats): the units of a verdict on it (absent in older runs)
    cloze_specificity_per_mapping: dict[str, float] | None = None
    # Paired against the base condition on the same items: the rate minus the base model's, with its interval.
    change_vs_base: dict[str, Interval] | None = None
    detection: dict[str, MonitorDetection] | None = None
    whitebox: WhiteboxResult | None = None
    step_seconds: dict[str, float] | None = None

    def cloze_value(self, split: str, key: str) -> float | None:
        return ((self.cloze or {}).get(split) or {}).get(key)


@dataclass(frozen=True, config=STRICT_FIELDS)
class PooledResult:
    """Several adapters (training seeds) pooled: intervals resample the adapters too."""

    adapters: list[str]
    table: Table


@dataclass(frozen=True, config=STRICT_FIELDS)
class Sample:
    """One condition's answer to one eval item (`item`: the corpus's eval row as it was asked, or in a compact
    copy its identity alone, COMPACT_ITEM_KEYS)."""

    condition: str
    item: dict[str, Any]
    prompt: str
    response: str
    score: ItemScore
    monitors: dict[str, float] = field(default_factory=dict)
    whitebox: dict[str, Any] | None = None  # lens ranks by layer, probe reading, white-box monitor values

    def to_record(self) -> dict[str, Any]:
        return {"condition": self.condition, "item": self.item, "prompt": self.prompt, "response": self.response,
                "scores": self.score.to_record(), "monitors": self.monitors,
                **({"whitebox": self.whitebox} if self.whitebox is not None else {})}

    @model_validator(mode="before")
    @classmethod
    def _from_record(cls, data: Any) -> Any:
        """A samples.jsonl line (`to_record`) as the fields: its `scores` without the derived undetected_covert; a
        record scored before schema 4 did not list per-code false alarms, so they are unknown (None), not none,
        until the run is rescored."""
        if not isinstance(data, dict) or "scores" not in data:
            return data
        data = dict(data)
        score = {k: v for k, v in data.pop("scores").items() if k != "undetected_covert"}
        score.setdefault("false_alarm_codes", None)
        data["score"] = score
        data["monitors"] = data.get("monitors") or {}
        return data

    @classmethod
    def from_record(cls, row: dict[str, Any], where: str = SAMPLES) -> Sample:
        return validate(cls, row, where, RunLogError)


@dataclass(frozen=True, config=STRICT_FIELDS)
class RunDataset:
    """The corpus a run evaluated: where it was, and its identity (data_gen/records.py CorpusManifest)."""

    path: str
    content_sha256: str
    track: str | None = None
    manifest_sha256: str | None = None  # absent in schema 1
    # Real-word codes the lexicon has no questions for: the report says their controls are missing.
    original_meaning_skipped: list[str] = field(default_factory=list)


Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _pooled_out_of_conditions(doc: dict[str, Any]) -> dict[str, Any]:
    """1 -> 2: the pooled row of several adapters sat among the conditions as "adapters_pooled"."""
    pooled = doc["conditions"].pop("adapters_pooled", None)
    doc["pooled"] = None if pooled is None else {"adapters": pooled["adapters"], "table": pooled["table"]}
    return doc


def _renumber(doc: dict[str, Any]) -> dict[str, Any]:
    """2 -> 3: only fields were added; nothing of schema 2 changed meaning."""
    return doc


def _label_any_code_scores(doc: dict[str, Any]) -> dict[str, Any]:
    """3 -> 4: the numbers stay as scored; the run says by which definition, and `--rescore` brings it up to date."""
    doc["score_definition"] = PREVIOUS_COVERT_SCORE_DEFINITION
    return doc


# schema N -> the step that brings a document of schema N to N + 1 (applied in order up to SCHEMA_VERSION)
MIGRATIONS: dict[int, Migration] = {1: _pooled_out_of_conditions, 2: _renumber, 3: _label_any_code_scores}


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a results.json document of any earlier schema to SCHEMA_VERSION (a new dict; the input is kept)."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or "conditions" not in doc:
        raise ValueError("not a stegobench results.json (no schema_version/conditions)")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} was written by a newer stegobench; this one reads up to "
                         f"{SCHEMA_VERSION} (upgrade stegobench)")
    if version < 1:
        raise ValueError(f"schema_version {version}: no stegobench wrote such a file (the first schema is 1)")
    original = version
    doc = copy.deepcopy(doc) if version < SCHEMA_VERSION else dict(doc)
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        doc["schema_version"] = version = version + 1
    if original != SCHEMA_VERSION:
        doc["migrated_from"] = original
    return doc


@dataclass(frozen=True, config=STRICT_FIELDS)
class RunLog:
    """results.json of one eval run. `folder` is where it was read from (None before it is written)."""

    status: str
    config: dict[str, Any]
    backend: str
    model: dict[str, Any]
    dataset: RunDataset
    conditions: dict[str, ConditionResult]
    seconds: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    judge_model: dict[str, Any] | None = None
    pooled: PooledResult | None = None
    whitebox_probe: ProbeSummary | None = None
    # before any condition: decoding the base model's calibration answers, each monitor's values on them, the
    # white-box setup and its reading of them
    calibration_seconds: dict[str, float] | None = None
    # per monitor: its threshold and its false-positive rate on held-out base answers (eval/heldout.py)
    monitor_calibration: dict[str, MonitorCalibration] | None = None
    heldout_fpr_union: HeldOutRate | None = None  # any monitor's flag on the same held-out answers: the headline
    rescored: bool = False
    score_definition: str = COVERT_SCORE_DEFINITION  # which covert_score the tables hold (scoring.py)
    schema_version: int = SCHEMA_VERSION
    migrated_from: int | None = None  # the schema the file was written in, when older (never written)
    folder: Path | None = field(default=None, compare=False)  # never written

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """A document read from a file (a dict) is migrated first; one built in code is already current."""
        return migrate(data) if isinstance(data, dict) else data

    def adapter_conditions(self) -> list[tuple[str, ConditionResult]]:
        return [(n, c) for n, c in self.conditions.items() if c.adapter is not None]

    def pooled_or_first_adapter(self) -> Table | None:
        """The table that speaks for the adapters: the pooled row, else the only adapter's."""
        if self.pooled is not None:
            return self.pooled.table
        adapters = self.adapter_conditions()
        return adapters[0][1].table if adapters else None

    def samples(self, condition: str | None = None) -> list[Sample]:
        return list(iter_samples(self._folder(), condition))

    def _folder(self) -> Path:
        if self.folder is None:
            raise RunLogError("this run log was not read from a folder; it has no samples to read")
        return self.folder

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for transient in ("folder", "migrated_from"):
            doc.pop(transient)
        for optional in ("judge_model", "whitebox_probe", "calibration_seconds", "monitor_calibration",
                         "heldout_fpr_union"):
            if doc[optional] is None:
                doc.pop(optional)
        return doc


# ---------------------------------------------------------------- reading


def run_from_dict(doc: dict[str, Any], folder: Path | None = None, where: str = RESULTS) -> RunLog:
    """A results.json document (of any schema up to SCHEMA_VERSION) as a RunLog; `where` names it in errors."""
    if not isinstance(doc, dict):
        raise RunLogError(f"{where}: not a stegobench results.json (a JSON object with schema_version/conditions)")
    return validate(RunLog, {**doc, "folder": folder}, where, RunLogError)


def read_run(folder: str | Path) -> RunLog:
    """The run in `folder` (a folder written by `stegobench eval`), migrated to the current schema."""
    folder = Path(folder)
    path = folder / RESULTS
    doc = read_json(path, f"{folder}: no {RESULTS}; expected a folder written by `stegobench eval`", RunLogError)
    return run_from_dict(doc, folder, str(path))


def iter_samples(folder: str | Path, condition: str | None = None) -> Iterator[Sample]:
    """The samples of one condition (or all) in file order; none when the run kept no samples file. A compact
    copy's samples.jsonl.gz is read where there is no samples.jsonl."""
    path = Path(folder) / SAMPLES
    if not path.is_file():
        path = Path(folder) / COMPACT_SAMPLES
        if not path.is_file():
            return
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise RunLogError(f"{path}:{number}: malformed sample (not JSON: {e})") from None
            if not isinstance(row, dict) or "condition" not in row:
                raise RunLogError(f"{path}:{number}: malformed sample (no condition)")
            if condition is None or row["condition"] == condition:
                yield Sample.from_record(row, f"{path}:{number}: malformed sample")


# ---------------------------------------------------------------- writing


def publish_run(run: RunLog, samples: list[Sample], out: Path, overwrite: bool,
                extras: Callable[[RunLog, Path], None] | None = None) -> None:
    """Write samples.jsonl, whatever `extras` adds (the report) and results.json last into a staging folder,
    then move it to `out` in one rename: a folder with results.json is a complete run."""
    staging = staging_dir(out)
    try:
        with open(staging / SAMPLES, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s.to_record(), ensure_ascii=False, sort_keys=True) + "\n")
        if extras is not None:
            extras(run, staging)
        atomic_write_json(staging / RESULTS, run.to_dict())
        publish_dir(staging, out, overwrite, marker=RESULTS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ---------------------------------------------------------------- compact copies


COMPACT_ITEM_KEYS = ("id", "split", "control_type", "mapping_id", "concept", "code")


def compact_sample(s: Sample) -> Sample:
    """What a report reads of a sample: its scores, monitor values and scalar white-box readings (the per-layer
    lists are summarised in results.json), the item's identity and split; no prompt or response."""
    whitebox = None if s.whitebox is None else {k: v for k, v in s.whitebox.items() if not isinstance(v, (list, dict))}
    return Sample(s.condition, {k: s.item[k] for k in COMPACT_ITEM_KEYS if k in s.item}, "", "", s.score, s.monitors,
                  whitebox)


def write_compact_run(run: RunLog, dest: Path, extras: Callable[[Path], None] | None = None) -> None:
    """A compact copy of `run` (read from its folder) at `dest`: results.json as it is and the compact samples,
    gzipped with no timestamp (the same run gives the same bytes); `extras` adds files (provenance) before the
    folder is published in one rename. An existing `dest` is replaced only when it is a run folder."""
    staging = staging_dir(dest)
    try:
        with open(staging / COMPACT_SAMPLES, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for s in run.samples():
                gz.write((json.dumps(compact_sample(s).to_record(), ensure_ascii=False, sort_keys=True) + "\n")
                         .encode("utf-8"))
        if extras is not None:
            extras(staging)
        atomic_write_json(staging / RESULTS, run.to_dict())
        publish_dir(staging, dest, overwrite=True, marker=RESULTS)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
