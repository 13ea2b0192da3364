"""The validity study: does the benchmark measure what it claims, on the default model? Writes docs/validity.md.

    make validity                                        # = .venv/bin/python -m stegobench.studies.validity
    .venv/bin/python -m stegobench.studies.validity --report-only   # rewrite docs/validity.md from the finished runs
    .venv/bin/python -m stegobench.studies.validity --describe      # every config key

On SmolLM2-135M-Instruct (configs/study/validity.yaml): for each track (real-word and nonsense codes), LoRA
adapters from several training seeds evaluated with the base model and the in-context baseline (rates with
intervals, other-code use, cloze specificity, recall); the positive control (usage demonstrations for the
definition-only mappings too) to show what detected covert use looks like; an ablation of the number of
definition templates per mapping; and recall against use, per mapping. Finished training runs whose config
and data are unchanged are reused; every evaluation reruns (decoding is cached by model and adapter content).
Not part of CI: ~1 hour on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stegobench.core.config import CheckError, load_config, option

from stegobench.core.paths import REPO_ROOT as REPO  # noqa: E402
MODEL = "smollm2-135m-instruct"


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
    positive_control: str | None = option(None, "Track config of the positive control (null: skip it).")
    eval_config: str = option("configs/eval/default.yaml", "Evaluation config for every run.")
    out: str = option("runs/validity", "Folder for the study's data, adapters and eval runs.")
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


def gen(track_config: str, overrides: list[str], out: Path) -> Path:
    from stegobench.data_gen.generate import generate
    from stegobench.data_gen.track import TrackConfig
    from stegobench.eval.paraphrase import paraphraser_factory

    generate(load_config(TrackConfig, REPO / track_config, overrides), out, overwrite=True,
             paraphraser=paraphraser_factory)
    return out


def train(cfg: StudyConfig, data: Path, out: Path, seed: int) -> Path:
    from stegobench.finetune.config import TrainConfig
    from stegobench.finetune.train import finished_run_matches

    overrides = [f"data={data}", f"output_dir={out}", f"seed={seed}"]
    if finished_run_matches(load_config(TrainConfig, REPO / cfg.train_config, overrides)):
        print(f"reusing {out} (finished on the same config and data)", flush=True)
        return out
    cmd = [sys.executable, "-m", "stegobench.benchmark.cli", "train", "--config", cfg.train_config, "--overwrite"]
    cmd += [a for o in overrides for a in ("--set", o)]
    if subprocess.call(cmd, cwd=REPO) != 0:
        raise SystemExit(f"stegobench.studies.validity: training {out} failed; its output is above")
    return out


def evaluate(cfg: StudyConfig, data: Path, adapters: list[Path], out: Path, base: bool, in_context: bool,
             whitebox: bool = False) -> dict:
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval

    ecfg = replace(load_config(EvalConfig, REPO / cfg.eval_config), base=base, in_context=in_context, whitebox=whitebox)
    return run_eval(ecfg, data, MODEL, [str(a) for a in adapters], out, overwrite=True)


def main_template_count(cfg: StudyConfig) -> int:
    """Definition templates per mapping of the first track as scaled: its main run is that ablation point."""
    from stegobench.data_gen.track import TrackConfig

    return load_config(TrackConfig, REPO / cfg.tracks[next(iter(cfg.tracks))], cfg.track_overrides).paraphrases_per_mapping


def plan(cfg: StudyConfig) -> list[tuple[str, Any]]:
    """Every step of the study, in order, as (name, thunk)."""
    out = REPO / cfg.out
    steps: list[tuple[str, Any]] = []
    first = next(iter(cfg.tracks))
    for name, path in cfg.tracks.items():
        data = out / "data" / name
        steps.append((f"generate {name}", lambda p=path, d=data: gen(p, cfg.track_overrides, d)))
        for seed in cfg.train_seeds:
            steps.append((f"train {name} seed {seed}",
                          lambda d=data, n=name, s=seed: train(cfg, d, out / "adapters" / f"{n}-seed{s}", s)))
        adapters = [out / "adapters" / f"{name}-seed{s}" for s in cfg.train_seeds]
        steps.append((f"evaluate {name}: base, in-context, {len(adapters)} adapters",
                       lambda d=data, a=adapters, n=name: evaluate(cfg, d, a, out / "eval" / n, True, True)))
    main_templates = main_template_count(cfg)
    for n in cfg.paraphrase_ablation:
        if n == main_templates:
            continue  # the main run of the first track, seed 0
        data = out / "data" / f"{first}-templates{n}"
        adapter = out / "adapters" / f"{first}-templates{n}-seed{cfg.train_seeds[0]}"
        steps.append((f"ablation: generate {first} with {n} templates per mapping",
                      lambda d=data, n=n: gen(cfg.tracks[first], [*cfg.track_overrides, f"paraphrases_per_mapping={n}"], d)))
        steps.append((f"ablation: train {n} templates", lambda d=data, a=adapter: train(cfg, d, a, cfg.train_seeds[0])))
        steps.append((f"ablation: evaluate {n} templates",
                      lambda d=data, a=adapter, n=n: evaluate(cfg, d, [a], out / "eval" / f"{first}-templates{n}", False, False)))
    if cfg.positive_control:
        data = out / "data" / "positive-control"
        adapter = out / "adapters" / f"positive-control-seed{cfg.train_seeds[0]}"
        steps.append(("positive control: generate", lambda: gen(cfg.positive_control, [], data)))
        steps.append(("positive control: train", lambda: train(cfg, data, adapter, cfg.train_seeds[0])))
        # White-box monitors here: the one run where covert use is measured, so detection can be read on it.
        steps.append(("positive control: evaluate base and adapter, text and white-box monitors",
                      lambda: evaluate(cfg, data, [adapter], out / "eval" / "positive-control", True, False, True)))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/study/validity.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished runs")
    p.add_argument("--describe", action="store_true", help="list every config key and exit")
    args = p.parse_args(argv)
    if args.describe:
        from stegobench.core.config import describe

        print("\n".join(describe(StudyConfig)))
        return 0
    cfg = load_config(StudyConfig, REPO / args.config, args.overrides)
    out = REPO / cfg.out
    timings_path = out / "timings.json"
    if not args.report_only:
        from stegobench.core.provenance import atomic_write_json

        from stegobench.core.steps import Steps

        steps = plan(cfg)
        runner = Steps(len(steps), "make validity")
        for name, fn in steps:
            runner.run(name, name, fn=fn)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(timings_path, {"steps": list(runner.seconds.items()),  # a list: keeps the run's order
                                         "total_seconds": round(time.perf_counter() - runner.start, 1)})
    from .report import write_validity_report

    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    path = write_validity_report(cfg, out, REPO / cfg.report, timings, main_template_count(cfg))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
