"""Shared fixtures: small track configs and a generated corpus reused across tests (generation takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.config import load_config
from data_gen.generate import generate
from data_gen.track import TrackConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def track(path: str = "configs/data/real-v1.yaml", *overrides: str) -> TrackConfig:
    return load_config(TrackConfig, REPO / path, list(overrides))


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory) -> Path:
    """real-v1 with the positive control off, generated once per test session."""
    out = tmp_path_factory.mktemp("corpus") / "real-v1"
    generate(track(), out)
    return out
