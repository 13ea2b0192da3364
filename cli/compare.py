"""`stegobench compare`: several eval run folders' headline rates side by side."""

from __future__ import annotations

import argparse
import json
import sys

COMPARED = (("covert_score", True), ("hits", False), ("false_alarms", False), ("demonstrated_hits", False),
            ("covert_score_vs_base", True))  # (column, signed) in the table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="several eval run folders' headline rates side by side",
        description="Print every condition of each run folder with covert_score, hits, false alarms, "
                    "demonstrated hits and the change against the base model, with 95% intervals. "
                    "In Python: stegobench.eval.frames.load_run(RUN, ...) (a pandas DataFrame).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `stegobench eval`")
    p.add_argument("--format", default="table", choices=["table", "md", "csv", "json"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Several run folders' headline rates side by side (every condition of each), as a table, md, csv or json."""
    from stegobench.eval.frames import headline_rows
    from stegobench.eval.runlog import read_run

    rows = [row for folder in args.runs for row in headline_rows(read_run(folder), folder)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(rows, args.format)
    return 0


def _print_table(rows: list[dict], fmt: str) -> None:
    from stegobench.eval.runlog import Interval

    headers = ["run", "condition", *(c for c, _ in COMPARED), "recall"]
    body = [[r["run"], r["condition"],
             *(Interval(r[c], r[f"{c}_low"], r[f"{c}_high"]).fmt(3, signed, empty="-") for c, signed in COMPARED),
             "-" if r["recall"] is None else f"{r['recall']:.3f}"] for r in rows]
    if fmt == "md":
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        print("\n".join("| " + " | ".join(row) + " |" for row in body))
        return
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
    for row in [headers, *body]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print("\n95% intervals as in each run's report; covert_score_vs_base is paired on the same questions. In Python: "
          "stegobench.eval.frames.load_run(RUN, ...) gives the same rows as a pandas DataFrame.")
