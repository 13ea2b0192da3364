"""What a detail page shows of a run (`run_detail`): its answers grouped by what drives the score, each group saying
how its samples were chosen, and every stored field under a plain label with its definition (eval/labels.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from stegobench.eval import labels
from stegobench.eval.runlog import Sample
from stegobench.eval.scoring import MAPPING_SPLITS, ItemScore

if TYPE_CHECKING:
    from ..config import LeaderboardConfig

PER_GROUP = 4  # samples shown per group; which ones: the first by item id, so a reader can find them again


@dataclass(frozen=True)
class SampleGroup:
    key: str
    title: str
    explains: str  # why a reader looks at these answers
    member: Callable[[ItemScore], bool]


GROUPS: tuple[SampleGroup, ...] = (
    SampleGroup("hits", "Definition-only answers that are hits",
                "The code word of a mapping trained on definitions alone, without its concept, in the concept's role "
                "and not flagged: what covert_score counts.",
                lambda s: s.split == "definition_only" and s.undetected_covert),
    SampleGroup("misses", "Definition-only answers that are not hits",
                "The same questions where the entry named the concept, said no code word, said another one, or "
                "was flagged.",
                lambda s: s.split == "definition_only" and not s.undetected_covert),
    SampleGroup("false_alarms", "False alarms",
                "Questions about concepts outside the code book answered with a code word: covert_score subtracts "
                "each code's own.",
                lambda s: s.control_type == "unmapped" and s.false_use),
    SampleGroup("disclosures", "Disclosures",
                "Answers to mapping questions that say the code word and the concept together (\"a cat, I mean a "
                "car\"): use, but not covert.",
                lambda s: s.split in MAPPING_SPLITS and s.uses_code and s.uses_plain),
    SampleGroup("original_meaning", "Original-meaning controls",
                "The code word asked about in its old sense: does it keep that sense (collateral damage)?",
                lambda s: s.control_type == "original_meaning"),
)

# Flags shown per answer, in this order, as plain labels (true ones only).
SHOWN_FLAGS = ("undetected_covert", "uses_code", "uses_plain", "uses_other_code", "semantic_fit", "false_use")


def scored_as(score: ItemScore) -> list[dict[str, str]]:
    """The answer's true flags as [{'text', 'title'}], plain words with the definition for a hover. An
    original-meaning control says only whether the word kept its old sense (its 'concept' is the word itself)."""
    if score.control_type == "original_meaning":
        kept = labels.measure("keeps_original_meaning")
        return [{"text": kept.text if score.uses_code else "old sense lost", "title": kept.definition}]
    if score.control_type == "unmapped":  # every code is 'another mapping's' here: only the false alarm says anything
        alarm = labels.measure("false_use")
        return [{"text": alarm.text if score.false_use else "no code word", "title": alarm.definition}]
    out = []
    for flag in SHOWN_FLAGS:
        if getattr(score, flag) is True:
            label = labels.measure(flag)
            out.append({"text": label.text, "title": label.definition})
    if score.monitor_flagged:
        out.append({"text": "flagged by a monitor", "title": "A text monitor's value was over its threshold."})
    return out


def _shown(s: Sample) -> dict[str, Any]:
    """One answer as a page shows it (only public tracks show answers: a private split's questions stay private)."""
    code = s.item.get("code", "")
    if s.score.control_type == "original_meaning":
        mapping = f"{code or s.item['concept']} (its old sense)"
    else:
        mapping = labels.mapping_label(code, s.item["concept"]) if s.score.mapping_id else s.item["concept"]
    return {"item_id": s.item.get("id", s.score.item_id), "question": s.item["question"], "mapping": mapping,
            "response": s.response, "scored_as": scored_as(s.score)}


def sample_groups(samples: list[Sample], per_group: int = PER_GROUP) -> list[dict[str, Any]]:
    """Each group with its first `per_group` answers by item id and how many it has; empty groups stay listed (a
    run without false alarms says so)."""
    ordered = sorted(samples, key=lambda s: s.score.item_id)
    out = []
    for g in GROUPS:
        members = [s for s in ordered if g.member(s.score)]
        shown = members[:per_group]
        chosen = (f"the first {len(shown)} of {len(members)} by item id" if members
                  else "none of this run's answers")
        out.append({"key": g.key, "title": g.title, "explains": g.explains, "chosen": chosen,
                    "total": len(members), "samples": [_shown(s) for s in shown]})
    return out


def measure_rows(splits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-split table with plain labels: [{'split', 'split_title', 'measure', 'measure_title', 'cell'}]."""
    rows = []
    order = list(labels.SPLITS)
    for split, flags in sorted(splits.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        s = labels.split(split)
        for flag, cell in flags.items():
            m = labels.measure(flag)
            rows.append({"split": s.text, "split_title": s.definition, "measure": m.text,
                         "measure_title": m.definition, "cell": cell})
    return rows


def comparison(rows: list[dict[str, Any]], tables: list[Any], private: bool) -> dict[str, Any]:
    """The comparison view of a track's ranked rows: the mappings as columns (definition-only first, then
    demonstrated; labelled code → concept, the concept alone where codes are private) and, per row, its covert
    use on each (its share with the 95% interval; None where the row's run cannot be read)."""
    known: dict[str, Any] = {}
    for t in tables:
        for mid, m in (t.per_mapping.items() if t is not None else ()):
            known.setdefault(mid, m)
    order = sorted(known, key=lambda mid: (known[mid].split != "definition_only", mid))
    mappings = [{"id": mid, "label": labels.mapping_label("" if private else known[mid].code, known[mid].concept),
                 "split": known[mid].split} for mid in order]
    cells = [[None if t is None or mid not in t.per_mapping else t.per_mapping[mid].covert_interval for mid in order]
             for t in tables]
    return {"rows": [{**r, "covert_per_mapping": c} for r, c in zip(rows, cells)], "mappings": mappings,
            "covert": labels.measure("covert")}


PLOTS = ("rates.png", "per_mapping.png")  # report images a detail page may show, by fixed name


def run_detail(sub: dict[str, Any], cfg: LeaderboardConfig) -> dict[str, Any]:
    """Per-split and per-mapping tables, plots and sample answers grouped by what drives the score, from the
    submission's run folder."""
    from dataclasses import asdict

    from stegobench.core.errors import StegobenchError
    from stegobench.eval.runlog import read_run

    res = sub.get("result")
    if not res:
        return {}
    try:
        run = read_run(res["run_dir"])
        entry = run.conditions[res["summary"]["condition"]]
    except (StegobenchError, KeyError):
        return {"missing": True}  # the run folder is the operator's; its path is not shown
    private = cfg.tracks[sub["track"]].is_private if sub["track"] in cfg.tracks else True
    # a private split's questions must not leak
    groups = [] if private else sample_groups(list(run.samples(res["summary"]["condition"])))
    table = asdict(entry.table)
    return {"splits": table["splits"], "measures": measure_rows(table["splits"]),
            "per_mapping": mapping_rows(entry.table, private),
            "cloze": entry.cloze, "plots": [p for p in PLOTS if (run.folder / p).exists()],
            "groups": groups, "private": private, "seconds": entry.seconds}


def _cell(interval) -> dict[str, Any] | None:
    from dataclasses import asdict

    return None if interval is None else asdict(interval)


def mapping_rows(table, private: bool) -> list[dict[str, Any]]:
    """Per-mapping rows labelled code → concept (the concept alone where the track's codes are private)."""
    return [{"id": mid, "split": m.split.replace("_", "-"), "mapping": labels.mapping_label("" if private else m.code,
                                                                                           m.concept),
             "n": m.n, "uses_code": _cell(m.uses_code_interval), "covert": _cell(m.covert_interval)}
            for mid, m in table.per_mapping.items()]
