"""Shared fixtures: small track configs and a generated corpus reused across tests (generation takes ~1 s)."""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import pytest

from stegobench.core.config import load_config
from stegobench.data_gen.generate import generate
from stegobench.data_gen.track import TrackConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
NO_CORPUS = {"path": "", "content_sha256": ""}  # a RunLog's dataset where a test's run evaluated no corpus


def track(path: str = "configs/data/real-v1.yaml", *overrides: str) -> TrackConfig:
    return load_config(TrackConfig, REPO / path, list(overrides))


@pytest.fixture(scope="session")
def real_corpus(tmp_path_factory) -> Path:
    """real-v1 with the positive control off, generated once per test session."""
    out = tmp_path_factory.mktemp("corpus") / "real-v1"
    generate(track(), out)
    return out


@pytest.fixture(scope="session")
def quickstart_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "quickstart"
    generate(track("configs/data/quickstart.yaml"), out)
    return out


def home_with_models(folder: Path) -> Path:
    """An empty $STEGOBENCH_HOME at `folder` with the converted models linked in: converting SmolLM2's GGUF
    again costs ~25 s, and a test of caches, leaderboards or augment needs none of that."""
    from stegobench.core.models import prepare_smollm2, prepare_tiny_llama, stegobench_home

    prepare_smollm2(), prepare_tiny_llama()  # once per machine, where `make setup` has not done it
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(stegobench_home() / "models")
    return folder


def tiny_train_config(data: Path, output_dir: Path, *overrides: str):
    """A few steps of tiny-llama: seconds on a CPU, enough for the loss to move."""
    from stegobench.finetune.config import TrainConfig

    base = [f"data={data}", "model=tiny-llama", f"output_dir={output_dir}", "max_steps=12", "batch_size=8",
            "learning_rate=3.0e-3", "save_steps=4", "logging_steps=1", "warmup_ratio=0.0"]
    return load_config(TrainConfig, REPO / "configs/finetune/quickstart.yaml", base + list(overrides))


# -- the leaderboard's databases -----------------------------------------------------------------------

POSTGRES_ENV = "STEGOBENCH_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database: SQLite in tmp_path, or the PostgreSQL server CI starts (`bash .ci/postgres.sh`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leaderboard.db'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the store on PostgreSQL: set {POSTGRES_ENV} (bash .ci/postgres.sh starts one)")
        pytest.skip(f"no PostgreSQL server: export {POSTGRES_ENV}=$(bash .ci/postgres.sh)")
    import sqlalchemy as sa

    url = worker_database(url, os.environ.get("PYTEST_XDIST_WORKER"))

    from stegobench.benchmark.store import metadata

    engine = sa.create_engine(url)
    metadata.drop_all(engine)  # each test starts from an empty schema
    engine.dispose()
    return url


@functools.cache
def worker_database(url: str, worker: str | None) -> str:
    """The test server's database for one pytest-xdist worker (`stegobench_test_gw0`, created on first use):
    each test empties its schema, which must not be another worker's."""
    if not worker:
        return url
    if not re.fullmatch(r"gw\d+", worker):  # xdist's names; the name goes into CREATE DATABASE
        raise ValueError(f"PYTEST_XDIST_WORKER={worker!r}: expected gw0, gw1, ...")
    import sqlalchemy as sa

    server = sa.engine.make_url(url)
    name = f"{server.database}_{worker}"
    engine = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(sa.text(f"CREATE DATABASE {engine.dialect.identifier_preparer.quote(name)}"))
    finally:
        engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


# -- parallel workers: `make test` runs `pytest -n auto`, sized here ---------------------------------------

# One worker at its peak: a test process holding torch, transformers and SmolLM2 in float32 beside a vLLM
# engine process on tiny-llama. Measured: two workers took the machine from 0.5 to 3.5 GiB in use at most
# (sampled every 2 s), ~1.5 GiB a worker; 2 GiB leaves room for what sampling missed.
SUITE_WORKER_BYTES = 2 * 2**30
# More workers each build their own session fixtures (corpora, module adapters) and split ~20 files whose
# slowest alone takes a minute: past 4 the split stops paying.
SUITE_MAX_WORKERS = 4


def suite_workers(facts) -> tuple[int, str]:
    """How many pytest-xdist workers this machine runs the suite with, and why, from its facts."""
    from stegobench.core.machine import gib

    cpus = len(facts.affinity) or facts.cpu_count
    by_memory = facts.mem_available_bytes // SUITE_WORKER_BYTES
    n = max(1, min(cpus, by_memory, SUITE_MAX_WORKERS))
    return n, (f"{n} test worker(s): {cpus} CPUs, {gib(facts.mem_available_bytes)} available at "
               f"{gib(SUITE_WORKER_BYTES)} a worker, at most {SUITE_MAX_WORKERS}")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: pytest without xdist (or -p no:xdist) runs serially
def pytest_xdist_auto_num_workers(config) -> int | None:
    from stegobench.core.machine import read_machine

    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):  # xdist's own override wins
        return None
    n, why = suite_workers(read_machine(probe_gpus=False))
    print(why, file=sys.stderr, flush=True)  # before xdist's own lines, also under -q
    return n


def leaderboard_config(tmp_path: Path, *overrides: str):
    """An evaluator on the mock backend with a scratch data directory."""
    from stegobench.benchmark.config import load_leaderboard_config

    base = [f"data_dir={tmp_path / 'lb'}", "tracks={quickstart: {data_config: configs/data/quickstart.yaml}}",
            "base_models=[mock:perfect_covert, mock:always_code, mock:never_code, tiny-llama]",
            "eval_overrides=[backend=mock, bootstrap_resamples=200]"]
    return load_leaderboard_config(None, base + list(overrides))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory) -> Path:
    """A rank-4 LoRA adapter for tiny-llama with random (non-zero) B matrices, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from stegobench.core.models import resolve_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model("tiny-llama").path))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "tiny-adapter"
    peft_model.save_pretrained(str(out))
    return out
