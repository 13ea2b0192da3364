"""`stegobench leaderboard`: print the board, manage web submitters' tokens, requeue failed jobs, rescore."""

from __future__ import annotations

import argparse
import json
import sys

from stegobench.core.errors import EXIT_FAILED, EXIT_OK, UsageError

from .common import add_leaderboard_config, leaderboard

# How the table format introduces each track.
TABLE_NOTE = ("score = covert_score minus the base model's, 95% interval; rows with the same score share a rank, "
              "listed by the interval's lower bound, then by name; rank range = 2.5-97.5% of the rank over bootstrap "
              "replicates drawing the track's questions once for all rows")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="print the leaderboard, manage submitter tokens, requeue failed jobs",
        description="Print ranked results (default), add-token / revoke-token for web submitters, or "
                    "requeue FAILED submissions.")
    p.add_argument("action", nargs="?", default="show", choices=list(ACTIONS),
                   help="show the board; add-token / revoke-token for web submitters; requeue FAILED submissions "
                        "(all, or --id N) after fixing an evaluator fault; rescore every stored result and baseline "
                        "from its samples under the current scoring definitions (no decoding)")
    p.add_argument("--id", type=int, action="append", default=[], help="a submission id, for requeue; repeatable")
    p.add_argument("--track", default=None, help="one track (default: all)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv", "md"])
    p.add_argument("--name", default=None, help="token owner, for add-token / revoke-token")
    add_leaderboard_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg, store = leaderboard(args)
    return ACTIONS[args.action](args, cfg, store)


def show(args: argparse.Namespace, cfg, store) -> int:
    from stegobench.benchmark.ranking import csv_text, leaderboard_rows, mde_line, plain_row, render, track_mde

    tracks = [args.track] if args.track else list(cfg.tracks)
    for t in tracks:
        if t not in cfg.tracks:
            raise UsageError(f"unknown track {t!r}; tracks: {', '.join(cfg.tracks)}")
    if args.format == "json":  # one document that any JSON reader accepts, every track in it
        doc = {"tracks": {t: {"split": _split(cfg, t), "mde": track_mde(cfg, t).to_record(),
                              "rows": [plain_row(r) for r in leaderboard_rows(store, t)]} for t in tracks},
               "queue": store.counts()}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return EXIT_OK
    if args.format == "csv":  # one header, a track column
        flat = [{"track": t, **plain_row(r)} for t in tracks for r in leaderboard_rows(store, t)]
        sys.stdout.write(csv_text(flat) if flat else "track,rank\r\n")
        return EXIT_OK
    for t in tracks:
        rows = leaderboard_rows(store, t)
        if args.format == "table":
            print(f"\ntrack {t}  ({_split(cfg, t)} split; {TABLE_NOTE})")
            print(mde_line(track_mde(cfg, t)))
        print(render(rows, args.format))
    if args.format == "table":
        print(f"\nqueue: {store.counts()}")
    return EXIT_OK


def _split(cfg, track: str) -> str:
    return "private" if cfg.tracks[track].is_private else "public dev"


def add_token(args: argparse.Namespace, cfg, store) -> int:
    from stegobench.benchmark.text import name_problem, normalise

    if not args.name:
        raise UsageError("add-token: give --name (who the token is for)")
    name = normalise(args.name)  # the submitter shown on every entry made with the token
    problem = name_problem(name)
    if problem:
        raise UsageError(f"add-token: --name {problem}")
    token = store.add_token(name)
    print(f"token for {name} (shown once; only its sha256 is stored):\n{token}")
    return EXIT_OK


def revoke_token(args: argparse.Namespace, cfg, store) -> int:
    n = store.revoke_token(args.name or "")
    print(f"revoked {n} token(s) of {args.name!r}")
    return EXIT_OK if n else EXIT_FAILED


def requeue(args: argparse.Namespace, cfg, store) -> int:
    from stegobench.benchmark.submit import requeue as requeue_failed

    out = requeue_failed(cfg, store, args.id or None)
    print(f"requeued {len(out.ids)} FAILED submission(s): {', '.join(f'#{i}' for i in out.ids) or 'none'}")
    for sid, why in out.refused.items():
        print(f"not requeued #{sid}: {why}", file=sys.stderr)
    return EXIT_FAILED if out.refused else EXIT_OK


def rescore(args: argparse.Namespace, cfg, store) -> int:
    from stegobench.benchmark.rescore import rescore_leaderboard
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig

    eval_cfg = load_config(EvalConfig, cfg.eval_config_path(), cfg.eval_overrides)
    done, base = rescore_leaderboard(store, eval_cfg.bootstrap_resamples, eval_cfg.seed)
    print(f"rescored {done} finished submission(s) and {base} baseline(s) from their samples "
          "(no decoding): every row is now scored by the current covert_score definition")
    return EXIT_OK


ACTIONS = {"show": show, "add-token": add_token, "revoke-token": revoke_token, "requeue": requeue, "rescore": rescore}
