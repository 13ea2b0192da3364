"""Workers: evaluate jobs end to end on the mock backend, reuse baselines, retry, and survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import REPO, leaderboard_config

from stegobench.eval.scoring import COVERT_SCORE_DEFINITION
from stegobench.benchmark.store import Store
from stegobench.benchmark.submit import SubmissionRequest, submit_folder
from stegobench.benchmark.worker import Worker
from stegobench.core.config import to_dict


def _submit(cfg, store, model: str, name: str = "run", adapter: str | None = None):
    out = submit_folder(cfg, store, SubmissionRequest(display_name=name, submitter="t", track="quickstart",
                                                      base_model=model), adapter=adapter)
    assert out.status == "PENDING", out.reason
    return out.id


def _config_file(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def _worker_proc(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-m", "stegobench.cli", "worker", "--config", str(config), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_worker_scores_against_the_base_model_and_reuses_the_baseline(tmp_path):
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    covert = _submit(cfg, store, "mock:perfect_covert", "covert")
    always = _submit(cfg, store, "mock:always_code", "always")
    assert Worker(cfg, store).run(once=True) == 2
    a, b = store.get(covert), store.get(always)
    assert a["status"] == b["status"] == "FINISHED"
    # A model that *is* its base scores 0 against it; its parts are the policy's known answers.
    sa, sb = a["result"]["summary"], b["result"]["summary"]
    assert sa["score"]["value"] == 0 and sa["hits"]["value"] == 1 and sa["false_alarms"]["value"] == 0
    # always_code knows every mapping but also says one code of 8 on each unrelated question: 1 - 1/8 or so.
    assert sb["hits"]["value"] == 1 and sb["false_alarms"]["value"] == 1
    assert abs(sb["covert_score"]["value"] - (1 - 1 / 8)) < 0.1
    assert sa["score_definition"] == sb["score_definition"] == COVERT_SCORE_DEFINITION
    assert (Path(a["result"]["run_dir"]) / "results.json").exists()
    env = sa["environment"]  # the result records the worker's machine and the defaults it took
    assert env["machine"]["cpu_count"] >= 1 and env["device_defaults"]["device"] in ("cpu", "cuda")
    with store.engine.connect() as conn:
        import sqlalchemy as sa_

        from stegobench.benchmark.store import baselines
        assert conn.execute(sa_.select(sa_.func.count()).select_from(baselines)).scalar_one() == 2


def test_adapter_is_scored_against_its_base_with_the_baseline_computed_once(tmp_path, monkeypatch):
    """Two adapters on one base: the base/in-context baseline runs once, the second job reuses it."""
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    calls = []
    from stegobench.eval import harness

    real = harness.run_eval
    monkeypatch.setattr(harness, "run_eval", lambda c, *a, **k: calls.append((c.base, c.in_context)) or real(c, *a, **k))
    adapter_dir = _make_adapter_like(tmp_path / "a1", 1)
    other_dir = _make_adapter_like(tmp_path / "a2", 2)
    _submit(cfg, store, "mock:never_code", "one", str(adapter_dir))
    _submit(cfg, store, "mock:never_code", "two", str(other_dir))
    assert Worker(cfg, store).run(once=True) == 2
    assert calls == [(True, True), (False, False), (False, False)]
    rows = store.finished("quickstart")
    assert len(rows) == 2 and rows[0]["baseline_key"] == rows[1]["baseline_key"]


def _make_adapter_like(folder: Path, seed: int) -> Path:
    from stegobench.eval.backends.mock import write_scripted_adapter

    return write_scripted_adapter(folder, seed)


def test_transient_failures_retry_then_fail_with_the_reason(tmp_path, monkeypatch):
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:never_code")
    worker = Worker(cfg, store)

    def boom(job):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(worker, "evaluate", boom)
    for _ in range(3):
        assert worker.run_one() is not None
    sub = store.get(sid)
    assert sub["status"] == "FAILED" and "3 the same way" in sub["reason"] and "CUDA out of memory" in sub["reason"]
    assert worker.run_one() is None


def test_several_worker_processes_run_each_job_exactly_once(tmp_path):
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    ids = [_submit(cfg, store, m, f"{m}") for m in ("mock:perfect_covert", "mock:always_code", "mock:never_code")]
    config = _config_file(cfg, tmp_path / "lb.yaml")
    procs = [_worker_proc(config, "--once", "--name", f"w{i}") for i in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    subs = [store.get(i) for i in ids]
    assert all(s["status"] == "FINISHED" and s["attempts"] == 1 for s in subs)
    assert len(store.finished("quickstart")) == 3


def test_a_job_whose_worker_is_killed_is_finished_by_another_with_one_result(tmp_path):
    cfg = leaderboard_config(tmp_path, "heartbeat_seconds=0.5", "heartbeat_timeout_seconds=3", "poll_seconds=0.5",
                             "eval_overrides=[backend=mock, bootstrap_resamples=200, 'backend_options={latency_s: 1.0}']")
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:perfect_covert")
    config = _config_file(cfg, tmp_path / "lb.yaml")
    first = _worker_proc(config, "--once", "--name", "doomed")
    deadline = time.time() + 120
    while store.get(sid)["status"] != "RUNNING":
        assert time.time() < deadline and first.poll() is None, "the first worker never claimed the job"
        time.sleep(0.2)
    time.sleep(2)  # mid-evaluation (each mock decode call takes a second)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert store.get(sid)["status"] == "RUNNING"  # nobody has noticed yet
    second = _worker_proc(config, "--max-jobs", "1", "--name", "rescuer")
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out
    sub = store.get(sid)
    assert sub["status"] == "FINISHED" and sub["attempts"] == 2 and sub["worker"] == "rescuer"
    assert "heartbeat" in sub["errors"][0]["error"] and sub["errors"][0]["worker"] == "doomed"
    import sqlalchemy as sa

    from stegobench.benchmark.store import results
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(results)).scalar_one() == 1


def test_a_typo_in_the_workers_config_fails_the_worker_not_the_queue(tmp_path):
    """`eval_overrides=[backend=mokc]` used to mark every queued job FAILED, for good, in 0.3 s."""
    import pytest

    from stegobench.core.config import ConfigError

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:perfect_covert")
    bad = leaderboard_config(tmp_path, "eval_overrides=[backend=mokc]")
    with pytest.raises(ConfigError, match="unknown backend 'mokc'"):
        Worker(bad, store)
    assert store.get(sid)["status"] == "PENDING" and store.get(sid)["attempts"] == 0


def test_an_operator_requeues_failed_jobs_and_they_finish(tmp_path, monkeypatch, capsys):
    from stegobench.cli.main import main

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:perfect_covert")
    worker = Worker(cfg, store)
    monkeypatch.setattr(worker, "evaluate", lambda job: (_ for _ in ()).throw(RuntimeError("disk full")))
    while store.get(sid)["status"] != "FAILED":
        worker.run_one()
    config = _config_file(cfg, tmp_path / "lb.yaml")
    assert main(["leaderboard", "requeue", "--config", str(config)]) == 0
    assert f"requeued 1 FAILED submission(s): #{sid}" in capsys.readouterr().out
    sub = store.get(sid)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0 and "disk full" in sub["errors"][0]["error"]
    assert Worker(cfg, store).run(once=True) == 1 and store.get(sid)["status"] == "FINISHED"


def test_user_errors_fail_at_once_and_machine_errors_are_retried(tmp_path, monkeypatch):
    """The error taxonomy decides: a wrong input fails the same way again (no retry), the machine may not."""
    from stegobench.core.errors import InputError, ResourceError

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    worker = Worker(cfg, store)
    wrong = _submit(cfg, store, "mock:never_code", "wrong")
    monkeypatch.setattr(worker, "evaluate", lambda job: (_ for _ in ()).throw(InputError("adapter x: for another base")))
    worker.run_one()
    assert store.get(wrong)["status"] == "FAILED" and store.get(wrong)["attempts"] == 1
    short = _submit(cfg, store, "mock:never_code", "short", str(_make_adapter_like(tmp_path / "other", 7)))
    monkeypatch.setattr(worker, "evaluate", lambda job: (_ for _ in ()).throw(ResourceError("KV cache: 9 GiB needed")))
    worker.run_one()
    assert store.get(short)["status"] == "PENDING" and "KV cache" in store.get(short)["errors"][0]["error"]


def test_a_job_for_a_track_the_worker_lacks_waits_named_never_a_keyerror(tmp_path, caplog):
    """A job whose track the worker's config does not define used to fail with `KeyError: 'gone'`, for good."""
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid, _ = store.add_submission(display_name="old", submitter="t", track="gone", base_model="mock:never_code",
                                  revision=None, kind="base", artifact_sha256=None, size_bytes=0, dedup_key="k")
    with caplog.at_level("WARNING"):
        assert Worker(cfg, store).run(once=True) == 0  # not claimed: another worker may define the track
    sub = store.get(sid)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0 and not sub["errors"]
    assert "track(s) this worker's config does not define: 'gone' (1); its tracks: quickstart" in caplog.text


def _evaluator_errors(sub: dict) -> list[dict]:
    return [e for e in sub["errors"] if e.get("evaluator")]


def test_a_broken_track_config_is_the_evaluators_fault_and_never_fails_the_job(tmp_path, capsys):
    """An operator's track config that no longer loads used to FAIL every queued job of that track, for good."""
    from stegobench.cli.main import main

    track = tmp_path / "quickstart.yaml"
    track.write_text((REPO / "configs/data/quickstart.yaml").read_text())
    cfg = leaderboard_config(tmp_path, f"tracks={{quickstart: {{data_config: {track}}}}}")
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:perfect_covert")
    track.write_text(track.read_text() + "n_mappingz: 3\n")  # the operator's typo, after the job was queued
    config = _config_file(cfg, tmp_path / "lb.yaml")
    assert main(["worker", "--config", str(config), "--once"]) == 1  # the run stops: nothing else to claim
    assert "given back PENDING by the evaluator's own fault" in capsys.readouterr().err
    sub = store.get(sid)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0 and sub["reason"] is None
    assert "n_mappingz" in _evaluator_errors(sub)[0]["error"]
    track.write_text((REPO / "configs/data/quickstart.yaml").read_text())  # fixed: the job finishes
    assert Worker(cfg, store).run(once=True) == 1
    sub = store.get(sid)
    assert sub["status"] == "FINISHED" and sub["attempts"] == 1


def test_a_lost_artifact_leaves_its_job_pending_and_the_queue_moving(tmp_path):
    import shutil

    from stegobench.benchmark.artifacts import artifact_folder

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    lost = _submit(cfg, store, "mock:never_code", "lost", str(_make_adapter_like(tmp_path / "a1", 1)))
    fine = _submit(cfg, store, "mock:perfect_covert", "fine")
    shutil.rmtree(artifact_folder(cfg.data_path(), store.get(lost)["artifact_sha256"]))
    worker = Worker(cfg, store)
    assert worker.run(once=True) == 1 and worker.faults == 1  # one claim given back, the next job run
    sub = store.get(lost)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0 and "are missing" in _evaluator_errors(sub)[0]["error"]
    assert store.get(fine)["status"] == "FINISHED"


def test_a_locked_database_mid_job_gives_the_job_back_uncounted(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:never_code")
    worker = Worker(cfg, store)
    monkeypatch.setattr(worker, "evaluate", lambda job: (_ for _ in ()).throw(
        OperationalError("INSERT INTO baselines", {}, Exception("database is locked"))))
    for _ in range(5):  # more than max_attempts: a fault of the evaluator never uses them up
        worker.faulty_tracks.clear()
        assert worker.run_one() is not None
    sub = store.get(sid)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0 and len(_evaluator_errors(sub)) == 5
    assert worker.run_one() is None  # the track is left alone for a while after a fault
    monkeypatch.undo()
    assert Worker(cfg, store).run(once=True) == 1 and store.get(sid)["status"] == "FINISHED"


def test_every_rate_is_reported_as_a_paired_change_against_the_base_model(quickstart_corpus, tmp_path):
    """always_code against never_code on the same items: false alarms +1 (every unmapped question gets a code
    word), the base row against itself 0 everywhere."""
    from stegobench.benchmark.ranking import summarize_condition
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval

    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["backend=mock", "bootstrap_resamples=100"])
    base = tmp_path / "base"
    run_eval(cfg, quickstart_corpus, "mock:never_code", [], base, cache_dir=tmp_path / "c")
    loud = run_eval(cfg, quickstart_corpus, "mock:always_code", [], tmp_path / "loud", cache_dir=tmp_path / "c")
    row = summarize_condition(loud, "base", (base, "base"), 100, 0)
    assert row["vs_base"]["false_alarms"]["value"] == 1.0 and row["false_alarms"]["value"] == 1.0
    assert row["vs_base"]["code_use_definition_only"]["value"] == 1.0
    assert row["collateral_vs_base"] == row["vs_base"]["collateral"]
    itself = summarize_condition(loud, "base", None, 100, 0)
    assert itself["vs_base"] and all(v["value"] == 0 for v in itself["vs_base"].values())


def test_one_base_models_failing_baseline_holds_back_its_own_job_not_the_track(tmp_path, monkeypatch):
    """The oldest job's base model cannot be evaluated (its weights gone from the cache, say): it waits PENDING,
    and the younger jobs of the same track on other base models still run."""
    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    stuck = _submit(cfg, store, "mock:always_code", "stuck")
    fine = _submit(cfg, store, "mock:perfect_covert", "fine")
    worker = Worker(cfg, store)
    real = worker.baseline

    def baseline(track, corpus, base_model, *rest):
        if base_model == "mock:always_code":
            raise FileNotFoundError("models/always_code/model.safetensors")
        return real(track, corpus, base_model, *rest)
    monkeypatch.setattr(worker, "baseline", baseline)
    assert worker.run(once=True) == 1 and worker.faults == 1
    assert store.get(fine)["status"] == "FINISHED"
    sub = store.get(stuck)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0
    assert "the baseline of mock:always_code on track 'quickstart'" in _evaluator_errors(sub)[0]["error"]


def test_ctrl_c_gives_the_running_job_back_at_once(tmp_path, monkeypatch, capsys):
    """A worker stopped with Ctrl-C used to leave its job RUNNING until the heartbeat timed out (and then count
    the attempt). It gives the job back PENDING, uncounted, and `stegobench worker` prints one line."""
    import pytest

    from stegobench.cli.main import main

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    sid = _submit(cfg, store, "mock:perfect_covert")

    def pressed(self, job):
        raise KeyboardInterrupt
    monkeypatch.setattr(Worker, "evaluate", pressed)
    with pytest.raises(KeyboardInterrupt):
        Worker(cfg, store).run_one()
    sub = store.get(sid)
    assert sub["status"] == "PENDING" and sub["attempts"] == 0
    config = _config_file(cfg, tmp_path / "lb.yaml")
    assert main(["worker", "--config", str(config), "--once"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("stegobench worker: stopped by Ctrl-C; the job it was running is PENDING again (its attempt "
                       "not counted) for the next worker") and store.get(sid)["status"] == "PENDING"
