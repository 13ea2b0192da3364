"""Bring the leaderboard's stored results to the current scoring definitions without decoding again.

    stegobench leaderboard rescore --config configs/leaderboard/default.yaml

Every finished submission's run folder and every baseline's run folder is rescored from its samples
(`stegobench eval --rescore`), then the leaderboard rows are summarised again against the rescored baseline and
stored in one transaction. A row records the covert_score definition it was scored with (`score_definition`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stegobench.eval.harness import rescore

from .ranking import summarize_condition
from .worker import plots_beside_baseline

KEPT = ("private_split", "environment")  # what the worker added to a summary besides the numbers


def _condition_of(run) -> str:
    adapters = run.adapter_conditions()
    return adapters[0][0] if adapters else "base"


def rescore_leaderboard(store, n_resamples: int, seed: int) -> tuple[int, int]:
    """(results, baselines) rescored. Baselines first: every row's score is paired with its baseline's samples."""
    new_baselines: dict[str, dict[str, Any]] = {}
    for b in store.baselines_all():
        run_dir = Path(b["run_dir"])
        run = rescore(run_dir)
        new_baselines[b["key"]] = {
            name: summarize_condition(run, name, None if name == "base" else (run_dir, "base"), n_resamples, seed)
            for name in b["summary"] if name in run.conditions}
    new_results: dict[int, dict[str, Any]] = {}
    for sub in store.finished():
        run = rescore(sub["run_dir"])
        base = store.baseline(sub["baseline_key"])
        summary = summarize_condition(run, _condition_of(run), (base["run_dir"], "base"), n_resamples, seed)
        plots_beside_baseline(sub["run_dir"], base["run_dir"])  # rescoring redrew them without the baselines
        new_results[sub["id"]] = {**summary, **{k: sub["summary"][k] for k in KEPT if k in sub["summary"]}}
    store.replace_summaries(new_results, new_baselines)
    return len(new_results), len(new_baselines)
