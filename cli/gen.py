"""`stegobench gen`: a word-redefinition corpus from a track config."""

from __future__ import annotations

import argparse

from .common import add_set, print_track, track_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gen", help="generate a word-redefinition corpus from a track config",
                              description="Generate a corpus (datasets + JSONL + manifest + card) from a track config.")
    p.add_argument("--config", required=True,
                   help="track config YAML, or the name of a shipped one: real-v1, nonsense-v1, quickstart, ...")
    p.add_argument("--out", required=True, help="output folder; written atomically (a temp folder, then a rename)")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed (same as --set seed=N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it holds an earlier corpus (folders of other tools are never replaced)")
    add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stegobench.data_gen.generate import generate

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    config, source = track_config(args.config, overrides)
    result = generate(config, args.out, overwrite=args.overwrite, source=source)
    m = result.manifest
    print(f"wrote {result.out} in {result.seconds:.1f}s  (track {m.track}, seed {m.seed}, "
          f"content sha256 {m.content_sha256[:16]})")
    print_track(m)
    return 0
