"""`stegobench validate`: check config and data files, or a whole track, without running anything."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from stegobench.core.errors import UsageError
from stegobench.core.paths import config_path, shipped_configs

from .common import add_set, print_track, track_config

# Config kinds `validate` knows, as "module:Class" so that checking one never imports another stage.
CONFIG_KINDS = {
    "data": "stegobench.data_gen.track:TrackConfig",
    "finetune": "stegobench.finetune.config:TrainConfig",
    "eval": "stegobench.eval.config:EvalConfig",
    "leaderboard": "stegobench.benchmark.config:LeaderboardConfig",
}
# Data files with their own loaders.
DATA_KINDS = {
    "lexicon": "stegobench.data_gen.lexicon:load_lexicon",
    "templates": "stegobench.data_gen.templates:load_templates",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="check config and data files without running anything",
        description="Load and validate config files; print 'ok' or a clear error naming the key.")
    p.add_argument("paths", nargs="*", help="config files or shipped configs' names; the kind is guessed from the "
                   "folder (configs/data/...); none: every shipped config")
    p.add_argument("--kind", default=None, help=f"kind of every file: {', '.join([*CONFIG_KINDS, *DATA_KINDS])}")
    p.add_argument("--describe", metavar="KIND", default=None,
                   help="print every option of a config kind with its type, default and meaning")
    p.add_argument("--track", metavar="FILE", action="append", default=[],
                   help="check a track fully without generating: its code book, concepts, templates and every "
                        "rule of the corpus (a track YAML or a shipped track's name); repeatable")
    add_set(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.describe:
        return describe(args.describe)
    for raw in args.track:
        check_track(raw, args.overrides)
    if args.track and not args.paths:
        return 0
    for path in [config_path(None, raw) for raw in args.paths] if args.paths else shipped_configs():
        kind = check_file(path, args.kind, args.overrides)
        print(f"ok  {path}  ({kind})")
    return 0


def describe(kind: str) -> int:
    from stegobench.core.config import describe as options

    if kind not in CONFIG_KINDS:
        raise UsageError(f"--describe: unknown kind {kind!r}; choose from {', '.join(CONFIG_KINDS)}")
    print(f"Options of the {kind!r} config ({CONFIG_KINDS[kind]}):")
    for line in options(_load_symbol(CONFIG_KINDS[kind])):
        print("  " + line)
    return 0


def check_track(raw: str, overrides: list[str]) -> None:
    """Every input of the track checked as `gen` would, nothing written (the augment model is not run)."""
    from stegobench.data_gen.generate import prepare

    config, source = track_config(raw, overrides)
    m = prepare(config, source, augment=False).manifest
    before = " before augmentation" if m.augment else ""
    print(f"ok  {source}  (track {m.track}: every input checked, nothing written; content sha256"
          f"{before} {m.content_sha256[:16]})")
    print_track(m)


def check_file(path: Path, kind: str | None, overrides: list[str]) -> str:
    """Load `path` as `kind` (guessed from its folder or name when None); returns the kind it was checked as."""
    from stegobench.core.config import load_config

    kind = kind or _guess_kind(path)
    if kind is None:
        raise UsageError(f"{path}: cannot tell what kind of config this is; pass --kind "
                         f"({', '.join([*CONFIG_KINDS, *DATA_KINDS])})")
    if kind in DATA_KINDS:
        _load_symbol(DATA_KINDS[kind])(path)
    elif kind in CONFIG_KINDS:
        load_config(_load_symbol(CONFIG_KINDS[kind]), path, overrides)
    else:
        raise UsageError(f"{path}: unknown --kind {kind!r}; choose from {', '.join([*CONFIG_KINDS, *DATA_KINDS])}")
    return kind


def _load_symbol(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _guess_kind(path: Path) -> str | None:
    """configs/data/x.yaml -> 'data'; a file named lexicon*.yaml or templates*.yaml -> that kind."""
    for kind in DATA_KINDS:
        if path.name.startswith(kind):
            return kind
    parent = path.resolve().parent.name
    return parent if parent in CONFIG_KINDS else None
