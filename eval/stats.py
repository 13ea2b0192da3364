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


class _Design:
    """Where each item sits: stratum (split x control type) -> cluster (mapping, or unmapped concept) -> item ids.

    Runs of one eval (training seeds of one track) share the code book and the questions, so a bootstrap
    replicate draws clusters and items ONCE and applies that draw to every run it draws (crossed resampling):
    drawing mappings independently inside each run would count the mapping-to-mapping variance as if every seed
    had its own mappings, and k identical copies of a run would look like k runs' worth of evidence."""

    def __init__(self, runs: Sequence[Sequence[T]], item_id: Callable[[T], str], stratum: Callable[[T], tuple],
                 cluster: Callable[[T], str]):
        self.by_run = [{item_id(x): x for x in run} for run in runs]
        layout: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for run in runs:
            for x in run:
                layout[stratum(x)][cluster(x)].add(item_id(x))
        self.strata = [[sorted(layout[key][c]) for c in sorted(layout[key])] for key in sorted(layout)]

    def draw_items(self, rng: random.Random) -> list[str]:
        """One replicate's item ids: per stratum, clusters with replacement, then items within each drawn cluster."""
        ids: list[str] = []
        for clusters in self.strata:
            for _ in clusters:
                group = rng.choice(clusters)
                ids.extend(rng.choice(group) for _ in group)
        return ids

    def sample(self, ids: list[str], runs: list[dict[str, T]]) -> list[T]:
        return [run[i] for run in runs for i in ids if i in run]


def _strata_of(score: ItemScore) -> tuple[str, str]:
    return score.split, score.control_type


def _crossed_bootstrap(design: _Design, statistic: Callable[[list], float | None], n_resamples: int, seed: int,
                       draw_runs: bool) -> list[float]:
    # Items and runs draw from separate streams: one run and k identical copies of it see the same item draws,
    # so the copies' interval equals the run's exactly rather than within Monte-Carlo noise.
    rng_items, rng_runs = random.Random(seed), random.Random(f"{seed}:runs")
    values = []
    for _ in range(n_resamples):
        ids = design.draw_items(rng_items)
        runs = [rng_runs.choice(design.by_run) for _ in design.by_run] if draw_runs else design.by_run
        v = statistic(design.sample(ids, runs))
        if v is not None:
            values.append(v)
    return values


def joint_replicates(runs: Sequence[Sequence[ItemScore]], statistic: Callable[[list[ItemScore]], float | None],
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[list[float | None]]:
    """Per bootstrap replicate, `statistic` of every run on the SAME draw of mappings and questions (the crossed
    design of `_Design`): runs that answered the same questions (the entries of a leaderboard track and their base
    model) are compared replicate by replicate, so a rank or a difference varies only as the questions do. A run
    lacking a drawn question skips it."""
    design = _Design(runs, lambda s: s.item_id, _strata_of, cluster_of)
    rng = random.Random(seed)
    out = []
    for _ in range(n_resamples):
        ids = design.draw_items(rng)
        out.append([statistic(design.sample(ids, [run])) for run in design.by_run])
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

    Each replicate draws, stratum by stratum (split x control type), the mappings and unmapped-concept clusters
    and the questions within each once, and applies that draw to every run (see `_Design`); with several runs
    it also draws the runs. Every replicate keeps the data's mix of definition-only items and controls."""
    pooled = [s for run in runs for s in run]
    point = statistic(pooled)
    if point is None:
        return None, None, None
    design = _Design(runs, lambda s: s.item_id, _strata_of, cluster_of)
    values = _crossed_bootstrap(design, statistic, n_resamples, seed, draw_runs=len(runs) > 1)
    return (point, *quantile_interval(values, level))


def with_exact(point: float | None, low: float | None, high: float | None,
               n: float) -> tuple[float | None, float | None, float | None]:
    """A share's bootstrap interval widened to contain the exact (Clopper-Pearson) interval on its n questions.

    A bootstrap of 0 of 16 collapses to [0, 0], and percentile bootstraps over a few clusters under-cover; the
    exact interval on the item count is the floor a count of n can claim, so 0/16 reads [0, 0.21] and 1/16 no
    narrower. The bootstrap still wins where clustering makes the data worth fewer than n questions."""
    if point is None or low is None or high is None or n <= 0:
        return point, low, high
    _, exact_low, exact_high = clopper_pearson(min(max(point, 0.0), 1.0) * n, n)
    return point, min(low, exact_low), max(high, exact_high)


def effective_count(values_by_item: dict[str, list[float]]) -> float:
    """Kish's effective number of independent answers when runs (seeds) answer the same questions: the answers
    divided by the design effect 1 + (k - 1) * ICC, ICC the one-way intraclass correlation of an item's values
    across runs, clipped to [questions, answers]. Identical copies (ICC 1) count as their questions once; seeds
    that differ question by question (ICC 0) as every answer. Where the ICC is undefined (every value equal, as
    in 0 of n) the count is the questions': the conservative end."""
    groups = [v for v in values_by_item.values() if v]
    n_items, n_answers = len(groups), sum(map(len, groups))
    if n_items < 2 or n_answers == n_items:
        return float(n_items)
    grand = sum(map(sum, groups)) / n_answers
    means = [sum(g) / len(g) for g in groups]
    between = sum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means)) / (n_items - 1)
    within = sum((x - m) ** 2 for g, m in zip(groups, means) for x in g) / (n_answers - n_items)
    k0 = (n_answers - sum(len(g) ** 2 for g in groups) / n_answers) / (n_items - 1)
    denominator = between + (k0 - 1) * within
    icc = 1.0 if denominator <= 0 else min(max((between - within) / denominator, 0.0), 1.0)
    return min(max(n_answers / (1 + (k0 - 1) * icc), n_items), n_answers)


def mover_difference(first: tuple[float | None, float | None, float | None],
                     second: tuple[float | None, float | None, float | None]
                     ) -> tuple[float | None, float | None, float | None]:
    """(a - b, low, high) from the (point, low, high) intervals of two independent estimates a and b, by the
    method of variance estimates recovery (Zou & Donner 2008): each side's distance to its own bound, combined
    in quadrature. It keeps each interval's asymmetry, which a plain +- standard error would lose."""
    (a, a_low, a_high), (b, b_low, b_high) = first, second
    if None in (a, a_low, a_high, b, b_low, b_high):
        return None, None, None
    d = a - b
    return (d, d - ((a - a_low) ** 2 + (b_high - b) ** 2) ** 0.5,
            d + ((a_high - a) ** 2 + (b - b_low) ** 2) ** 0.5)


def newcombe_difference(p1: float, n1: float, p2: float, n2: float,
                        level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(p1 - p2, low, high) for two independent shares on n1 and n2 questions: Newcombe's hybrid interval
    built from each share's exact (Clopper-Pearson) interval. It is the floor a difference of two small counts
    can claim, as `with_exact` is a share's: 0/16 hits against 0/16 false alarms reads [-0.21, +0.21] where a
    bootstrap collapses to [0, 0]."""
    if n1 <= 0 or n2 <= 0:
        return None, None, None
    p1, p2 = min(max(p1, 0.0), 1.0), min(max(p2, 0.0), 1.0)
    return mover_difference((p1, *clopper_pearson(p1 * n1, n1, level)[1:]),
                            (p2, *clopper_pearson(p2 * n2, n2, level)[1:]))


def paired_share_difference(treated: dict[str, float], control: dict[str, float],
                             level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean difference, low, high) of two shares measured on the same items (item id -> value in [0, 1]): the
    floor a paired difference of small counts can claim, as `newcombe_difference` is an unpaired one's. Only the
    items that changed inform it: the share that rose (sum of positive differences) and the share that fell,
    each on the n shared items, combined by Newcombe's hybrid rule from their exact intervals. No change on 16
    items reads [-0.21, +0.21]: neither kind of change was seen, and 0 of 16 bounds each below 0.21, where a
    paired bootstrap collapses to [0, 0]. (The two shares are counts of one multinomial, so their covariance,
    -p_up * p_down / n, is small exactly where this floor matters: where changes are rare.)"""
    shared = [k for k in treated if k in control]
    if not shared:
        return None, None, None
    changes = [treated[k] - control[k] for k in shared]
    n = len(shared)
    rose, fell = sum(d for d in changes if d > 0) / n, sum(-d for d in changes if d < 0) / n
    return newcombe_difference(rose, n, fell, n, level)


def bootstrap_share(
    runs: Sequence[Sequence[ItemScore]],
    members: Callable[[list[ItemScore]], list[ItemScore]],
    hit: Callable[[ItemScore], bool],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None, int]:
    """(share, low, high, n) of answers `hit` among `members`, over pooled runs: the crossed cluster bootstrap
    (`bootstrap_runs`) widened by the exact interval (`with_exact`) on n, the distinct questions counted (seeds
    that answer the same question again add no question)."""
    def share(ss: list[ItemScore]) -> float | None:
        chosen = members(ss)
        return sum(map(hit, chosen)) / len(chosen) if chosen else None

    n = len({s.item_id for run in runs for s in members(list(run))})
    return (*with_exact(*bootstrap_runs(runs, share, n_resamples, seed, level), n), n)


def quantile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of `values`: every percentile interval here."""
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
    design = _Design([pairs], lambda p: p[0].item_id, lambda p: _strata_of(p[0]), lambda p: cluster_of(p[0]))
    values = _crossed_bootstrap(design, diff, n_resamples, seed, draw_runs=False)
    return (point, *quantile_interval(values, level))


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
    return (difference([groups[k] for k in shared]), *quantile_interval(values, level), len(shared))


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


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the Beta(a, b) distribution function at x (a, b > 0; real, so counts may be fractional)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _continued_fraction(a, b, x) / a
    return 1 - front * _continued_fraction(b, a, 1 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection (60 halvings: far below any printed digit)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if regularized_beta(mid, a, b) < q else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(successes: float, n: float, level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(share, low, high): the exact two-sided interval of a binomial proportion, which never collapses at 0 or n:
    0 of 16 reads [0.000, 0.206], and its high end is the exact upper limit a false-positive rate is quoted by.

    `successes` may be fractional (a share of n questions pooled over seeds that repeat them: the count is then
    the questions', not the answers'), through the beta form of the interval."""
    if n <= 0:
        return None, None, None
    if not 0 <= successes <= n:
        raise ValueError(f"clopper_pearson: {successes} successes out of {n} trials")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else _beta_quantile(tail, successes, n - successes + 1)
    high = 1.0 if successes == n else _beta_quantile(1 - tail, successes + 1, n - successes)
    return successes / n, low, high


def sign_test(positive: int, negative: int) -> float:
    """Two-sided exact p-value of the sign test: `positive` units moved one way, `negative` the other (ties
    dropped before). With fewer than 6 units no outcome reaches 0.05 (all 5 one way: p = 0.0625)."""
    n = positive + negative
    if n == 0:
        return 1.0
    extreme = min(positive, negative)
    return min(1.0, 2 * binomial_cdf(extreme, n, 0.5))
