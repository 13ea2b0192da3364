"""train_manifest.json: what a finished training run was (config, data, base model, steps, tokens, losses).

Written last by finetune/train.py (its presence with status "finished" marks the adapter complete) and read by
whatever reuses a run: `finished_run_matches`, the quickstart, the leaderboard. Schema 1 grew fields without a
new number (`final_loss_step`, `eval_split`, `eval_loss_history`, `eval_seconds`): an older file lacks them and
reads with them empty. A file without a schema_version is taken for schema 1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator
from pydantic.dataclasses import dataclass

from stegobench.core.records import STRICT_FIELDS, read_json_record

MANIFEST = "train_manifest.json"
TRAIN_MANIFEST_SCHEMA = 1


@dataclass(frozen=True, config=STRICT_FIELDS)
class TrainedOn:
    """The corpus a run trained on: where it was, and its identity (track, content and manifest hashes)."""

    path: str
    track: str | None
    content_sha256: str | None
    manifest_sha256: str


@dataclass(frozen=True, config=STRICT_FIELDS)
class ParameterCounts:
    trainable: int
    total: int


@dataclass(frozen=True, config=STRICT_FIELDS)
class LossPoint:
    step: int
    loss: float


@dataclass(frozen=True, config=STRICT_FIELDS)
class EvalLossPoint:
    step: int
    epoch: float | None
    eval_loss: float


@dataclass(frozen=True, config=STRICT_FIELDS)
class TrainManifest:
    schema_version: int
    status: Literal["finished"]
    config: dict[str, Any]  # the resolved TrainConfig
    seed: int
    base_model: dict[str, Any]  # the model's identity (core/models.py): name, weights hashes
    dataset: TrainedOn
    adapter_sha256: str
    parameters: ParameterCounts
    world_size: int
    resumed_from: str | None  # the checkpoint a --resume started from
    global_steps: int
    epochs: float
    train_seconds: float
    real_tokens: int
    padded_tokens: int
    real_tokens_per_second: float | None
    final_loss: float | None  # the final optimiser step's own loss (the last logged one is a mean over steps)
    loss_history: list[LossPoint]
    environment: dict[str, Any]
    final_loss_step: int | None = None
    eval_split: str | None = None
    eval_loss_history: list[EvalLossPoint] = dataclasses.field(default_factory=list)
    eval_seconds: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        if isinstance(data, dict) and "schema_version" not in data:
            data = {**data, "schema_version": 1}
        if isinstance(data, dict) and isinstance(data["schema_version"], int) \
                and data["schema_version"] > TRAIN_MANIFEST_SCHEMA:
            raise ValueError(f"schema_version {data['schema_version']} was written by a newer stegobench; this one "
                             f"reads up to {TRAIN_MANIFEST_SCHEMA} (upgrade stegobench)")
        return data

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_train_manifest(folder: str | Path) -> TrainManifest:
    """The train_manifest.json of a training run folder, validated (an error names the file and the field)."""
    return read_json_record(TrainManifest, Path(folder) / MANIFEST, "`stegobench train` (a finished run)")
