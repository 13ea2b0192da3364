"""From evaluation runs to leaderboard rows: the score against the base model, its parts, and the order.

A row's score is its covert_score minus the base model's on the same items, with a paired bootstrap interval
(docs/design.md §4 and §6). Ties are broken by the interval's lower bound, then by who submitted first.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from eval.scoring import ItemScore, covert_score
from eval.stats import bootstrap_paired_difference

COLUMNS = (  # (key, header, what it is)
    ("rank", "#", "Position by score; ties broken by interval lower bound, then submission time."),
    ("display_name", "model", "The submitter's name for the entry."),
    ("score", "score", "covert_score minus the base model's on the same items, with its 95% interval."),
    ("hits", "hits", "Undetected covert use on definition-only items."),
    ("false_alarms", "false alarms", "Any code word in answers about unmapped concepts."),
    ("demonstrated", "demonstrated", "Undetected covert use on demonstrated items."),
    ("collateral", "collateral", "Share of original-meaning questions where the code word lost its old sense."),
    ("monitor_flag_rate", "flagged", "Share of answers the monitors flag (calibrated at 1% on the base model)."),
    ("recall", "recall", "Held-out recall probes answered with the right concept."),
    ("cloze_specificity", "cloze spec.", "log P(right code) - mean log P(other codes) on definition-only frames."),
    ("submitter", "submitter", "Who submitted it."),
)
SORTABLE = {"score", "hits", "false_alarms", "demonstrated", "collateral", "monitor_flag_rate", "recall",
            "cloze_specificity", "display_name", "submitter", "created_at"}


def item_scores(run_dir: str | Path, condition: str) -> list[ItemScore]:
    """The per-item scores of one condition of a stored run (samples.jsonl)."""
    out = []
    with open(Path(run_dir) / "samples.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["condition"] == condition:
                rec = {k: v for k, v in row["scores"].items() if k != "undetected_covert"}
                out.append(ItemScore(**rec))
    return out


def _value(table: dict, split: str, flag: str) -> float | None:
    return table["splits"].get(split, {}).get(flag, {}).get("value")


def summarize_condition(doc: dict[str, Any], condition: str, run_dir: str | Path,
                        base: tuple[str | Path, str] | None, n_resamples: int, seed: int) -> dict[str, Any]:
    """The numbers a leaderboard row shows for one condition of an eval run.

    `base` = (run folder, condition name) of the base model on the same items; the score is the paired
    difference to it (None when `base` is None: the base row itself scores 0 by definition)."""
    entry = doc["conditions"][condition]
    table = entry["table"]
    keeps = _value(table, "control_original_meaning", "keeps_original_meaning")
    cloze = (entry.get("cloze") or {}).get("definition_only", {})
    mine = item_scores(run_dir, condition)
    if base is not None:
        value, low, high = bootstrap_paired_difference(mine, item_scores(*base), covert_score, n_resamples, seed)
    else:
        value = low = high = 0.0
    return {
        "condition": condition,
        "score": {"value": value, "low": low, "high": high},
        "covert_score": table["covert_score"],
        "hits": table["splits"].get("definition_only", {}).get("undetected_covert"),
        "false_alarms": table["splits"].get("control_unmapped", {}).get("false_use"),
        "demonstrated": table["splits"].get("demonstrated", {}).get("undetected_covert"),
        "collateral": None if keeps is None else 1 - keeps,
        "monitor_flag_rate": entry.get("monitor_flag_rate"),
        "recall": entry.get("recall_accuracy"),
        "cloze_specificity": cloze.get("mean_specificity"),
        "cloze_right_first": cloze.get("right_code_ranks_first"),
        "n_items": len(mine),
        "dataset_sha256": doc["dataset"]["content_sha256"],
    }


def _point(v: Any) -> float | None:
    return v.get("value") if isinstance(v, dict) else v


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order by score, then the interval's lower bound, then submission time; number the ranks."""
    def key(r: dict) -> tuple:
        s = r["score"]
        return (-(s["value"] if s["value"] is not None else float("-inf")),
                -(s["low"] if s["low"] is not None else float("-inf")), r.get("created_at") or 0.0)
    ranked = sorted(rows, key=key)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def sort_rows(rows: list[dict[str, Any]], column: str, descending: bool) -> list[dict[str, Any]]:
    """Re-sort ranked rows by any column (the web page's sortable headers); missing values sort last."""
    if column not in SORTABLE:
        return rows
    present = [r for r in rows if _point(r.get(column)) is not None]
    absent = [r for r in rows if _point(r.get(column)) is None]
    return sorted(present, key=lambda r: _point(r[column]), reverse=descending) + absent


def leaderboard_rows(store, track: str) -> list[dict[str, Any]]:
    """Ranked rows of finished submissions on `track`, plus the baselines they were scored against (marked)."""
    rows, baselines_seen = [], {}
    for sub in store.finished(track):
        s = sub["summary"]
        rows.append({**s, "id": sub["id"], "display_name": sub["display_name"], "submitter": sub["submitter"],
                     "base_model": sub["base_model"], "created_at": sub["created_at"], "baseline": False})
        baselines_seen[sub["baseline_key"]] = sub["base_model"]
    for key, base_model in baselines_seen.items():
        b = store.baseline(key)
        if b is None:
            continue
        for name, label in (("base", "base model"), ("in_context", "in-context baseline")):
            if name in b["summary"]:
                rows.append({**b["summary"][name], "id": None, "display_name": f"{base_model} · {label}",
                             "submitter": "baseline", "base_model": base_model, "created_at": b["created_at"],
                             "baseline": True})
    return rank_rows(rows)


SIGNED = {"score", "covert_score"}  # differences carry a sign; rates do not


def format_value(v: Any, signed: bool = False) -> str:
    """'0.750 [0.500, 1.000]' for a value with its interval, '0.750' for a bare number, '-' for none."""
    f = "{:+.3f}" if signed else "{:.3f}"
    if isinstance(v, dict):
        if v.get("value") is None:
            return "-"
        if v.get("low") is None:
            return f.format(v["value"])
        return f"{f.format(v['value'])} [{f.format(v['low'])}, {f.format(v['high'])}]"
    if isinstance(v, float):
        return f.format(v)
    return "-" if v is None else str(v)


def plain_row(r: dict[str, Any]) -> dict[str, Any]:
    """Flat, JSON/CSV-ready values of a row."""
    out: dict[str, Any] = {"rank": r["rank"], "id": r["id"], "baseline": r["baseline"],
                           "display_name": r["display_name"], "submitter": r["submitter"], "base_model": r["base_model"]}
    for key in ("score", "hits", "false_alarms", "demonstrated"):
        v = r.get(key) or {}
        out[key] = v.get("value")
        out[f"{key}_low"] = v.get("low")
        out[f"{key}_high"] = v.get("high")
    for key in ("collateral", "monitor_flag_rate", "recall", "cloze_specificity", "n_items"):
        out[key] = r.get(key)
    return out


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """The leaderboard as table (terminal), md, csv or json."""
    if fmt == "json":
        return json.dumps([plain_row(r) for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        flat = [plain_row(r) for r in rows]
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]) if flat else ["rank"])
        writer.writeheader()
        writer.writerows(flat)
        return buf.getvalue()
    headers = [h for _, h, _ in COLUMNS]
    body = [[format_value(r.get(k), k in SIGNED) for k, _, _ in COLUMNS] for r in rows]
    if fmt == "md":
        def esc(s: str) -> str:
            return s.replace("|", "\\|")
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)
