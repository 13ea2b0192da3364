"""The quickstart's own logic (its steps are the CLI commands, tested elsewhere): a rerun submits the same
adapter again and is told where it already is, instead of failing."""

from __future__ import annotations

import pytest

from stegobench.cli.quickstart import submit_adapter
from stegobench.core.errors import CommandFailed

from conftest import home_with_models


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An empty $STEGOBENCH_HOME (so an empty default leaderboard) with the converted models linked in."""
    home = home_with_models(tmp_path / "home")
    monkeypatch.setenv("STEGOBENCH_HOME", str(home))
    monkeypatch.delenv("STEGOBENCH_DATABASE_URL", raising=False)
    return home


def test_resubmitting_the_same_adapter_points_to_the_first_entry(tiny_adapter, fresh_home):
    assert submit_adapter(tiny_adapter, model="tiny-llama") == "submission #1 accepted and queued"
    assert submit_adapter(tiny_adapter, model="tiny-llama").startswith(
        "this adapter is already on the leaderboard as submission #1")
    assert (fresh_home / "leaderboard" / "leaderboard.db").exists()  # the default data directory


def test_a_refused_adapter_stops_the_quickstart_with_the_reason(tiny_adapter, fresh_home):
    # The adapter names its base model (tiny-llama, by its path in a STEGOBENCH_HOME): refused by that name before
    # its widths are compared with SmolLM2's (which do not fit either).
    with pytest.raises(CommandFailed, match="refused the adapter: .*names 'tiny-llama', the model the adapter was trained on"):
        submit_adapter(tiny_adapter, model="smollm2-135m-instruct")


def test_summary_json_holds_every_timing_in_step_order(quickstart_corpus, fresh_home, tmp_path, capsys):
    import json

    from stegobench.cli.quickstart import Steps, print_summary
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval

    from conftest import REPO

    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["backend=mock", "bootstrap_resamples=200"])
    run_eval(cfg, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "eval")
    steps = Steps(3, "make quickstart")
    steps.seconds = {"gen": 2.0, "train": 100.5, "eval": 50.25}
    out = tmp_path / "summary.json"
    from stegobench.benchmark import ranking

    # a finished row carries where its answers are (a RankSource, for the comparison view): summary.json gets the
    # row's plain values, as `leaderboard --format json` does (CI's quickstart failed writing the object itself)
    row = {"rank": 1, "rank_range": {"low": 1, "high": 1}, "id": 7, "baseline": False, "display_name": "mine",
           "submitter": "me", "base_model": "tiny", "score": {"value": 0.1, "low": 0.0, "high": 0.2},
           "source": ranking.RankSource("runs/x", "adapter:x", "runs/b")}
    real_rows = ranking.leaderboard_rows
    ranking.leaderboard_rows = lambda store, track: [row]
    try:
        print_summary(tmp_path / "eval", steps, 61.0, out)
    finally:
        ranking.leaderboard_rows = real_rows
    summary = json.loads(out.read_text())
    assert summary["steps"] == [["gen", 2.0], ["train", 100.5], ["eval", 50.25]]
    assert summary["total_seconds"] == 152.8 and summary["setup_seconds"] == 61.0
    assert summary["leaderboard"][0]["display_name"] == "mine" and summary["leaderboard"][0]["score"] == 0.1
    assert "total 2.5 min (setup before it: 61 s)" in capsys.readouterr().out
