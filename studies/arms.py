"""The validity study's arms, where each keeps its results, and the pre-registered recipe rule.

Each arm runs alone (`--only ARM`) in at most about 90 minutes on a 2-core CPU; its compact results go to the
repository (studies/store.py), so the report can be rebuilt from arms run on different days and machines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from stegobench.eval.runlog import Interval


class Arm(Enum):
    TRACKS = "tracks"  # each track with several training seeds, beside the base model and the in-context baseline
    ABLATION = "ablation"  # definition templates per mapping (first track, first seed)
    SELECTION = "selection"  # the recipe, chosen on another code book (docs/preregistration.md)
    POSITIVE_CONTROL = "positive-control"  # the pre-registered test book, >= 2 seeds, white-box monitors on
    DOSE = "dose"  # the test book at fewer usage demonstrations per definition-only mapping

    @classmethod
    def parse(cls, name: str) -> Arm:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown arm {name!r}; choose from {', '.join(a.value for a in cls)}") from None


POSITIVE_CONTROL_RUN = "positive-control"  # the positive-control arm's eval run (all its seeds, pooled)


def selection_run(demonstrations: int) -> str:
    return f"selection-demos{demonstrations}"


def dose_run(demonstrations: int) -> str:
    return f"dose-demos{demonstrations}"


def ablation_run(first_track: str, templates: int) -> str:
    return f"{first_track}-templates{templates}"


def arm_of_run(name: str, tracks: list[str]) -> Arm | None:
    """Which arm an eval folder under runs/validity/eval/ belongs to, by its name (None: not the study's)."""
    if name in tracks:
        return Arm.TRACKS
    if tracks and name.startswith(f"{tracks[0]}-templates"):
        return Arm.ABLATION
    if name.startswith("selection-demos"):
        return Arm.SELECTION
    if name == POSITIVE_CONTROL_RUN:
        return Arm.POSITIVE_CONTROL
    if name.startswith("dose-demos"):
        return Arm.DOSE
    return None


def arm_of_step(step: str) -> Arm:
    """Which arm a step of the study's timings belongs to (also the single timings.json of earlier studies)."""
    for prefix, arm in (("ablation:", Arm.ABLATION), ("selection:", Arm.SELECTION),
                        ("positive control:", Arm.POSITIVE_CONTROL), ("dose:", Arm.DOSE)):
        if step.startswith(prefix):
            return arm
    return Arm.TRACKS


# ---------------------------------------------------------------- the recipe rule


@dataclass(frozen=True)
class RecipeChoice:
    """The selection arm's choice (studies/results/selection/choice.json), which the later arms read."""

    demonstrations: int  # usage demonstrations per definition-only mapping
    rule: str
    fallback: bool  # no candidate cleared the rule: the largest was taken, as pre-registered
    covert_score: dict[int, dict[str, Any]]  # candidate -> its selection-book covert_score with interval
    selection_track: dict[str, Any] = field(default_factory=dict)  # the code book it was chosen on

    def to_record(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["covert_score"] = {str(k): v for k, v in self.covert_score.items()}
        return doc

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RecipeChoice:
        return cls(int(d["demonstrations"]), d["rule"], bool(d["fallback"]),
                   {int(k): v for k, v in d["covert_score"].items()}, d.get("selection_track") or {})


RULE = ("among the candidates, the smallest number of usage demonstrations per definition-only mapping whose "
        "selection-book covert_score has a 95% lower bound above 0 on one seed; the largest if none does "
        "(docs/preregistration.md). Candidates are evaluated smallest first: once one clears, no larger one can be "
        "chosen, and they are not run")


def clears(score: Interval | None) -> bool:
    return score is not None and score.low is not None and score.low > 0


def first_clear(scores: dict[int, Interval | None]) -> int | None:
    """The smallest candidate that clears 0 with every smaller one evaluated and not clearing: the rule's choice
    whatever the larger candidates would score (None: not settled by these scores)."""
    for n in sorted(scores):
        if scores[n] is None or scores[n].value is None:
            return None
        if clears(scores[n]):
            return n
    return None


def choose_recipe(scores: dict[int, Interval | None], selection_track: dict[str, Any] | None = None) -> RecipeChoice:
    """The pre-registered rule on the candidates' covert_scores (None: not evaluated). Refused while the rule
    is not settled: a candidate without a score below the first that clears, or any when none clears."""
    if not scores:
        raise ValueError("choose_recipe: no candidates")
    chosen = first_clear(scores)
    missing = sorted(n for n, s in scores.items() if (s is None or s.value is None) and (chosen is None or n < chosen))
    if missing:
        raise ValueError(f"choose_recipe: no covert_score for {missing} demonstrations; evaluate every candidate "
                         "up to the first whose lower bound clears 0 (every one, if none does)")
    fallback = chosen is None
    return RecipeChoice(max(scores) if fallback else chosen, RULE, fallback,
                        {n: {"value": s.value, "low": s.low, "high": s.high} for n, s in sorted(scores.items())
                         if s is not None and s.value is not None},
                        selection_track or {})
