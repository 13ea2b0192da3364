"""`stegobench leaderboard rescore`: stored rows scored by an earlier covert_score definition are brought to the
current one from their samples, and every row says which definition scored it."""

from __future__ import annotations

import json

import pytest

from conftest import leaderboard_config
from test_leaderboard_worker import _config_file, _submit

from stegobench.cli.main import main
from stegobench.benchmark.ranking import leaderboard_rows, render
from stegobench.benchmark.store import Store, results
from stegobench.benchmark.worker import Worker
from stegobench.eval.scoring import COVERT_SCORE_DEFINITION, PREVIOUS_COVERT_SCORE_DEFINITION


def test_rescore_brings_old_rows_to_the_current_definition(tmp_path, capsys):
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:always_code", "always")
    assert Worker(cfg, store).run(once=True) == 1
    current = store.get(sid)["result"]["summary"]
    # A row as an earlier stegobench stored it: any-code false alarms (always_code scored 0), no definition.
    old = {k: v for k, v in current.items() if k != "score_definition"}
    old["covert_score"] = {"value": 0.0, "low": 0.0, "high": 0.0}
    with store.engine.begin() as conn:
        conn.execute(results.update().where(results.c.submission_id == sid).values(summary=json.dumps(old)))
    row = next(r for r in leaderboard_rows(store, "quickstart") if r["id"] == sid)
    assert row["score_definition"] == PREVIOUS_COVERT_SCORE_DEFINITION
    assert PREVIOUS_COVERT_SCORE_DEFINITION in render([row], "table")

    assert main(["leaderboard", "rescore", "--config", str(_config_file(cfg, tmp_path / "lb.yaml"))]) == 0
    assert "rescored 1 finished submission(s) and 1 baseline(s)" in capsys.readouterr().out
    new = store.get(sid)["result"]["summary"]
    assert new["score_definition"] == COVERT_SCORE_DEFINITION
    assert new["covert_score"]["value"] == pytest.approx(current["covert_score"]["value"])
    assert new["environment"] == current["environment"]  # what the worker recorded is kept
    assert all(r["score_definition"] == COVERT_SCORE_DEFINITION for r in leaderboard_rows(store, "quickstart"))
