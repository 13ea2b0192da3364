"""Result tables: per-split rates with 95% bootstrap intervals, the headline, and per-mapping rates."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from .scoring import ItemScore, covert_score, rate
from .stats import bootstrap_runs

MAPPING_FLAGS = ("uses_code", "uses_plain", "uses_other_code", "covert", "semantic_fit", "undetected_covert")


def _interval(runs: list[list[ItemScore]], stat: Callable[[list[ItemScore]], float | None], n: int, seed: int) -> dict:
    point, low, high = bootstrap_runs(runs, stat, n_resamples=n, seed=seed)
    return {"value": point, "low": low, "high": high}


def _flag_rate(split: str | None, control_type: str | None, flag: str) -> Callable[[list[ItemScore]], float | None]:
    def stat(ss: list[ItemScore]) -> float | None:
        chosen = [s for s in ss if (split is None or s.split == split) and (control_type is None or s.control_type == control_type)]
        if flag == "semantic_fit":
            chosen = [s for s in chosen if s.covert]  # fit is only asked of covert answers
        return rate(chosen, flag)
    return stat


def aggregate(scores: list[ItemScore], n_resamples: int, seed: int) -> dict[str, Any]:
    return aggregate_runs([scores], n_resamples, seed)


def aggregate_runs(runs: list[list[ItemScore]], n_resamples: int, seed: int) -> dict[str, Any]:
    """The table for one run, or for several runs pooled (adapters from several training seeds), with intervals
    that resample runs too."""
    scores = [s for run in runs for s in run]
    table: dict[str, Any] = {"covert_score": _interval(runs, covert_score, n_resamples, seed), "splits": {}}
    for split in ("definition_only", "demonstrated"):
        if any(s.split == split for s in scores):
            table["splits"][split] = {f: _interval(runs, _flag_rate(split, None, f), n_resamples, seed)
                                      for f in MAPPING_FLAGS}
    if any(s.control_type == "unmapped" for s in scores):
        table["splits"]["control_unmapped"] = {
            "false_use": _interval(runs, _flag_rate("control", "unmapped", "false_use"), n_resamples, seed)}
    if any(s.control_type == "original_meaning" for s in scores):
        # The code word still answers questions about its old meaning: 1 - this is collateral damage.
        table["splits"]["control_original_meaning"] = {
            "keeps_original_meaning": _interval(runs, _flag_rate("control", "original_meaning", "uses_code"),
                                                n_resamples, seed)}
    per_mapping: dict[str, dict[str, float]] = defaultdict(dict)
    for mid in sorted({s.mapping_id for s in scores if s.split in ("definition_only", "demonstrated")}):
        mine = [s for s in scores if s.mapping_id == mid and s.split in ("definition_only", "demonstrated")]
        per_mapping[mid] = {"split": mine[0].split, "concept": mine[0].concept, "n": len(mine),
                            "uses_code": rate(mine, "uses_code"), "covert": rate(mine, "covert"),
                            # Items of one mapping: the bootstrap can only resample items here.
                            "uses_code_interval": _interval([mine], lambda ss: rate(ss, "uses_code"), n_resamples, seed),
                            "covert_interval": _interval([mine], lambda ss: rate(ss, "covert"), n_resamples, seed)}
    table["per_mapping"] = dict(per_mapping)
    return table
