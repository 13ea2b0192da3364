"""95% intervals by a two-level bootstrap: resample mappings (or control concepts), then items within them.

Items of one mapping share a code word and a concept, so they are not independent; resampling mappings first
makes the interval honest about how few mappings a track has (Treutlein et al. 2024 resample the same way).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, Sequence, TypeVar

from eval.scoring import ItemScore

T = TypeVar("T")

N_RESAMPLES = 2000  # enough for stable 2.5%/97.5% quantiles (Monte-Carlo error well under a point)


def cluster_of(score: ItemScore) -> str:
    """Mapping items cluster by mapping; unmapped controls by their concept."""
    return score.mapping_id or f"concept:{score.concept}"


def _two_level_resample(items: Sequence[T], cluster: Callable[[T], str], rng: random.Random) -> list[T]:
    groups: dict[str, list[T]] = defaultdict(list)
    for it in items:
        groups[cluster(it)].append(it)
    keys = sorted(groups)
    out: list[T] = []
    for _ in keys:
        group = groups[rng.choice(keys)]
        out.extend(rng.choice(group) for _ in group)
    return out


def bootstrap_interval(
    scores: Sequence[ItemScore],
    statistic: Callable[[list[ItemScore]], float | None],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """(point, low, high) of `statistic`; each stratum (split x control type) is resampled on its own so every
    replicate keeps the same mix of definition-only items and controls as the data."""
    point = statistic(list(scores))
    if point is None:
        return None, None, None
    strata: dict[tuple[str, str], list[ItemScore]] = defaultdict(list)
    for s in scores:
        strata[(s.split, s.control_type)].append(s)
    rng = random.Random(seed)
    values = []
    for _ in range(n_resamples):
        sample = [x for key in sorted(strata) for x in _two_level_resample(strata[key], cluster_of, rng)]
        v = statistic(sample)
        if v is not None:
            values.append(v)
    values.sort()
    tail = (1 - level) / 2
    low = values[int(tail * (len(values) - 1))]
    high = values[int(round((1 - tail) * (len(values) - 1)))]
    return point, low, high
