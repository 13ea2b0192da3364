"""`stegobench submit`: an adapter or merged model onto the local leaderboard's queue (the operator's door)."""

from __future__ import annotations

import argparse
import sys

from stegobench.core.errors import EXIT_FAILED, EXIT_OK

from .common import add_leaderboard_config, leaderboard


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("submit", help="submit an adapter or merged model to the local leaderboard (operator)",
                              description="Validate and queue a submission; a refused one is stored with its reason.")
    p.add_argument("--name", required=True, help="display name on the leaderboard")
    p.add_argument("--submitter", required=True, help="who submits it")
    p.add_argument("--track", required=True, help="track the model was trained for, e.g. quickstart")
    p.add_argument("--model", required=True, help="base model: builtin name or local folder")
    p.add_argument("--revision", default=None, help="base model revision (hub ids), recorded for deduplication")
    p.add_argument("--adapter", default=None,
                   help="LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--merged", default=None, help="merged model folder (config.json + *.safetensors)")
    p.add_argument("--notes", default="", help="free text shown on the detail page")
    add_leaderboard_config(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stegobench.benchmark.submit import SubmissionRequest, submit_folder

    cfg, store = leaderboard(args)
    req = SubmissionRequest(display_name=args.name, submitter=args.submitter, track=args.track,
                            base_model=args.model, revision=args.revision, notes=args.notes)
    outcome = submit_folder(cfg, store, req, adapter=args.adapter, merged=args.merged)  # or Rejected: exit 2
    if outcome.status == "PENDING":
        print(f"submission #{outcome.id} accepted and queued; run `stegobench worker` to evaluate it")
        return EXIT_OK
    print(f"submission #{outcome.id} refused: {outcome.reason}", file=sys.stderr)
    return EXIT_FAILED
