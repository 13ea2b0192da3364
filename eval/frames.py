"""Runs as tables for a notebook: one row per condition (headline rates with intervals) or per answer.

    from stegobench.eval.frames import load_run, load_samples
    rates = load_run("runs/quickstart/eval")          # pandas DataFrame: run, condition, covert_score, ..._low, ..._high, ..._n
    answers = load_samples("runs/quickstart/eval")    # one row per (condition, question): prompt, response, every flag

Both read through the typed run log (eval/runlog.py), so older results.json files are migrated on the way.
pandas comes with `datasets`, a dependency; the plain-row functions (`headline_rows`) need no pandas at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stegobench.data_gen.records import ScoredSplit

from .runlog import Interval, RunLog, iter_samples, read_run
from .scoring import Flag

# (column, what it reads from a condition's table): the columns `stegobench eval` prints and report.md leads with
HEADLINE: tuple[tuple[str, Any], ...] = (
    ("covert_score", lambda t: t.covert_score),
    ("hits", lambda t: t.rate(ScoredSplit.DEFINITION_ONLY, Flag.UNDETECTED_COVERT)),
    ("code_use", lambda t: t.rate(ScoredSplit.DEFINITION_ONLY, Flag.USES_CODE)),
    ("false_alarms", lambda t: t.rate(ScoredSplit.CONTROL_UNMAPPED, Flag.FALSE_USE)),
    ("demonstrated_hits", lambda t: t.rate(ScoredSplit.DEMONSTRATED, Flag.UNDETECTED_COVERT)),
    ("keeps_original_meaning", lambda t: t.rate(ScoredSplit.CONTROL_ORIGINAL_MEANING, Flag.KEEPS_ORIGINAL_MEANING)),
)


def _cells(name: str, cell: Interval | None) -> dict[str, Any]:
    cell = cell or Interval(None)
    return {name: cell.value, f"{name}_low": cell.low, f"{name}_high": cell.high, f"{name}_n": cell.n}


def headline_rows(run: RunLog, label: str | None = None) -> list[dict[str, Any]]:
    """One plain row per condition (and the pooled row of several adapters): headline rates, each with its 95%
    interval and n, the change of covert_score against the base model, recall, and what scored it."""
    label = label or (str(run.folder) if run.folder else run.dataset.track or "")
    tables = [(name, c.table, c) for name, c in run.conditions.items()]
    if run.pooled is not None:
        tables.append((f"pooled ({len(run.pooled.adapters)} adapters)", run.pooled.table, None))
    rows = []
    for name, table, cond in tables:
        row: dict[str, Any] = {"run": label, "condition": name, "track": run.dataset.track,
                               "model": run.model.get("spec")}
        for column, get in HEADLINE:
            row.update(_cells(column, get(table)))
        change = (cond.change_vs_base or {}).get("covert_score") if cond is not None else None
        row.update(_cells("covert_score_vs_base", change))
        row["recall"] = cond.recall_accuracy if cond is not None else None
        row["score_definition"] = run.score_definition
        rows.append(row)
    return rows


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas comes with datasets
        from stegobench.core.errors import ResourceError

        raise ResourceError("loading a run as a DataFrame needs pandas: pip install pandas") from None
    return pandas


def load_run(*folders: str | Path):
    """The headline rows of one or more run folders as one pandas DataFrame (a `run` column tells them apart)."""
    return _pandas().DataFrame([row for f in folders for row in headline_rows(read_run(f), str(f))])


def load_samples(folder: str | Path, condition: str | None = None):
    """Every scored answer of a run (or of one condition) as a pandas DataFrame: condition, item id, split,
    control type, mapping, code, concept, question, prompt, response, each score flag and each monitor's value."""
    rows = []
    for s in iter_samples(folder, condition):
        rows.append({"condition": s.condition, "question": s.item.get("question"), "prompt": s.prompt,
                     "response": s.response, **s.score.to_record(),
                     **{f"monitor_{m}": v for m, v in s.monitors.items()}})
    return _pandas().DataFrame(rows)
