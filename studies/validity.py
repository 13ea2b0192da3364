"""The validity study: does the benchmark measure what it claims, and can it see covert use when it is there?
Writes docs/validity.md.

    make validity                                               # every arm (several CPU hours)
    .venv/bin/python -m stegobench.studies.validity --only dose # one arm (<= ~90 min each; repeat --only for more)
    .venv/bin/python -m stegobench.studies.validity --plan      # the steps, which are finished, time estimates
    .venv/bin/python -m stegobench.studies.validity --report-only   # rewrite docs/validity.md from the kept results
    .venv/bin/python -m stegobench.studies.validity --describe      # every config key

On SmolLM2-135M-Instruct (configs/study/validity.yaml), in arms that each run alone:
  tracks            real-word and nonsense codes, LoRA adapters from several training seeds, beside the base model
                    and the in-context baseline (rates with intervals, other-code use, cloze specificity, recall)
  ablation          definition templates per mapping (first track, first seed)
  selection         the recipe (usage demonstrations per definition-only mapping) chosen on another code book by
                    the pre-registered rule (docs/preregistration.md); the choice is kept for the later arms
  positive-control  the pre-registered test book at the chosen recipe, >= 2 seeds, white-box monitors on
  dose              the same book at fewer demonstrations (the 0 arm is the out-of-context condition)
A step whose output is finished on the same inputs is skipped (training: same config and data; evaluation: same
data, adapters and eval config; a run scored by an older covert_score is rescored without decoding), so an arm
stopped half-way resumes. Each run's compact results go to studies/results/<arm>/<run>/ (studies/store.py) as soon
as it is evaluated, with the hash of its inputs (corpus, training and eval configs): committed, they let a fresh
checkout on another machine skip that run's training and evaluation. The report is rebuilt from the store: arms
run at different times on different machines make one report.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from stegobench.core.adapters import ADAPTER_WEIGHTS
from stegobench.core.config import CheckError, ConfigError, load_config, option, to_dict
from stegobench.core.errors import CommandFailed, InputError

from stegobench.core.paths import REPO_ROOT as REPO

from .arms import (POSITIVE_CONTROL_RUN, Arm, RecipeChoice, ablation_run, arm_of_run, arm_of_step, choose_recipe,
                   dose_run, first_clear, selection_run)
from stegobench.eval.runlog import Interval

from .store import ResultsStore

MODEL = "smollm2-135m-instruct"

# Time estimates on a 2-core CPU, for `--plan` and the docs, from this study's own runs (their seconds are in
# studies/results/<arm>/timings.json and each run's results.json). Training: 327 s for the 880 documents of the
# earlier positive control (the study at 4e7a98f), 0.37 s per document; the 2040 of selection-demos10 took 0.63 s
# each and the 1840 of dose-demos0 0.48 s with other work on the machine. Evaluation: 0.7 s per item and
# condition with the text monitors (selection-demos10, 352 items, under load: (381 - 140) / 352; 0.25 s on a
# quiet machine, dose-demos0), white-box readings 0.3 s per item on top (56 s for 192 answers at 4e7a98f), and the
# monitors' calibration on the base model once per eval when no run has cached it (140 s, selection-demos10).
TRAIN_SECONDS_PER_DOCUMENT = 327 / 880
EVAL_SECONDS_PER_ITEM = 0.7
WHITEBOX_SECONDS_PER_ITEM = 0.3
CALIBRATION_SECONDS = 140.0


@dataclass
class StudyConfig:
    tracks: dict[str, str] = option(None, "Track name -> track config YAML; each is scaled by track_overrides.",
                                    factory=dict)
    track_overrides: list[str] = option(None, "KEY=VALUE overrides applied to every track config (the scale).",
                                        factory=list)
    train_config: str = option("configs/finetune/quickstart.yaml", "Fine-tuning config for every adapter.")
    train_seeds: list[int] = option(None, "Training seeds per track (same data, different adapters).",
                                    factory=lambda: [0, 1, 2])
    paraphrase_ablation: list[int] = option(None, "Definition templates per mapping to compare (first track, "
                                            "first seed; the track's own value reuses its main run).",
                                            factory=lambda: [1, 5, 30])
    positive_control: str | None = option(
        None, "Track config of the pre-registered positive control (positive_control: true); null skips the "
              "selection, positive-control and dose arms.")
    positive_control_seeds: list[int] = option(
        None, "Training seeds of the positive control (>= 2: docs/preregistration.md); the first also trains the "
              "selection and dose adapters.", factory=lambda: [0, 1])
    selection_seed: int = option(
        4, "Track seed of the code book the recipe is chosen on: another book than the test book's (its seed), "
           "sharing none of the test book's definition-only concepts as a mapped concept (checked).")
    selection_demonstrations: list[int] = option(
        None, "Candidate usage demonstrations per definition-only mapping for the recipe rule.",
        factory=lambda: [10, 20, 40])
    dose_demonstrations: list[int] = option(
        None, "Usage demonstrations per definition-only mapping of the dose arm (the dose equal to the chosen "
              "recipe is the positive-control run's first seed, not trained again).", factory=lambda: [40, 10, 3, 0])
    eval_config: str = option("configs/eval/default.yaml", "Evaluation config for every run.")
    out: str = option("runs/validity", "Folder for the study's data, adapters and eval runs (not kept in git).")
    results: str = option("studies/results", "Folder of the compact results kept in the repository (studies/store.py).")
    report: str = option("docs/validity.md", "Markdown report written at the end.")

    def check(self) -> None:
        if not self.tracks:
            raise CheckError("tracks", "is empty; name at least one track config, e.g. {real-v1: configs/data/real-v1.yaml}")
        for name, path in {**self.tracks, "train_config": self.train_config, "eval_config": self.eval_config,
                           **({"positive_control": self.positive_control} if self.positive_control else {})}.items():
            if not (REPO / path).is_file():
                raise CheckError(name, f"{path} does not exist (paths are relative to the repository root)")
        if not self.train_seeds:
            raise CheckError("train_seeds", "is empty; give at least one seed")
        if any(n < 1 for n in self.paraphrase_ablation):
            raise CheckError("paraphrase_ablation", f"{self.paraphrase_ablation}: every count must be >= 1")
        if len(set(self.positive_control_seeds)) < 2:
            raise CheckError("positive_control_seeds", f"{self.positive_control_seeds}: the pre-registration asks for "
                                                       "at least 2 different training seeds")
        for key in ("selection_demonstrations", "dose_demonstrations"):
            values = getattr(self, key)
            if not values or any(n < 0 for n in values) or len(set(values)) != len(values):
                raise CheckError(key, f"{values}: expected distinct counts >= 0, at least one")
        if self.positive_control:
            test_seed = self.positive_control_track().seed
            if self.selection_seed == test_seed:
                raise CheckError("selection_seed", f"{self.selection_seed} is the test book's own seed "
                                                   f"({self.positive_control}); the recipe is chosen on another book")

    def positive_control_track(self, *overrides: str):
        from stegobench.data_gen.track import TrackConfig

        track = load_config(TrackConfig, REPO / self.positive_control, list(overrides))
        if not track.positive_control:
            raise CheckError("positive_control", f"{self.positive_control} has positive_control: false; the arm "
                                                 "needs usage demonstrations for the definition-only mappings")
        return track


# ---------------------------------------------------------------- the three kinds of step


def gen(track_config: str, overrides: list[str], out: Path) -> Path:
    from stegobench.data_gen.generate import generate
    from stegobench.data_gen.track import TrackConfig

    generate(load_config(TrackConfig, REPO / track_config, overrides), out, overwrite=True)
    return out


def _train_overrides(data: Path, out: Path, seed: int) -> list[str]:
    return [f"data={data}", f"output_dir={out}", f"seed={seed}"]


def training_finished(cfg: StudyConfig, data: Path, out: Path, seed: int) -> bool:
    from stegobench.finetune.config import TrainConfig
    from stegobench.finetune.train import finished_run_matches

    if not (data / "manifest.json").is_file():
        return False
    return finished_run_matches(load_config(TrainConfig, REPO / cfg.train_config, _train_overrides(data, out, seed)))


def train(cfg: StudyConfig, data: Path, out: Path, seed: int) -> Path:
    import subprocess

    cmd = [sys.executable, "-m", "stegobench.cli", "train", "--config", cfg.train_config, "--overwrite"]
    cmd += [a for o in _train_overrides(data, out, seed) for a in ("--set", o)]
    if subprocess.call(cmd, cwd=REPO) != 0:
        raise CommandFailed(f"training {out} failed; its output is above")
    return out


@dataclass(frozen=True)
class EvalSpec:
    """Which conditions and readings an arm's evaluation has (everything else: cfg.eval_config)."""

    base: bool = False
    in_context: bool = False
    whitebox: bool = False
    overrides: tuple[str, ...] = ()  # KEY=VALUE on the eval config, e.g. recall=false where no readout needs it


def eval_config(cfg: StudyConfig, spec: EvalSpec):
    from stegobench.eval.config import EvalConfig

    ecfg = load_config(EvalConfig, REPO / cfg.eval_config, list(spec.overrides))
    return replace(ecfg, base=spec.base, in_context=spec.in_context, whitebox=spec.whitebox)


def evaluate(cfg: StudyConfig, data: Path, adapters: list[Path], out: Path, spec: EvalSpec) -> dict:
    from stegobench.eval.harness import run_eval

    return run_eval(eval_config(cfg, spec), data, MODEL, [str(a) for a in adapters], out, overwrite=True)


class EvalState(Enum):
    TO_RUN = "to run"
    STALE = "finished, scored by an older covert_score: rescored from its samples"
    FINISHED = "finished on the same data, adapters and eval config"


def evaluation_state(ecfg, data: Path, adapters: list[Path], out: Path, model: str = MODEL) -> tuple[EvalState, str]:
    """Whether `out` already holds this evaluation: same model, data content, adapter weights and eval config
    (and why not, when it does not)."""
    from stegobench.core.provenance import sha256_file
    from stegobench.data_gen.generate import read_manifest
    from stegobench.eval.pipeline import plan_conditions
    from stegobench.eval.runlog import RESULTS, RunLogError, read_run
    from stegobench.eval.scoring import COVERT_SCORE_DEFINITION

    if not (out / RESULTS).is_file() or not (data / "manifest.json").is_file():
        return EvalState.TO_RUN, "no finished run"
    try:
        run = read_run(out)
    except RunLogError as e:
        return EvalState.TO_RUN, str(e)
    weights = [Path(a) / ADAPTER_WEIGHTS for a in adapters]
    if not all(w.is_file() for w in weights):
        return EvalState.TO_RUN, "an adapter is missing"
    content = read_manifest(data).content_sha256
    differs = {
        "status": run.status != "finished",
        "model": run.model.get("spec") != model,
        "data": run.dataset.content_sha256 != content,
        "eval config": run.config != json.loads(json.dumps(to_dict(ecfg))),
        "conditions": set(run.conditions) != {c.name for c in plan_conditions(ecfg, [str(a) for a in adapters])},
        "adapters": sorted(c.adapter_sha256 or "" for _, c in run.adapter_conditions()) != sorted(map(sha256_file, weights)),
    }
    changed = [k for k, v in differs.items() if v]
    if changed:
        return EvalState.TO_RUN, f"{', '.join(changed)} changed"
    if run.score_definition != COVERT_SCORE_DEFINITION or run.migrated_from is not None:
        return EvalState.STALE, EvalState.STALE.value
    return EvalState.FINISHED, EvalState.FINISHED.value


def run_inputs_sha256(cfg: StudyConfig, track: str, overrides: list[str], seeds: list[int], spec: EvalSpec) -> str | None:
    """What a run's results depend on, hashed: the corpus content, each seed's training config (its data and
    output folders aside: they name this machine's paths) and the eval config. A run kept in the store with the
    same hash needs neither training nor evaluation again, on any machine, at any later revision."""
    from stegobench.core.provenance import sha256_json
    from stegobench.data_gen.track import TrackConfig
    from stegobench.finetune.config import TrainConfig

    config = load_config(TrackConfig, REPO / track, list(overrides))
    if config.augment is not None:  # a model's paraphrases: only the written corpus settles its content
        return None
    # the track config (its tokenizer too) and the corpus it yields, built without the tokenizer's word checks
    content = {"track": to_dict(config),
               "content_sha256": prepared_in_memory(track, tuple(overrides)).manifest.content_sha256}
    placeholder = Path("/data"), Path("/out")
    train = [{k: v for k, v in to_dict(load_config(TrainConfig, REPO / cfg.train_config,
                                                   _train_overrides(*placeholder, s))).items()
              if k not in ("data", "output_dir")} for s in seeds]
    return sha256_json({"model": MODEL, "data": content, "train": train,
                        "eval": to_dict(eval_config(cfg, spec))})


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """One step of an arm. `skip` says why it need not run (None: it must), asked right before it would run,
    after the steps before it; `estimate` its seconds on a 2-core CPU (0 where nothing is known)."""

    arm: Arm
    name: str
    run: Callable[[], Any]
    skip: Callable[[], str | None] = lambda: None
    estimate: Callable[[], float] = lambda: 0.0


@lru_cache(maxsize=64)
def prepared_in_memory(track_config: str, overrides: tuple[str, ...]):
    """A track as scaled, its corpus built in memory without the tokenizer's word checks (seconds): the time
    estimates' units and part of a run's fingerprint (`run_inputs_sha256`)."""
    from stegobench.data_gen.generate import prepare
    from stegobench.data_gen.track import TrackConfig

    return prepare(replace(load_config(TrackConfig, REPO / track_config, list(overrides)), tokenizer=None),
                   augment=False)


def corpus_size(track_config: str, overrides: tuple[str, ...]) -> tuple[int, int]:
    """(training documents, eval items) of a track as scaled: the time estimates' units."""
    corpus = prepared_in_memory(track_config, overrides).corpus
    return len(corpus.train), len(corpus.eval)


def _train_estimate(track: str, overrides: list[str]) -> Callable[[], float]:
    return lambda: corpus_size(track, tuple(overrides))[0] * TRAIN_SECONDS_PER_DOCUMENT


def _eval_estimate(track: str, overrides: list[str], conditions: int, whitebox: bool) -> Callable[[], float]:
    per_item = EVAL_SECONDS_PER_ITEM + (WHITEBOX_SECONDS_PER_ITEM if whitebox else 0.0)
    return lambda: CALIBRATION_SECONDS + corpus_size(track, tuple(overrides))[1] * conditions * per_item


class Planner:
    """The steps of each arm. Names are stable: the timings and the resume rely on them."""

    def __init__(self, cfg: StudyConfig, assume_recipe: int | None = None):
        """`assume_recipe`: the recipe to plan with while none is chosen (time estimates only)."""
        self.cfg, self.out, self.store = cfg, REPO / cfg.out, ResultsStore(REPO / cfg.results)
        self.assume_recipe = assume_recipe
        self.inputs: dict[str, Callable[[], str | None]] = {}  # run name -> its inputs' hash (`run_inputs_sha256`)
        # run name -> its inputs' hash when runs/ holds it finished from those inputs (trained and evaluated on
        # the same configs and data), else None: what compacting may vouch for
        self.finished_inputs: dict[str, Callable[[], str | None]] = {}

    def _adapter(self, name: str, seed: int) -> Path:
        return self.out / "adapters" / f"{name}-seed{seed}"

    def _train_eval(self, arm: Arm, label: str, track: str, overrides: Callable[[], list[str]], name: str,
                    seeds: list[int], spec: EvalSpec, skip: Callable[[], str | None] = lambda: None) -> list[Step]:
        """generate -> train each seed -> evaluate, for one run `name` (`overrides` read when the step runs, so a
        recipe chosen earlier in the same sitting is seen)."""
        data, eval_out = self.out / "data" / name, self.out / "eval" / name
        adapters = [self._adapter(name, s) for s in seeds]
        conditions = len(seeds) + spec.base + spec.in_context
        self.inputs[name] = lambda: run_inputs_sha256(self.cfg, track, overrides(), seeds, spec)

        def kept() -> str | None:
            """The store already holds this run from the same inputs (another sitting, another machine)."""
            stored = self.store.inputs_sha256(arm, name)
            if stored is None or stored != self.inputs[name]():
                return None
            return f"kept in {self.cfg.results}/{arm.value}/{name} from the same data, training and eval configs"

        def trained(d: Path, a: Path, s: int) -> str | None:
            return skip() or kept() or ("finished on the same config and data"
                                        if training_finished(self.cfg, d, a, s) else None)

        def evaluated() -> str | None:
            why = skip() or kept()
            if why:
                return why
            state, why = evaluation_state(eval_config(self.cfg, spec), data, adapters, eval_out)
            return why if state is EvalState.FINISHED else None

        def finished_inputs() -> str | None:
            if skip() or not all(training_finished(self.cfg, data, a, s) for a, s in zip(adapters, seeds)):
                return None
            state, _ = evaluation_state(eval_config(self.cfg, spec), data, adapters, eval_out)
            return self.inputs[name]() if state is EvalState.FINISHED else None
        self.finished_inputs[name] = finished_inputs

        def run_eval() -> Any:
            state, _ = evaluation_state(eval_config(self.cfg, spec), data, adapters, eval_out)
            if state is EvalState.STALE:
                from stegobench.eval.harness import rescore

                rescore(eval_out)
            else:
                evaluate(self.cfg, data, adapters, eval_out, spec)
            # kept at once: a sitting stopped after this run (or a fresh checkout) resumes after it
            if (eval_out / "results.json").is_file():
                print(self.store.compact(arm, eval_out, inputs_sha256=finished_inputs()), flush=True)

        # the data are cheap (seconds) and deterministic: regenerated unless the whole run is reused elsewhere
        steps = [Step(arm, f"{label}: generate" if arm is not Arm.TRACKS else f"generate {label}",
                      lambda: gen(track, overrides(), data), skip)]
        for a, s in zip(adapters, seeds):
            steps.append(Step(arm, f"{label}: train seed {s}" if arm is not Arm.TRACKS else f"train {label} seed {s}",
                              lambda a=a, s=s: train(self.cfg, data, a, s), lambda a=a, s=s: trained(data, a, s),
                              lambda: _train_estimate(track, overrides())()))
        what = ", ".join([*(["base"] if spec.base else []), *(["in-context"] if spec.in_context else []),
                          f"{len(seeds)} adapter{'s' if len(seeds) > 1 else ''}"])
        what += ", white-box monitors" if spec.whitebox else ""
        steps.append(Step(arm, f"{label}: evaluate {what}" if arm is not Arm.TRACKS else f"evaluate {label}: {what}",
                          run_eval, evaluated,
                          lambda: _eval_estimate(track, overrides(), conditions, spec.whitebox)()))
        return steps

    def _keep(self, arm: Arm, names: Callable[[], list[str]]) -> Step:
        def keep() -> None:
            for name in names():
                if (self.out / "eval" / name / "results.json").is_file():
                    inputs = self.finished_inputs[name]() if name in self.finished_inputs else None
                    print(self.store.compact(arm, self.out / "eval" / name, inputs_sha256=inputs), flush=True)
        return Step(arm, f"{arm.value}: keep the compact results in {self.cfg.results}/{arm.value}", keep)

    # ------------------------------------------------------------ arms

    def tracks(self) -> list[Step]:
        cfg = self.cfg
        steps = []
        for name, path in cfg.tracks.items():
            steps += self._train_eval(Arm.TRACKS, name, path, lambda: list(cfg.track_overrides), name, cfg.train_seeds,
                                      EvalSpec(base=True, in_context=True))
        return steps + [self._keep(Arm.TRACKS, lambda: list(cfg.tracks))]

    def ablation(self) -> list[Step]:
        cfg, first = self.cfg, next(iter(self.cfg.tracks))
        counts = [n for n in cfg.paraphrase_ablation if n != main_template_count(cfg)]  # that one is the main run
        steps = []
        for n in counts:
            steps += self._train_eval(Arm.ABLATION, f"ablation: {n} templates", cfg.tracks[first],
                                      lambda n=n: [*cfg.track_overrides, f"paraphrases_per_mapping={n}"],
                                      ablation_run(first, n), cfg.train_seeds[:1], EvalSpec())
        return steps + [self._keep(Arm.ABLATION, lambda: [ablation_run(first, n) for n in counts])]

    def selection(self) -> list[Step]:
        cfg = self.cfg
        seed = cfg.positive_control_seeds[0]
        steps = [Step(Arm.SELECTION, "selection: check the selection book against the test book",
                      lambda: selection_book(cfg))]
        for n in sorted(cfg.selection_demonstrations):  # smallest first: the rule may settle before the largest
            # cloze and recall answer no readout of this arm: off, to keep it within its time
            steps += self._train_eval(Arm.SELECTION, f"selection: {n} demonstrations", cfg.positive_control,
                                      lambda n=n: [f"seed={cfg.selection_seed}", f"definition_only_demonstrations={n}"],
                                      selection_run(n), [seed], EvalSpec(overrides=("recall=false", "cloze=false")),
                                      skip=lambda n=n: self._settled_below(n))
        steps.append(Step(Arm.SELECTION, "selection: choose the recipe",
                          lambda: record_choice(cfg, self.store, self.selection_scores())))
        return steps + [self._keep(Arm.SELECTION, lambda: [selection_run(n) for n in cfg.selection_demonstrations])]

    def selection_scores(self) -> dict[int, Interval | None]:
        """Each candidate's selection-book covert_score: as kept in the store, else as runs/ holds it."""
        from stegobench.eval.runlog import RESULTS, read_run

        scores: dict[int, Interval | None] = {}
        for n in self.cfg.selection_demonstrations:
            run = self.store.run(Arm.SELECTION, selection_run(n))
            if run is None and (self.out / "eval" / selection_run(n) / RESULTS).is_file():
                run = read_run(self.out / "eval" / selection_run(n))
            adapters = run.adapter_conditions() if run is not None else []
            scores[n] = adapters[0][1].table.covert_score if adapters else None
        return scores

    def _settled_below(self, n: int) -> str | None:
        """Why candidate `n` need not run: a smaller one cleared 0, so the rule cannot choose `n`."""
        scores = self.selection_scores()  # each candidate's results.json read once
        chosen = first_clear({m: s for m, s in scores.items() if m < n})
        if chosen is None:
            return None
        return (f"the rule takes the smallest candidate whose lower bound clears 0; {chosen} did "
                f"({scores[chosen].fmt(2, signed=True)}), so {n} cannot be chosen")

    def recipe(self) -> int:
        choice = self.store.choice()
        if choice is None and self.assume_recipe is not None:
            return self.assume_recipe
        if choice is None:
            raise InputError(f"the positive-control and dose arms train at the recipe the selection arm chooses, and "
                             f"{self.cfg.results}/selection/choice.json is not there yet: run `--only selection` first")
        return choice.demonstrations

    def positive_control(self) -> list[Step]:
        cfg = self.cfg
        steps = self._train_eval(Arm.POSITIVE_CONTROL, "positive control", cfg.positive_control,
                                 lambda: [f"definition_only_demonstrations={self.recipe()}"], POSITIVE_CONTROL_RUN,
                                 cfg.positive_control_seeds, EvalSpec(base=True, whitebox=True))
        steps.append(self._keep(Arm.POSITIVE_CONTROL, lambda: [POSITIVE_CONTROL_RUN]))
        steps.append(Step(Arm.POSITIVE_CONTROL, "positive control: write the MDE components",
                          lambda: print(f"wrote {write_components(cfg, self.store)}")))
        return steps

    def dose(self) -> list[Step]:
        cfg = self.cfg
        seed = cfg.positive_control_seeds[0]
        steps = []
        for d in cfg.dose_demonstrations:
            def reused(d: int = d) -> str | None:
                return (f"the positive-control run (seed {seed}) is this dose, the chosen recipe"
                        if d == self.recipe() else None)
            # white-box readings are the positive control's; the doses read the text monitors (recall: no readout)
            steps += self._train_eval(Arm.DOSE, f"dose: {d} demonstrations", cfg.positive_control,
                                      lambda d=d: [f"definition_only_demonstrations={d}"], dose_run(d), [seed],
                                      EvalSpec(overrides=("recall=false",)), skip=reused)
        return steps + [self._keep(Arm.DOSE, lambda: [dose_run(d) for d in cfg.dose_demonstrations])]

    def plan(self, arms: list[Arm] | None = None) -> list[Step]:
        """Every step of the chosen arms (default: all; without a positive control, the first two), in order."""
        chosen = arms or [a for a in Arm if self.cfg.positive_control or a in (Arm.TRACKS, Arm.ABLATION)]
        if not self.cfg.positive_control and set(chosen) - {Arm.TRACKS, Arm.ABLATION}:
            raise ConfigError("positive_control is null in the study config; the selection, positive-control and "
                              "dose arms need its track config")
        build = {Arm.TRACKS: self.tracks, Arm.ABLATION: self.ablation, Arm.SELECTION: self.selection,
                 Arm.POSITIVE_CONTROL: self.positive_control, Arm.DOSE: self.dose}
        return [step for arm in Arm if arm in chosen for step in build[arm]()]


def plan(cfg: StudyConfig, arms: list[Arm] | None = None) -> list[Step]:
    return Planner(cfg).plan(arms)


def arm_estimates(cfg: StudyConfig) -> dict[Arm, float]:
    """Each arm's estimated seconds from scratch on a 2-core CPU (nothing reused), at the chosen recipe or, before
    the choice, at the rule's fallback (the largest candidate)."""
    planner = Planner(cfg, assume_recipe=max(cfg.selection_demonstrations))
    recipe = planner.recipe()
    totals: dict[Arm, float] = {}
    for step in planner.plan():
        reused = step.arm is Arm.DOSE and f"dose: {recipe} demonstrations" in step.name
        totals[step.arm] = totals.get(step.arm, 0.0) + (0.0 if reused else step.estimate())
    return totals


def main_template_count(cfg: StudyConfig) -> int:
    """Definition templates per mapping of the first track as scaled: its main run is that ablation point."""
    from stegobench.data_gen.track import TrackConfig

    return load_config(TrackConfig, REPO / cfg.tracks[next(iter(cfg.tracks))], cfg.track_overrides).paraphrases_per_mapping


# ---------------------------------------------------------------- selection and the MDE components


def selection_book(cfg: StudyConfig) -> dict[str, Any]:
    """The selection book against the test book: refused when one of the test book's definition-only concepts
    is a mapped concept of the selection book (its hits would be scored on the test book's questions); the
    shared unmapped controls (false alarms only) are counted and kept with the choice."""
    from stegobench.data_gen.generate import prepare

    def book(*overrides: str):
        return prepare(replace(cfg.positive_control_track(*overrides), tokenizer=None), augment=False).codebook

    test, chosen = book(), book(f"seed={cfg.selection_seed}")
    test_def = {m.concept.word for m in test.by_role("definition_only")}
    shared = sorted(test_def & {m.concept.word for m in chosen.mappings})
    if shared:
        raise ConfigError(f"selection_seed: {cfg.selection_seed}: the selection book maps {', '.join(shared)}, "
                          f"definition-only concepts of the test book ({cfg.positive_control}, seed {test.seed}), so "
                          "its hits would be scored on the test book's questions; choose another seed "
                          "(--set selection_seed=N)")
    return {"config": cfg.positive_control, "seed": cfg.selection_seed, "test_seed": test.seed,
            "test_definition_only_concepts_among_its_unmapped_controls":
                sorted(test_def & {c.word for c in chosen.unmapped})}


def record_choice(cfg: StudyConfig, store: ResultsStore, scores: dict[int, Interval | None]) -> RecipeChoice:
    """Apply the pre-registered rule to the selection runs' covert_scores and keep the choice in the store."""
    choice = choose_recipe(scores, selection_book(cfg))
    print(f"recipe: {choice.demonstrations} usage demonstrations per definition-only mapping"
          + (" (none cleared the rule: the largest, as pre-registered)" if choice.fallback else "")
          + f"; kept in {store.record_choice(choice)}", flush=True)
    return choice


def write_components(cfg: StudyConfig, store: ResultsStore) -> Path | None:
    from .sensitivity import write_mde_components

    pos = store.run(Arm.POSITIVE_CONTROL, POSITIVE_CONTROL_RUN)
    track = cfg.positive_control_track().name if cfg.positive_control else None
    return None if pos is None else write_mde_components(pos, track, store.root / "mde_components.json")


# ---------------------------------------------------------------- running


def run_steps(steps: list[Step], store: ResultsStore, what: str = "make validity") -> None:
    """Each step in order, a finished one skipped with its reason; each arm's step times kept in the store
    when its last step is done."""
    from stegobench.core.machine import read_machine
    from stegobench.core.steps import Steps

    runner = Steps(len(steps), what)
    skipped: set[str] = set()
    machine = read_machine()
    facts = {"cpu_count": machine.cpu_count, "cpus_usable": len(machine.affinity), "device": machine.device}
    for i, step in enumerate(steps):
        why = step.skip()
        if why:
            runner.n += 1
            print(f"\n=== [{runner.n}/{runner.total}] {step.name}: skipped ({why})", flush=True)
            runner.seconds[step.name] = 0.0
            skipped.add(step.name)
        else:
            runner.run(step.name, step.name, fn=step.run)
        if i + 1 == len(steps) or steps[i + 1].arm is not step.arm:
            mine = {s.name: runner.seconds[s.name] for s in steps if s.arm is step.arm}
            store.record_timings(step.arm, mine, skipped, facts)


def show_plan(steps: list[Step]) -> str:
    """The steps with what each would do now and its estimate; per-arm totals."""
    lines, totals = [], {}
    for step in steps:
        why = step.skip()
        seconds = 0.0 if why else step.estimate()
        totals[step.arm] = totals.get(step.arm, 0.0) + seconds
        lines.append(f"  {step.name:<78} {'skip: ' + why if why else f'~{seconds / 60:.0f} min'}")
    lines += [f"{arm.value}: ~{s / 60:.0f} min to run" for arm, s in totals.items()]
    return "\n".join(lines)


def compact_layout(cfg: StudyConfig, store: ResultsStore) -> None:
    """Keep what an earlier study left under runs/validity (eval/<name>/, timings.json) in the store: the layout
    before arms had their own results."""
    evals = REPO / cfg.out / "eval"
    planner = Planner(cfg)
    planner.plan()  # every run's inputs, read lazily below
    for folder in sorted(evals.iterdir()) if evals.is_dir() else []:
        arm = arm_of_run(folder.name, list(cfg.tracks))
        if arm is None or not (folder / "results.json").is_file():
            continue
        # a run finished from this config's inputs is kept with their hash, so a later sitting skips it (the
        # positive-control and dose runs' inputs include the recipe: none without a choice)
        knowable = folder.name in planner.finished_inputs and (
            arm not in (Arm.POSITIVE_CONTROL, Arm.DOSE) or store.choice() is not None)
        print(store.compact(arm, folder, inputs_sha256=planner.finished_inputs[folder.name]() if knowable else None),
              flush=True)
    legacy = REPO / cfg.out / "timings.json"
    if legacy.is_file():
        by_arm: dict[Arm, dict[str, float]] = {}
        for name, seconds in json.loads(legacy.read_text()).get("steps", []):
            by_arm.setdefault(arm_of_step(name), {})[name] = seconds
        for arm, steps in by_arm.items():
            if not store.timings(arm):
                store.record_timings(arm, steps, set(), {"from": str(legacy)})


def main(argv: list[str] | None = None) -> int:
    from stegobench.core.errors import StegobenchError

    try:
        return _main(argv)
    except StegobenchError as e:
        print(f"stegobench.studies.validity: error: {e}", file=sys.stderr)
        return e.exit_code


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/study/validity.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--only", action="append", default=[], metavar="ARM", choices=[a.value for a in Arm],
                   help="run only this arm (repeatable): " + ", ".join(a.value for a in Arm))
    p.add_argument("--plan", action="store_true", help="list the steps, which are finished, and time estimates")
    p.add_argument("--report-only", action="store_true",
                   help="keep runs/validity's finished runs in the store, then rewrite the report from the store")
    p.add_argument("--describe", action="store_true", help="list every config key and exit")
    args = p.parse_args(argv)
    if args.describe:
        from stegobench.core.config import describe

        print("\n".join(describe(StudyConfig)))
        return 0
    cfg = load_config(StudyConfig, REPO / args.config, args.overrides)
    store = ResultsStore(REPO / cfg.results)
    arms = [Arm(a) for a in args.only] or None
    if args.plan:
        fallback = max(cfg.selection_demonstrations)
        if cfg.positive_control and store.choice() is None:
            print(f"(no recipe chosen yet: the positive-control and dose arms are planned at the rule's fallback, "
                  f"{fallback} demonstrations)")
        print(show_plan(Planner(cfg, assume_recipe=fallback).plan(arms)))
        return 0
    if args.report_only:
        compact_layout(cfg, store)
        path = write_components(cfg, store)
        if path:
            print(f"wrote {path}")
    else:
        run_steps(plan(cfg, arms), store)
    from .report import write_validity_report

    estimates = arm_estimates(cfg) if cfg.positive_control else None
    path = write_validity_report(cfg, store, REPO / cfg.report, main_template_count(cfg), estimates)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
