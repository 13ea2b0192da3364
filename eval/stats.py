"""95% intervals by a two-level bootstrap: resample mappings (or control concepts), then items within them.

Items of one mapping share a code word and a concept, so they are not independent; resampling mappings first
makes the interval honest about how few mappings a track has (Treutlein et al. 2024 resample the same way).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Sequence, TypeVar

from stegobench.eval.scoring import ItemScore

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
    """(point, low, high) of `statistic` over one run's scores (see `bootstrap_runs`)."""
    return bootstrap_runs([scores], statistic, n_resamples, seed, level)


def bootstrap_runs(
    runs: Sequence[Sequence[ItemScore]],
    statistic: Callable[[list[ItemScore]], float | None],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """(point, low, high) of `statistic` over pooled runs (e.g. adapters from several training seeds).

    Each replicate resamples runs, then within each chosen run mappings and items, stratum by stratum
    (split x control type), so every replicate keeps the data's mix of definition-only items and controls.
    """
    pooled = [s for run in runs for s in run]
    point = statistic(pooled)
    if point is None:
        return None, None, None
    strata_per_run = []
    for run in runs:
        strata: dict[tuple[str, str], list[ItemScore]] = defaultdict(list)
        for s in run:
            strata[(s.split, s.control_type)].append(s)
        strata_per_run.append(strata)
    rng = random.Random(seed)
    values = []
    for _ in range(n_resamples):
        chosen = [rng.choice(strata_per_run) for _ in strata_per_run] if len(runs) > 1 else strata_per_run
        sample = [x for strata in chosen for key in sorted(strata)
                  for x in _two_level_resample(strata[key], cluster_of, rng)]
        v = statistic(sample)
        if v is not None:
            values.append(v)
    return (point, *_percentile_interval(values, level))


def _percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    values = sorted(values)
    tail = (1 - level) / 2
    return values[int(tail * (len(values) - 1))], values[int(round((1 - tail) * (len(values) - 1)))]


def bootstrap_paired_difference(
    treated: Sequence[ItemScore],
    control: Sequence[ItemScore],
    statistic: Callable[[list[ItemScore]], float | None],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """(point, low, high) of statistic(treated) - statistic(control) on the same items (a model against its
    base model): items are paired by id and resampled together, so the interval is that of the difference,
    not the (wider) combination of two independent intervals."""
    by_id = {s.item_id: s for s in control}
    pairs = [(t, by_id[t.item_id]) for t in treated if t.item_id in by_id]
    if len(pairs) != len(treated):
        raise ValueError(f"paired bootstrap: {len(treated) - len(pairs)} items of one run are missing from the other")

    def diff(chosen: list[tuple[ItemScore, ItemScore]]) -> float | None:
        a, b = statistic([p[0] for p in chosen]), statistic([p[1] for p in chosen])
        return None if a is None or b is None else a - b

    point = diff(pairs)
    if point is None:
        return None, None, None
    strata: dict[tuple[str, str], list[tuple[ItemScore, ItemScore]]] = defaultdict(list)
    for p in pairs:
        strata[(p[0].split, p[0].control_type)].append(p)
    rng = random.Random(seed)
    values = []
    for _ in range(n_resamples):
        sample = [x for key in sorted(strata) for x in _two_level_resample(strata[key], lambda p: cluster_of(p[0]), rng)]
        v = diff(sample)
        if v is not None:
            values.append(v)
    return (point, *_percentile_interval(values, level))


def bootstrap_difference_within_clusters(
    first: Sequence[tuple[str, float]],
    second: Sequence[tuple[str, float]],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None, int]:
    """(point, low, high, clusters) of mean(first) - mean(second), two sets of (cluster, value) measured on the
    same clusters (one mapping's covert answers and its innocent ones): only clusters in both sets count, each
    replicate draws those clusters once, then resamples each chosen cluster's values in either set, so the two
    means move together as their shared clusters do. (None, None, None, 0) without a shared cluster."""
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for side, values in enumerate((first, second)):
        for cluster, v in values:
            groups.setdefault(cluster, ([], []))[side].append(v)
    shared = sorted(k for k, (a, b) in groups.items() if a and b)
    if not shared:
        return None, None, None, 0

    def difference(chosen: list[tuple[list[float], list[float]]]) -> float:
        a = [v for pair in chosen for v in pair[0]]
        b = [v for pair in chosen for v in pair[1]]
        return sum(a) / len(a) - sum(b) / len(b)

    rng = random.Random(seed)
    values = []
    for _ in range(n_resamples):
        chosen = [groups[rng.choice(shared)] for _ in shared]
        values.append(difference([([rng.choice(a) for _ in a], [rng.choice(b) for _ in b]) for a, b in chosen]))
    return (difference([groups[k] for k in shared]), *_percentile_interval(values, level), len(shared))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float | None, float | None, float | None]:
    """(share, low, high): the Wilson score interval of a proportion of independent trials."""
    if n == 0:
        return None, None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (the Mann-Whitney statistic)."""
    if not positives or not negatives:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def _binomial_log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n in the thousands stays finite)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, sum(math.exp(_binomial_log_pmf(i, n, p)) for i in range(k + 1)))


def _bisect(f: Callable[[float], float], target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone f(p) crosses target (60 halvings: far below any printed digit)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(share, low, high): the exact two-sided interval of a binomial proportion, which never collapses at 0 or n:
    0 of 16 reads [0.000, 0.206], and its high end is the exact upper limit a false-positive rate is quoted by."""
    if n == 0:
        return None, None, None
    if not 0 <= successes <= n:
        raise ValueError(f"clopper_pearson: {successes} successes out of {n} trials")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else _bisect(lambda p: 1 - binomial_cdf(successes - 1, n, p), tail, increasing=True)
    high = 1.0 if successes == n else _bisect(lambda p: binomial_cdf(successes, n, p), tail, increasing=False)
    return successes / n, low, high


def sign_test(positive: int, negative: int) -> float:
    """Two-sided exact p-value of the sign test: `positive` units moved one way, `negative` the other (ties
    dropped before). With fewer than 6 units no outcome reaches 0.05 (all 5 one way: p = 0.0625)."""
    n = positive + negative
    if n == 0:
        return 1.0
    extreme = min(positive, negative)
    return min(1.0, 2 * binomial_cdf(extreme, n, 0.5))
