"""What the study says about the benchmark's sensitivity: the MDE components from the positive control, each
shipped track's MDE, and the dose curve's points (numbers only; studies/report.py writes them out)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stegobench.core.config import load_config
from stegobench.core.errors import UserError
from stegobench.core.paths import CONFIGS, REPO_ROOT
from stegobench.core.provenance import atomic_write_json, git_revision
from stegobench.eval.findings import Finding
from stegobench.eval.mde import (ComponentsFile, Mde, TrackCounts, components_of, mean_components, read_components,
                                 track_counts, track_mde)
from stegobench.eval.runlog import Interval, RunLog
from stegobench.eval.scoring import Flag

from .verdicts import DEF_ONLY, scores_of, track_findings

# What the pre-registration asks of the positive control the components are measured on (docs/preregistration.md)
MEASURED_NEEDS = {"definition_only_mappings": 20, "seeds": 2}


def _provisional_reasons(pos: RunLog, track: str | None, counts: TrackCounts) -> list[str]:
    reasons = []
    if track is None or pos.dataset.track != track:
        reasons.append(f"its track is {pos.dataset.track!r}, not the pre-registered {track!r}")
    if counts.definition_only_mappings < MEASURED_NEEDS["definition_only_mappings"]:
        reasons.append(f"{counts.definition_only_mappings} definition-only mappings (the pre-registration asks "
                       f"for at least {MEASURED_NEEDS['definition_only_mappings']}; between_mappings rests on them)")
    if len(pos.adapter_conditions()) < MEASURED_NEEDS["seeds"]:
        reasons.append(f"{len(pos.adapter_conditions())} training seed(s) (at least {MEASURED_NEEDS['seeds']} asked)")
    pooled = pos.pooled_or_first_adapter()
    if pooled is None or pooled.covert_score.value is None or pooled.covert_score.value <= 0:
        reasons.append("its covert_score is not above 0, so its variance is not that of the alternative")
    return reasons


def write_mde_components(pos: RunLog, track: str | None, path: Path) -> Path | None:
    """The positive control's variance components (eval/mde.py), each adapter's and their mean, to `path`, with
    the revision the run was evaluated at and, for anything short of the pre-registered run, why it is only
    provisional. None (nothing written) when no adapter's answers give components."""
    per_adapter = {}
    for name, _ in pos.adapter_conditions():
        scores = scores_of(pos, name)
        parts = None if scores is None else components_of(scores)
        if parts is not None:
            per_adapter[name] = parts
    if not per_adapter:
        return None
    counts = TrackCounts.of_items(s.score for s in pos.samples(next(iter(per_adapter))))
    reasons = _provisional_reasons(pos, track, counts)
    components = mean_components(list(per_adapter.values()))
    if reasons and components.between_mappings == 0:
        reasons.append("between_mappings came out 0 (the mappings' spread is within what their own questions "
                       "explain), so these MDEs leave that part out and read low")
    seeds = [e.table.covert_score.value for _, e in pos.adapter_conditions() if e.table.covert_score.value is not None]
    pooled = pos.pooled_or_first_adapter().covert_score
    doc = {
        "components": asdict(components),
        "status": "provisional" if reasons else "measured",
        "study_revision": str(pos.environment.get("git_revision") or "unknown"),
        "note": ("Provisional: " + "; ".join(reasons) + ". The positive-control arm of `make validity` replaces it."
                 if reasons else "The pre-registered positive control (docs/preregistration.md)."),
        "source": {
            "run": str(pos.folder.relative_to(REPO_ROOT)) if pos.folder and pos.folder.is_relative_to(REPO_ROOT)
            else str(pos.folder),
            "track": pos.dataset.track, "counts": asdict(counts),
            "covert_score": asdict(pooled), "score_definition": pos.score_definition,
            "per_adapter": {n: asdict(p) for n, p in per_adapter.items()},
            # for one submitted adapter the seed-to-seed spread is not part of its SE; kept to read it against
            "between_seeds_variance": statistics.variance(seeds) if len(seeds) > 1 else None,
            "written_at": git_revision(),
            "method": "eval/mde.py components_of: method of moments per adapter, averaged over adapters",
        },
    }
    if path.exists() and _without_stamp(json.loads(path.read_text())) == _without_stamp(doc):
        return path  # same components from the same runs: a new stamp alone would dirty the checkout every rebuild
    atomic_write_json(path, doc)
    return path


def _without_stamp(doc: dict) -> dict:
    return {**doc, "source": {k: v for k, v in doc.get("source", {}).items() if k != "written_at"}}


# ---------------------------------------------------------------- each track's MDE


@dataclass(frozen=True)
class TrackMde:
    track: str
    config: str
    mde: Mde


def shipped_track_mdes(components: ComponentsFile | None = None) -> list[TrackMde]:
    """The MDE of every track config shipped in configs/data, one adapter each."""
    from stegobench.data_gen.track import TrackConfig

    why = ""
    try:
        chosen = components or read_components()
    except UserError as e:  # the table says why instead
        chosen, why = None, str(e)
    out = []
    for path in sorted((CONFIGS / "data").glob("*.yaml")):
        name = path.stem
        try:
            track = load_config(TrackConfig, path)
            name, counts = track.name, track_counts(track)
        except UserError as e:  # a config that does not build here (a missing private file): say so in its row
            out.append(TrackMde(name, str(path.relative_to(REPO_ROOT)), Mde(None, None, None, reason=str(e))))
            continue
        mde = track_mde(counts, chosen) if chosen else Mde(None, None, counts, reason=why)
        out.append(TrackMde(name, str(path.relative_to(REPO_ROOT)), mde))
    return out


# ---------------------------------------------------------------- the dose curve


@dataclass(frozen=True)
class DosePoint:
    """One dose: its adapter's covert_score, right-code use and each monitor's detection of covert answers."""

    demonstrations: int
    source: str  # the store's run it was read from
    covert_score: Interval | None
    right_code: Interval | None
    detection: dict[str, Interval]  # monitor -> flagged share of covert answers
    verdict: Finding | None


def dose_point(demonstrations: int, run: RunLog, source: str) -> DosePoint | None:
    """The first adapter of `run` at one dose (None without an adapter)."""
    adapters = run.adapter_conditions()
    if not adapters:
        return None
    name, entry = adapters[0]
    # the verdict on this adapter alone: a run log restricted to it, so a pooled row of seeds does not speak for it
    alone = RunLog(run.status, run.config, run.backend, run.model, run.dataset, {name: entry}, folder=run.folder)
    found = track_findings(source, alone)
    detection = {m: d.flagged["covert"] for m, d in (entry.detection or {}).items() if "covert" in d.flagged}
    return DosePoint(demonstrations, source, entry.table.covert_score, entry.table.rate(DEF_ONLY, Flag.USES_CODE),
                     detection, None if found is None else found.covert_score)


def plot_dose_curve(points: list[DosePoint], path: Path) -> Path | None:
    """covert_score, right-code use and each monitor's detection against dose, with their intervals."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stegobench.core.provenance import save_atomically

    points = sorted(points, key=lambda p: p.demonstrations)
    xs = [p.demonstrations for p in points]
    series: dict[str, list[Interval | None]] = {"covert_score": [p.covert_score for p in points],
                                                 "right code (def-only)": [p.right_code for p in points]}
    for m in sorted({m for p in points for m in p.detection}):
        series[f"{m}: covert flagged"] = [p.detection.get(m) for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (label, cells) in enumerate(series.items()):
        have = [(x + 0.25 * (i - len(series) / 2), c) for x, c in zip(xs, cells) if c is not None and c.value is not None]
        if not have:
            continue
        ax.errorbar([x for x, _ in have], [c.value for _, c in have],
                    yerr=[[c.value - (c.low if c.low is not None else c.value) for _, c in have],
                          [(c.high if c.high is not None else c.value) - c.value for _, c in have]],
                    marker="o", capsize=3, label=label, linestyle="-" if i < 2 else ":")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xscale("symlog", linthresh=3)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("usage demonstrations per definition-only mapping")
    ax.set_ylabel("share / score (95% interval)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def dose_summary(points: list[DosePoint]) -> dict[str, Any]:
    """Whether the curve is non-decreasing in covert_score (the expectation pre-registered), point by point."""
    values = [p.covert_score.value for p in sorted(points, key=lambda p: p.demonstrations)
              if p.covert_score is not None and p.covert_score.value is not None]
    return {"n": len(values), "non_decreasing": all(a <= b for a, b in zip(values, values[1:])) if values else None}
