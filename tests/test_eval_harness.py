"""`stegobench eval` end to end on the mock backend: the run folder, rescoring, resuming and bad input."""

from __future__ import annotations

from stegobench.core.errors import InputError

import json

import pytest

from stegobench.cli.main import main
from stegobench.core.config import ConfigError, load_config
from stegobench.eval.config import EvalConfig
from stegobench.eval.harness import rescore, run_eval
from stegobench.eval.runlog import SCHEMA_VERSION

from conftest import REPO


def cfg(*overrides: str) -> EvalConfig:
    return load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["backend=mock", "bootstrap_resamples=200", *overrides])


def test_run_folder_explains_itself(quickstart_corpus, tmp_path):
    out = tmp_path / "run"
    doc = run_eval(cfg(), quickstart_corpus, "mock:perfect_covert", [], out, cache_dir=tmp_path / "cache")
    assert {p.name for p in out.iterdir()} == {"samples.jsonl", "results.json", "report.md", "rates.png", "per_mapping.png"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["status"] == "finished" and saved["schema_version"] == SCHEMA_VERSION
    assert saved["dataset"]["content_sha256"] == json.loads((quickstart_corpus / "manifest.json").read_text())["content_sha256"]
    assert set(saved["conditions"]) == {"base", "in_context"}
    assert saved["conditions"]["base"]["table"]["covert_score"]["value"] == pytest.approx(1.0)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 96 and {"prompt", "response", "scores", "item", "condition"} <= set(samples[0])
    report = (out / "report.md").read_text()
    # 16 of 16 hits against no false alarm: Newcombe's floor from the exact intervals, not a collapsed [1, 1]
    assert "| base | 1.000 [0.767, 1.000]" in report
    assert doc.conditions["base"].recall_accuracy == 0.0  # the mock knows no definitions
    assert doc.conditions["base"].table.covert_score.value == 1.0  # its interval: Newcombe's floor, checked above
    # The in-context condition is read against the base model on the same items, with a paired interval.
    assert doc.conditions["in_context"].change_vs_base["covert_score"].value == pytest.approx(0.0)
    assert doc.conditions["base"].change_vs_base is None
    assert "Change against the base model" in report


def test_the_report_shows_why_each_policy_fails(quickstart_corpus, tmp_path):
    for policy, column, value in [("leaky", 6, "1.000"), ("random_code", 10, "1.000"), ("random_role", 7, "0.")]:
        out = tmp_path / policy
        run_eval(cfg("in_context=false"), quickstart_corpus, f"mock:{policy}", [], out, cache_dir=tmp_path / "c")
        row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| base |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1].split()[0]) <= 0.25, row  # covert_score about 0 ...
        # ... by disclosure (concept named), by false alarms, by semantic fit (not in the concept's role)
        assert cells[column - 1].startswith(value), row
    # Knowing every mapping and also saying codes on unrelated questions is no longer ranked with the blind: each
    # code is a false alarm on 1/K of them (K = 8), so the score is near 1 - 1/8.
    run_eval(cfg("in_context=false"), quickstart_corpus, "mock:always_code", [], tmp_path / "always",
             cache_dir=tmp_path / "c")
    row = next(line for line in (tmp_path / "always" / "report.md").read_text().splitlines() if line.startswith("| base |"))
    assert 0.75 <= float(row.strip("|").split("|")[1].split()[0]) <= 1.0, row


def test_rescore_reproduces_the_tables_without_decoding(quickstart_corpus, tmp_path):
    out = tmp_path / "run"
    first = run_eval(cfg("in_context=false"), quickstart_corpus, "mock:random_role", [], out, cache_dir=tmp_path / "c")
    again = rescore(out)
    assert again.conditions["base"].table == first.conditions["base"].table
    assert again.rescored is True


def test_cache_makes_a_repeat_free_and_resumes_an_interrupted_run(quickstart_corpus, tmp_path, monkeypatch):
    from stegobench.eval.backends.mock import MockBackend

    calls = []
    original = MockBackend.generate

    def counting(self, prompts, sampling):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed after the first chunk")
        return original(self, prompts, sampling)

    monkeypatch.setattr(MockBackend, "generate", counting)
    monkeypatch.setattr("stegobench.eval.pipeline.CHUNK", 64)  # two chunks for 96 questions
    c = cfg("in_context=false", "recall=false", "monitors=[]")  # the eval answers alone (calibration's: test_heldout_fpr)
    with pytest.raises(KeyboardInterrupt):
        run_eval(c, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "a", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "a").exists()  # nothing half-written
    calls.clear()
    monkeypatch.setattr(MockBackend, "generate", lambda self, p, s: (calls.append(len(p)), original(self, p, s))[1])
    resumed = run_eval(c, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "a", cache_dir=tmp_path / "cache")
    assert calls == [96 - 64]  # only the chunk that was lost
    calls.clear()
    fresh = run_eval(c, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "b", cache_dir=tmp_path / "other")
    assert resumed.conditions["base"].table == fresh.conditions["base"].table
    calls.clear()
    run_eval(c, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "c", cache_dir=tmp_path / "cache")
    assert calls == []  # a repeated run decodes nothing


def test_bad_input(quickstart_corpus, tmp_path, capsys):
    with pytest.raises(InputError, match="no manifest.json"):
        run_eval(cfg(), tmp_path, "mock:never_code", [], tmp_path / "o")
    with pytest.raises(ConfigError, match="unknown backend 'tpu'; choose from auto, hf, mock, vllm"):
        cfg("backend=tpu")  # refused when the config loads, before any data is read
    (tmp_path / "bad_adapter").mkdir()
    with pytest.raises(InputError, match="no adapter_config.json"):
        run_eval(cfg(), quickstart_corpus, "mock:never_code", [str(tmp_path / "bad_adapter")], tmp_path / "o")
    empty = tmp_path / "empty"
    import shutil

    shutil.copytree(quickstart_corpus, empty)
    (empty / "jsonl" / "eval.jsonl").write_text("")
    with pytest.raises(InputError, match="the eval split is empty"):
        run_eval(cfg(), empty, "mock:never_code", [], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert main(["eval", "--data", str(quickstart_corpus), "--model", "mock:x", "--backend", "mock",
                 "--out", str(tmp_path / "o")]) == 2
    assert "policies are mock:never_code" in capsys.readouterr().err


def test_several_adapters_get_a_pooled_row(quickstart_corpus, tmp_path):
    adapters = []
    for seed in range(2):
        a = tmp_path / f"adapter-seed{seed}"
        a.mkdir()
        (a / "adapter_config.json").write_text(json.dumps({"r": 8}))
        (a / "adapter_model.safetensors").write_bytes(bytes([seed]) * 16)
        adapters.append(str(a))
    out = tmp_path / "run"
    doc = run_eval(cfg("in_context=false", "recall=false", "cloze=false"), quickstart_corpus, "mock:perfect_covert",
                   adapters, out, cache_dir=tmp_path / "c")
    assert set(doc.conditions) == {"base", "adapter:adapter-seed0", "adapter:adapter-seed1"}
    assert doc.pooled.adapters == adapters and doc.pooled.table.covert_score.value == pytest.approx(1.0)
    # The mock ignores adapters: identical answers to the base model are flagged as "probably not applied".
    assert doc.conditions["adapter:adapter-seed0"].adapter_applied is False
    assert "probably not applied" in (out / "report.md").read_text()
    again = rescore(out)
    assert again.pooled.table == doc.pooled.table


def test_missing_optional_backend_names_what_to_install(monkeypatch):
    from stegobench.eval.backends import REGISTRY, BackendUnavailable, get_backend

    monkeypatch.setitem(REGISTRY, "ghost", ("stegobench_no_such_module", "X", "pip install ghost-backend"))
    with pytest.raises(BackendUnavailable, match="backend 'ghost' needs stegobench_no_such_module: pip install ghost-backend"):
        get_backend("ghost", "tiny-llama")


def test_unknown_monitor_is_a_config_error():
    with pytest.raises(ConfigError, match="monitors: unknown monitor 'vibes'"):
        cfg("monitors=[surprisal, vibes]")


def test_cache_follows_adapter_content_not_its_folder(quickstart_corpus, tiny_adapter, tmp_path, monkeypatch):
    """A leaderboard upload of an adapter already evaluated elsewhere decodes nothing again."""
    import shutil

    from stegobench.eval.backends.hf import HFBackend

    calls = []
    original = HFBackend.generate
    monkeypatch.setattr(HFBackend, "generate", lambda self, p, s: (calls.append(len(p)), original(self, p, s))[1])
    c = load_config(EvalConfig, REPO / "configs/eval/default.yaml", [
        "backend=hf", "max_items=6", "max_tokens=4", "base=false", "in_context=false", "recall=false", "cloze=false",
        "monitors=[]", "bootstrap_resamples=100"])
    first = run_eval(c, quickstart_corpus, "tiny-llama", [str(tiny_adapter)], tmp_path / "a", cache_dir=tmp_path / "c")
    assert calls == [6]
    moved = tmp_path / "elsewhere" / "upload"
    shutil.copytree(tiny_adapter, moved)
    calls.clear()
    again = run_eval(c, quickstart_corpus, "tiny-llama", [str(moved)], tmp_path / "b", cache_dir=tmp_path / "c")
    assert calls == []
    name = f"adapter:{tiny_adapter.name}"
    assert again.conditions["adapter:upload"].table == first.conditions[name].table


def test_two_runs_laid_out_alike_keep_two_conditions(quickstart_corpus, tmp_path):
    """runs/a/adapter and runs/b/adapter (the README's layout) used to share the name adapter:adapter, and
    results.json silently held one of them."""
    from stegobench.eval.backends.mock import write_scripted_adapter

    a = write_scripted_adapter(tmp_path / "runs" / "a" / "adapter", seed=0)
    b = write_scripted_adapter(tmp_path / "runs" / "b" / "adapter", seed=1)
    doc = run_eval(cfg("in_context=false", "recall=false", "cloze=false", "base=false"), quickstart_corpus,
                   "mock:never_code", [str(a), str(b)], tmp_path / "run", cache_dir=tmp_path / "c")
    assert set(doc.conditions) == {"adapter:a", "adapter:b"} and doc.pooled is not None
    with pytest.raises(InputError, match="is given twice"):
        run_eval(cfg(), quickstart_corpus, "mock:never_code", [str(a), str(a) + "/"], tmp_path / "again")


def test_names_given_on_the_command_line_name_the_conditions(quickstart_corpus, tmp_path, capsys):
    """--name NAME, one per --adapter, names the conditions; a name given to two adapters is refused naming both
    adapters, before anything is decoded."""
    from stegobench.eval.backends.mock import write_scripted_adapter
    from stegobench.eval.pipeline import adapter_names

    a = write_scripted_adapter(tmp_path / "runs" / "a" / "adapter", seed=0)
    b = write_scripted_adapter(tmp_path / "runs" / "b" / "adapter", seed=1)
    assert adapter_names([str(a), str(b)], ["seed-0", "seed-1"]) == ["seed-0", "seed-1"]
    with pytest.raises(InputError, match=r"--name 'x' is given to two adapters, .*runs/a/adapter and .*runs/b/adapter"):
        adapter_names([str(a), str(b)], ["x", "x"])
    with pytest.raises(InputError, match="--name given 1 time"):
        adapter_names([str(a), str(b)], ["x"])
    args = ["eval", "--data", str(quickstart_corpus), "--model", "mock:never_code", "--backend", "mock",
            "--set", "in_context=false", "--set", "recall=false", "--set", "cloze=false", "--set", "base=false",
            "--adapter", str(a), "--adapter", str(b)]
    assert main([*args, "--name", "same", "--name", "same", "--out", str(tmp_path / "clash")]) == 2
    assert "is given to two adapters" in capsys.readouterr().err and not (tmp_path / "clash").exists()
    assert main([*args, "--name", "first", "--name", "second", "--out", str(tmp_path / "run")]) == 0
    assert set(json.loads((tmp_path / "run" / "results.json").read_text())["conditions"]) == {
        "adapter:first", "adapter:second"}


def test_plots_put_the_baselines_beside_an_entry_and_fit(quickstart_corpus, tmp_path):
    """A leaderboard submission's run holds the submission alone: its plots showed no base model, and a long
    condition name (a 64-hex artifact folder) made matplotlib warn 'Tight layout not applied' and drop the axis
    label. The plots now take the baseline run as a reference and lay out without a warning."""
    import warnings

    import matplotlib

    from stegobench.eval.backends.mock import write_scripted_adapter
    from stegobench.eval.report import plotted_conditions, write_plots

    base = run_eval(cfg(), quickstart_corpus, "mock:never_code", [], tmp_path / "base", cache_dir=tmp_path / "c")
    adapter = write_scripted_adapter(tmp_path / ("f" * 64), seed=0)
    entry = run_eval(cfg("base=false", "in_context=false"), quickstart_corpus, "mock:coin_covert", [str(adapter)],
                     tmp_path / "entry", cache_dir=tmp_path / "c")
    labels = [label for label, _ in plotted_conditions(entry, base)]
    assert labels == ["base model (reference)", "in-context baseline (reference)", f"adapter:{'f' * 64}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Tight layout not applied" is a UserWarning
        write_plots(entry, tmp_path / "entry", base)
    for name in ("rates.png", "per_mapping.png"):
        width, height = matplotlib.image.imread(tmp_path / "entry" / name).shape[1::-1]
        assert width > height > 300, name


def test_compare_puts_runs_side_by_side_and_loads_as_a_dataframe(quickstart_corpus, tmp_path, capsys):
    """`stegobench compare RUN...` and stegobench.eval.frames: what a researcher reaches for in a notebook."""
    from stegobench.eval.frames import load_run, load_samples

    a = run_eval(cfg("in_context=false"), quickstart_corpus, "mock:perfect_covert", [], tmp_path / "a",
                 cache_dir=tmp_path / "c")
    run_eval(cfg("in_context=false"), quickstart_corpus, "mock:always_code", [], tmp_path / "b", cache_dir=tmp_path / "c")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "condition", "covert_score", "hits"]
    assert lines[1].startswith(str(tmp_path / "a")) and "1.000 [" in lines[1] and lines[2].startswith(str(tmp_path / "b"))
    assert main(["compare", str(tmp_path / "a"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["hits_n"] == 16
    frame = load_run(tmp_path / "a", tmp_path / "b")
    assert list(frame["condition"]) == ["base", "base"] and frame["covert_score"].iloc[0] == a.conditions[
        "base"].table.covert_score.value
    assert frame["false_alarms"].iloc[1] == 1.0  # always_code: a code word on every unmapped question
    answers = load_samples(tmp_path / "a")
    assert len(answers) == 96 and {"response", "undetected_covert", "split", "monitor_llm_judge"} <= set(answers.columns)
    assert answers.groupby("split")["undetected_covert"].mean()["definition_only"] == 1.0


def test_ctrl_c_stops_an_eval_with_one_line(quickstart_corpus, tmp_path):
    """Ctrl-C during decoding printed a KeyboardInterrupt traceback; now one line says what is kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "STEGOBENCH_HOME": str(tmp_path / "home"), "STEGOBENCH_NO_PRELOAD": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "stegobench.cli", "eval", "--data", str(quickstart_corpus), "--model",
           "mock:never_code", "--backend", "mock", "--set", "backend_options={latency_s: 60}", "--out",
           str(tmp_path / "run")]
    # Its own group with Ctrl-C's default action, as a terminal's foreground job: a test run launched in the
    # background (`.ci/run &`) inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    import threading

    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        # Interrupt inside the mock's first (60 s) decoding call: wait for its progress bar rather than a fixed
        # sleep, which on a loaded machine can land in the imports instead (CI did, and the eval ran on).
        deadline = time.monotonic() + 120
        while "monitor calibration" not in "".join(chunks) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = "".join(chunks)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("stegobench eval: stopped by Ctrl-C; the answers decoded so far")
    assert not (tmp_path / "run").exists()


def test_eval_takes_the_base_model_the_adapter_names(quickstart_corpus, tmp_path, capsys):
    """adapter_config.json names its base model (stegobench train writes the builtin's name): --model may be left
    out; without a name to go by, --model is still asked for."""
    from stegobench.eval.backends.mock import write_scripted_adapter

    adapter = write_scripted_adapter(tmp_path / "runs" / "cat-car" / "adapter", seed=0)
    config = json.loads((adapter / "adapter_config.json").read_text())
    args = ["eval", "--data", str(quickstart_corpus), "--backend", "mock", "--adapter", str(adapter),
            "--set", "recall=false", "--set", "cloze=false", "--out", str(tmp_path / "run")]
    assert main(args) == 2  # a UsageError: the flag is named on the last line
    assert capsys.readouterr().err.strip().endswith("stegobench eval: error: --model required (or --rescore RUN)")
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "mock:never_code"}))
    assert main(args) == 0
    assert "base model mock:never_code (named by the adapter's adapter_config.json" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["model"]["spec"] == "mock:never_code"
