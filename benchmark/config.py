"""The evaluator's config: `configs/leaderboard/*.yaml` validates into `LeaderboardConfig`.

    stegobench validate --describe leaderboard
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stegobench.core.config import CheckError, option

from stegobench.core.paths import REPO_ROOT, config_path


@dataclass
class TrackSetup:
    """How the evaluator builds one track's test split."""

    data_config: str = option(
        "configs/data/quickstart.yaml",
        "Track config the submitters trained on (relative paths are read from the repository root).",
    )
    private_questions: str | None = option(
        None,
        "The operator's private question file (not in the repo; see docs/leaderboard.md). null evaluates on the "
        "public dev split, which submitters can see: fine for a demo, not for a ranking that matters.",
    )
    private_seed: int = option(0, "Seed choosing private questions per concept (keep it secret with the file).")

    def check(self) -> None:
        if self.private_questions is not None and not Path(self.private_questions).is_file():
            raise CheckError("private_questions", f"file not found: {self.private_questions}")

    @property
    def is_private(self) -> bool:
        return self.private_questions is not None

    def data_config_path(self) -> Path:
        return config_path("data", self.data_config)


@dataclass
class LeaderboardConfig:
    data_dir: str | None = option(
        None, "Where uploads, the SQLite database, track splits and run folders live "
              "(null: $STEGOBENCH_HOME/leaderboard, default ~/.cache/stegobench/leaderboard).",
    )
    database_url: str | None = option(
        None, "SQLAlchemy URL of the queue and results, e.g. postgresql+psycopg://user@host/stegobench so workers "
              "on many machines share one queue (null: SQLite in WAL mode at data_dir/leaderboard.db).",
    )
    tracks: dict[str, TrackSetup] = option(
        None, "Tracks accepted for submission, by name (the name in the track config).",
        factory=lambda: {"quickstart": TrackSetup()},
    )
    base_models: list[str] = option(
        None, "Base models a web submission may name (builtin names). The CLI (the operator) may also name a "
              "local folder.", factory=lambda: ["smollm2-135m-instruct", "tiny-llama"],
    )
    eval_config: str = option("configs/eval/default.yaml", "Evaluation config the workers use.")
    eval_overrides: list[str] = option(
        None, "KEY=VALUE overrides of eval_config, e.g. ['backend=hf', 'max_items=40'].", factory=list,
    )
    max_adapter_rank: int = option(64, "Largest LoRA rank accepted (vLLM serves ranks up to its max_lora_rank).")
    max_upload_mb: float = option(1024.0, "Largest submission (all files together), in MiB.")
    heartbeat_seconds: float = option(10.0, "How often a worker reports that its job is alive.")
    heartbeat_timeout_seconds: float = option(
        120.0, "A RUNNING job without a heartbeat for this long goes back to PENDING (its worker died).",
    )
    max_attempts: int = option(3, "A job that fails (or loses its worker) this many times becomes FAILED.")
    submissions_per_hour: int = option(10, "Web submissions a token may make per hour (429 beyond).")
    poll_seconds: float = option(5.0, "How long an idle worker waits before looking for a job again.")
    validation_timeout_seconds: float = option(
        120.0, "Web uploads are validated in a separate process, stopped (and the upload refused) after this long.",
    )
    upload_idle_timeout_seconds: float = option(
        30.0, "An upload that sends nothing for this long is cut (408): a client cannot hold a connection open.",
    )
    upload_timeout_seconds: float = option(
        900.0, "An upload's whole body must arrive within this long (408 after).",
    )

    def check(self) -> None:
        if not self.tracks:
            raise CheckError("tracks", "name at least one track")
        if self.max_adapter_rank < 1:
            raise CheckError("max_adapter_rank", f"must be >= 1, got {self.max_adapter_rank}")
        if self.max_upload_mb <= 0:
            raise CheckError("max_upload_mb", f"must be > 0, got {self.max_upload_mb}")
        if self.heartbeat_seconds <= 0 or self.heartbeat_timeout_seconds <= 2 * self.heartbeat_seconds:
            raise CheckError("heartbeat_timeout_seconds",
                             "must exceed twice heartbeat_seconds (one late heartbeat must not requeue a live job)")
        if self.max_attempts < 1:
            raise CheckError("max_attempts", f"must be >= 1, got {self.max_attempts}")
        if self.submissions_per_hour < 1:
            raise CheckError("submissions_per_hour", f"must be >= 1, got {self.submissions_per_hour}")
        for key in ("validation_timeout_seconds", "upload_idle_timeout_seconds", "upload_timeout_seconds"):
            if not getattr(self, key) > 0:
                raise CheckError(key, f"must be > 0 seconds, got {getattr(self, key)}")

    def data_path(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        from stegobench.core.models import stegobench_home

        return stegobench_home() / "leaderboard"

    def db_url(self) -> str:
        url = self.database_url or os.environ.get("STEGOBENCH_DATABASE_URL")
        return url or f"sqlite:///{self.data_path() / 'leaderboard.db'}"

    def eval_config_path(self) -> Path:
        return config_path("eval", self.eval_config)


def track_config(cfg: LeaderboardConfig, name: str):
    """The TrackConfig the evaluator builds track `name` from: its data config, with the private questions
    when configured (the worker's test split and the track's MDE both read it)."""
    from stegobench.core.config import load_config
    from stegobench.core.errors import ConfigError
    from stegobench.data_gen.track import TrackConfig

    setup = cfg.tracks[name]
    overrides = [f"private_questions={setup.private_questions}", f"private_seed={setup.private_seed}"] \
        if setup.is_private else []
    track_cfg = load_config(TrackConfig, setup.data_config_path(), overrides)
    if track_cfg.name != name:
        raise ConfigError(f"leaderboard track {name!r}: {setup.data_config} defines track {track_cfg.name!r}")
    return track_cfg


DEFAULT_CONFIG = REPO_ROOT / "configs/leaderboard/default.yaml"


def load_leaderboard_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> LeaderboardConfig:
    from stegobench.core.config import load_config

    return load_config(LeaderboardConfig, path if path is not None else DEFAULT_CONFIG, overrides)
