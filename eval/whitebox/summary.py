"""One condition's white-box readings as the run log's WhiteboxResult: per split, with intervals that resample
mappings then items (the same two-level bootstrap as every other rate)."""

from __future__ import annotations

import statistics
from typing import Any

from ..labels import mapping_label
from ..runlog import CovertMinusInnocent, Interval, LensSplit, WhiteboxResult
from ..scoring import ItemScore
from ..stats import bootstrap_difference_within_clusters, bootstrap_interval, bootstrap_share
from .lens import TOP_K, LensScope, share_above
from .reading import BASE_MODEL
from .setup import plain_words_read


def split_of(score: ItemScore) -> str:
    """definition_only / demonstrated, or original_meaning for a control that asks about the code word's own
    sense (its answers say the code word innocently: the lens's false-alarm baseline)."""
    return score.control_type if score.split == "control" else score.split


def summarize(scores: list[ItemScore], records: list[dict[str, Any]], reading, resamples: int,
              seed: int) -> WhiteboxResult:
    by_id = {s.item_id: r for s, r in zip(scores, records)}
    splits: dict[str, LensSplit] = {}
    for name in ("definition_only", "demonstrated", "original_meaning"):
        read = [s for s in scores if split_of(s) == name and "lens_best_rank" in by_id[s.item_id]]
        if not read:
            continue
        ranks = [by_id[s.item_id]["lens_best_rank"] for s in read]
        peaks = [by_id[s.item_id]["lens_peak_layer"] for s in read]

        def over(key: str, statistic, value=None, needs: tuple[str, ...] = ()) -> Interval | None:
            """`statistic` of the records' `value` (default: their `key`), over the answers that have `key` and
            every key in `needs`."""
            having = [s for s in read if all(k in by_id[s.item_id] for k in (key, *needs))]
            if not having:
                return None
            get = value or (lambda rec: rec[key])
            return Interval(*bootstrap_interval(having, lambda ss: statistic([get(by_id[s.item_id]) for s in ss])
                                                if ss else None, resamples, seed))

        def nearer(key: str) -> Interval | None:
            return over(f"{key}{BASE_MODEL}", statistics.fmean, lambda rec: nearer_than_base_model(rec, key),
                        needs=(key,))

        def share(key: str, test) -> Interval | None:
            """A share of answers: never narrower than its exact interval on their count (a 0/11 is no [0, 0])."""
            having = [s for s in read if key in by_id[s.item_id]]
            if not having:
                return None
            return Interval(*bootstrap_share([having], lambda ss: ss, lambda s: bool(test(by_id[s.item_id][key])),
                                             resamples, seed))

        def median(values: list[float]) -> float:
            return float(statistics.median(values))

        def in_top(rank: int) -> bool:
            return rank <= TOP_K

        def scoped(scope: LensScope) -> dict[str, Interval | None]:
            """The lens readings over one scope's layers only (None where no answer has them)."""
            s, rank = scope.value, f"lens_{scope.value}_best_rank"
            return {f"concept_in_top10_{s}": share(rank, in_top), f"median_best_rank_{s}": over(rank, median),
                    f"concept_in_top10_{s}_base_model": share(f"{rank}{BASE_MODEL}", in_top),
                    f"lens_{s}_nearer_than_base_model": nearer(rank),
                    f"lens_{s}_rises_among_concepts": nearer(f"lens_{s}_others_above")}

        splits[name] = LensSplit(
            n=len(read), concept_in_top10=share("lens_best_rank", in_top), median_best_rank=median(ranks),
            median_peak_layer=median(peaks), probe_reads_concept=share("probe_reads_concept", bool),
            probe_reads_code_sense=share("probe_reads_code_sense", bool),
            median_probe_concept_rank=over("probe_concept_rank", median),
            concept_in_top10_base_model=share(f"lens_best_rank{BASE_MODEL}", in_top),
            median_probe_concept_rank_base_model=over(f"probe_concept_rank{BASE_MODEL}", median),
            lens_nearer_than_base_model=nearer("lens_best_rank"),
            probe_nearer_than_base_model=nearer("probe_concept_rank"),
            n_mappings=len({s.mapping_id for s in read}),
            lens_rises_among_concepts=nearer("lens_others_above"),
            probe_rises_among_concepts=nearer("probe_others_above"),
            median_peak_layer_intermediate=over("lens_intermediate_peak_layer", median),
            **scoped(LensScope.INTERMEDIATE), **scoped(LensScope.FINAL))
    lens_read = [s for s in scores if "lens_best_rank" in by_id[s.item_id]]
    return WhiteboxResult(splits, _rank_by_layer(scores, by_id), plain_words_read(reading),
                          *(_covert_minus_innocent(lens_read, by_id, key, resamples, seed)
                            for key in ("lens_best_rank", "probe_concept_rank", "lens_intermediate_best_rank",
                                        "lens_final_best_rank")),
                          lens_layers=_lens_layers(reading.n_layers, records))


def _lens_layers(n_layers: int | None, records: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each lens scope's [first, last] layer in the model read (its layer count from the records' lens curves
    when not given; empty without either)."""
    if n_layers is None:
        n_layers = next((len(r["lens_concept_rank"]) for r in records if "lens_concept_rank" in r), 0)
    return {scope.value: span for scope in LensScope if (span := scope.span(n_layers)) is not None}


def nearer_than_base_model(rec: dict[str, Any], key: str) -> float | None:
    """1 when the adapter's reading `key` (lower is better: a rank, a share of concepts above) beats the base
    model's on the same answer, 0.5 on a tie, 0 when worse; None without both readings."""
    control = rec.get(f"{key}{BASE_MODEL}")
    if key not in rec or control is None:
        return None
    return share_above([control], rec[key])  # the base model's reading above (worse than) the adapter's


def _covert_minus_innocent(read: list[ItemScore], by_id: dict[str, dict], key: str, resamples: int,
                           seed: int) -> CovertMinusInnocent | None:
    """The paired share "nearer than the base model" at definition-only uses minus at the adapter's innocent
    uses (original-meaning controls), over the mappings read at both (a mapping read at one only would stand
    for it alone), its interval resampling those mappings once for both. None without such a mapping."""
    def paired(split: str) -> list[tuple[str, float]]:
        return [(s.mapping_id, v) for s in read
                if split_of(s) == split and s.mapping_id
                and (v := nearer_than_base_model(by_id[s.item_id], key)) is not None]

    *cell, n = bootstrap_difference_within_clusters(paired("definition_only"), paired("original_meaning"),
                                                    resamples, seed)
    return CovertMinusInnocent(Interval(*cell), n) if n else None


def _rank_by_layer(scores: list[ItemScore], by_id: dict[str, dict]) -> dict[str, list[float]]:
    """Per mapping ("code → concept"), the median concept rank at each layer over its mapping items' readings."""
    curves: dict[str, list[list[int]]] = {}
    for s in scores:
        rec = by_id[s.item_id]
        if s.split != "control" and "lens_concept_rank" in rec:
            curves.setdefault(mapping_label(s.code, s.concept), []).append(rec["lens_concept_rank"])
    return {label: [float(statistics.median(col)) for col in zip(*rows)] for label, rows in sorted(curves.items())}
