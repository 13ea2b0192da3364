"""`stegobench env` and `stegobench leaderboard --format json`: documents a program can read."""

from __future__ import annotations

import json

from stegobench.cli.main import main


def test_env_json_has_the_machine_the_defaults_and_the_versions(capsys):
    assert main(["env", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    m, d = doc["machine"], doc["defaults"]
    assert m["cpu_count"] >= 1 and m["affinity"] and m["mem_total_bytes"] > 0
    assert d["device"] == m["device"] and d["accelerate_profile"] in ("cpu", "single_gpu", "multi_gpu")
    assert {"python", "torch", "transformers", "peft", "accelerate", "datasets"} <= set(doc["versions"])
    assert "prepared" in doc["default_model"]


def test_env_table_says_what_a_run_would_use(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for line in ("device", "memory", "train_dtype", "accelerate_profile", "home"):
        assert line in out
    # The default model's weights are not the published ones: env says so (issue 28), and never `make setup` alone
    # to a pip user.
    assert "dequantised to float32 from the Q4_1 GGUF" in out and "not the published bf16 weights" in out


def test_leaderboard_json_is_one_document_with_every_track(tmp_path, capsys):
    sets = [f"data_dir={tmp_path / 'lb'}",
            "tracks={quickstart: {data_config: configs/data/quickstart.yaml}, "
            "other: {data_config: configs/data/quickstart.yaml}}"]
    assert main(["leaderboard", "--format", "json", *[a for s in sets for a in ("--set", s)]]) == 0
    doc = json.loads(capsys.readouterr().out)  # two arrays printed one after another would not parse
    assert set(doc["tracks"]) == {"quickstart", "other"}
    assert doc["tracks"]["quickstart"]["rows"] == [] and "queue" in doc
    assert main(["leaderboard", "--format", "csv", *[a for s in sets for a in ("--set", s)]]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("track,")


def test_eval_and_worker_restart_with_tcmalloc_preloaded_once():
    from stegobench.cli.main import preload_env

    lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
    assert preload_env(["eval", "--data", "d"], {"PATH": "/bin"}, lib) == {"PATH": "/bin", "LD_PRELOAD": lib}
    assert preload_env(["worker"], {"LD_PRELOAD": "/x/libfoo.so"}, lib)["LD_PRELOAD"] == f"{lib}:/x/libfoo.so"
    assert preload_env(["eval"], {"LD_PRELOAD": lib}, lib) is None  # already there: no second restart
    assert preload_env(["eval"], {"STEGOBENCH_NO_PRELOAD": "1"}, lib) is None
    assert preload_env(["gen", "--config", "x"], {}, lib) is None
    assert preload_env(["eval"], {}, None) is None  # the system has no tcmalloc
