"""What several commands share: the --set and --config flags, the leaderboard a command works on, and a track's
summary lines."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stegobench.core.paths import config_path

if TYPE_CHECKING:
    from stegobench.benchmark.config import LeaderboardConfig
    from stegobench.benchmark.store import Store
    from stegobench.data_gen.records import CorpusManifest
    from stegobench.data_gen.track import TrackConfig


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (dotted keys reach nested fields; the value is parsed as YAML); "
                        "repeatable, e.g. --set seed=3 --set n_definition_only=10")


def add_leaderboard_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="leaderboard config YAML (default configs/leaderboard/default.yaml; "
                        "every key: stegobench validate --describe leaderboard)")
    add_set(p)


def leaderboard(args: argparse.Namespace) -> tuple[LeaderboardConfig, Store]:
    """(config, store) of the evaluator named by --config/--set."""
    from stegobench.benchmark.config import load_leaderboard_config
    from stegobench.benchmark.store import Store

    cfg = load_leaderboard_config(args.config, args.overrides)
    return cfg, Store(cfg.db_url())


def track_config(raw: str, overrides: list[str]) -> tuple[TrackConfig, str]:
    """(the track config named by `raw`, a file or a shipped track's name, with overrides; its file)."""
    from stegobench.core.config import load_config
    from stegobench.data_gen.track import TrackConfig

    path = config_path("data", raw)
    return load_config(TrackConfig, path, overrides), str(path)


def print_track(m: CorpusManifest) -> None:
    """What a track holds, from its manifest: the same lines for `gen` and `validate --track`."""
    s, book = m.sizes, m.codebook
    if book is not None:
        print(f"  mappings       {s.mappings} ({book.source}): "
              + ", ".join(f"{x.code}={x.concept}" for x in book.mappings[:8])
              + (", ..." if len(book.mappings) > 8 else ""))
    print(f"  train docs     {s.train_documents}  {s.train_by_kind}"
          + (f"  ~{s.train_tokens} tokens" if s.train_tokens is not None else ""))
    print(f"  eval items     {s.eval_items}  {s.eval_by_split}  controls {s.eval_controls}")
    if m.original_meaning_skipped:
        print(f"                 no original-meaning controls for {', '.join(m.original_meaning_skipped)}: "
              "real words the lexicon has no questions for")
    print(f"  recall probes  {s.recall_probes}")
    print(f"  validation     {s.validation_documents} held-out-template definitions (training's eval loss)")
    if m.augment:
        from stegobench.data_gen.augment import summary

        print(f"  augment        {summary(m.augment)}")
