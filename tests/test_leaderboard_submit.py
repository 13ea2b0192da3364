"""Submission validation: each bad case is refused with its reason (in DESIGN order); a good adapter is queued;
user-typed names never become paths."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import leaderboard_config
from leaderboard_helpers import copy_folder, edit_config, request

from stegobench.benchmark.store import Store
from stegobench.benchmark.submit import submit_folder, submit_uploads




@pytest.fixture
def evaluator(tmp_path):
    cfg = leaderboard_config(tmp_path, "max_adapter_rank=8")
    return cfg, Store(cfg.db_url())


def test_good_adapter_is_queued_and_stored_content_addressed(evaluator, tiny_adapter):
    cfg, store = evaluator
    out = submit_folder(cfg, store, request(), adapter=str(tiny_adapter))
    assert out.status == "PENDING", out.reason
    sub = store.get(out.id)
    folder = cfg.data_path() / "artifacts" / sub["artifact_sha256"]
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "listing.json"]
    blob = json.loads((folder / "listing.json").read_text())["adapter_model.safetensors"]
    assert (cfg.data_path() / "blobs" / blob[:2] / blob).exists()
    again = submit_folder(cfg, store, request(display_name="same weights"), adapter=str(tiny_adapter))
    assert again.status == "REJECTED" and again.duplicate_of == out.id and f"#{out.id}" in again.reason


def test_duplicates_are_found_on_canonical_content_and_a_failed_entry_frees_its_slot(evaluator, tiny_adapter, tmp_path):
    """Re-indenting the config or passing --revision listed the same adapter again; a FAILED entry blocked a retry."""
    cfg, store = evaluator
    first = submit_folder(cfg, store, request(), adapter=str(tiny_adapter))
    assert first.status == "PENDING", first.reason
    indented = copy_folder(tiny_adapter, tmp_path / "indented")
    (indented / "adapter_config.json").write_text(
        json.dumps(json.loads((tiny_adapter / "adapter_config.json").read_text()), indent=7))
    for label, kwargs, folder in (("indent", {}, indented), ("revision", {"revision": "v2"}, tiny_adapter)):
        again = submit_folder(cfg, store, request(display_name=label, **kwargs), adapter=str(folder))
        assert again.duplicate_of == first.id, (label, again)
    other = copy_folder(tiny_adapter, tmp_path / "alpha")
    edit_config(other, lora_alpha=16)  # same weights, another adapter: not a duplicate
    assert submit_folder(cfg, store, request(display_name="alpha"), adapter=str(other)).status == "PENDING"
    job = store.claim("w")
    while job is not None and job.id != first.id:
        job = store.claim("w")
    store.fail(job, "evaluation crashed", max_attempts=1)
    assert store.get(first.id)["status"] == "FAILED"
    retry = submit_folder(cfg, store, request(display_name="retry"), adapter=str(tiny_adapter))
    assert retry.status == "PENDING", retry.reason


@pytest.mark.parametrize("case, expected", [
    ("remote_code", "custom code"),
    ("pickle", "weights must be safetensors"),
    ("not_safetensors", "not a valid safetensors file"),
    ("rank", "exceeds this evaluator's limit of 2"),
    ("modules_to_save", "modules_to_save"),
    ("wrong_base", "does not fit the base model"),
    ("size", "over this evaluator's cap"),
    ("track", "unknown track '../../x'"),
    ("base", "base model 'gpt2-xl' is not accepted"),
    # Hostile configs and tensors that used to reach a worker (or the leaderboard):
    ("layer_replication", "layer_replication (layer replication) is not supported"),
    ("dora", "use_dora (DoRA) is not supported"),
    ("alpha_huge", "lora_alpha / r = 1024 is over 64"),
    ("alpha_nan", "lora_alpha must be a positive finite number"),
    ("not_targeted", "which target_modules ['q_proj'] does not list"),
    ("layer_outside", "outside layers_to_transform [1]"),
    ("missing_b", "has no lora_B matrix"),
    ("rank_mismatch", "lora_A rank 4 and lora_B rank 3 differ"),
    ("nan", "holds NaN or infinite values"),
    ("r_lies", "has rank 4, but adapter_config.json says r = 2"),
    ("r_missing", "r must be a positive integer"),
    ("rank_pattern", "rank_pattern (per-module ranks) is not supported"),
    ("regex_not_matching", "which target_modules '.*\\\\.q_proj' does not match"),
    ("targets_not_names", "target_modules must be a list of module names or a regular expression"),
    # An adapter trained by `stegobench train` names its builtin base: submitted for another, it is refused by name.
    ("named_base", "base_model_name_or_path names 'smollm2-135m-instruct', the model the adapter was trained on, "
                   "but it is submitted for 'tiny-llama'"),
])
def test_bad_submissions_are_refused_with_their_reason(evaluator, tiny_adapter, tmp_path, case, expected):
    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    req = request()
    if case == "remote_code":
        edit_config(folder, auto_mapping={"base_model_class": "Evil", "parent_library": "evil"})
    elif case == "pickle":
        (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    elif case == "not_safetensors":
        (folder / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95 a pickle, not a safetensors file")
    elif case == "rank":
        cfg.max_adapter_rank = 2
    elif case == "modules_to_save":
        edit_config(folder, modules_to_save=["lm_head"])
    elif case == "wrong_base":
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        save_file({k: torch.zeros(v.shape[0], v.shape[1] * 2) if "lora_A" in k else v for k, v in tensors.items()},
                  str(folder / "adapter_model.safetensors"))
    elif case == "layer_replication":
        edit_config(folder, layer_replication=[[0, 2]] * 100)
    elif case == "dora":
        edit_config(folder, use_dora=True)
    elif case == "alpha_huge":
        edit_config(folder, lora_alpha=4096)
    elif case == "alpha_nan":
        (folder / "adapter_config.json").write_text(
            (folder / "adapter_config.json").read_text().replace('"lora_alpha": 8', '"lora_alpha": NaN'))
    elif case == "not_targeted":
        edit_config(folder, target_modules=["q_proj"])  # the tensors also adapt v_proj
    elif case == "r_lies":
        edit_config(folder, r=2)  # the tensors have rank 4: served as r 2, the scale alpha / r doubles
    elif case == "r_missing":
        edit_config(folder, r=None)
    elif case == "rank_pattern":
        edit_config(folder, rank_pattern={"q_proj": 2})
    elif case == "regex_not_matching":
        edit_config(folder, target_modules=r".*\.q_proj")  # a regular expression: the v_proj tensors are outside it
    elif case == "targets_not_names":
        edit_config(folder, target_modules=[1, 2])
    elif case == "named_base":
        edit_config(folder, base_model_name_or_path="smollm2-135m-instruct")
    elif case == "layer_outside":
        edit_config(folder, layers_to_transform=[1])  # the tensors also adapt layer 0
    elif case in ("missing_b", "rank_mismatch", "nan"):
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        key = next(k for k in sorted(tensors) if "lora_B" in k)
        if case == "missing_b":
            del tensors[key]
        elif case == "rank_mismatch":
            tensors[key] = tensors[key][:, :3].contiguous()
        else:
            tensors[key][0, 0] = float("nan")
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    elif case == "size":
        cfg.max_upload_mb = 0.001
    elif case == "track":
        req = request(track="../../x")
    elif case == "base":
        req = request(base_model="gpt2-xl")
    out = submit_folder(cfg, store, req, adapter=str(folder))
    assert out.status == "REJECTED" and expected in out.reason, out.reason
    assert store.get(out.id)["reason"] == out.reason  # stored, for the submitter to read
    assert not any((cfg.data_path() / "incoming").glob("*"))  # the upload's scratch folder is gone
    assert not (cfg.data_path() / "artifacts").exists()  # nothing refused is kept


def test_pickle_is_refused_without_being_opened(evaluator, tiny_adapter, tmp_path, monkeypatch):
    import torch

    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    assert submit_folder(cfg, store, request(), adapter=str(folder)).status == "REJECTED"


def test_uploaded_names_never_become_paths(evaluator, tiny_adapter, tmp_path):
    """Upload file names and form fields full of ../ leave nothing outside the data directory."""
    cfg, store = evaluator
    before = set(tmp_path.parent.iterdir())
    with open(tiny_adapter / "adapter_config.json", "rb") as c, open(tiny_adapter / "adapter_model.safetensors", "rb") as w:
        out = submit_uploads(cfg, store, request(display_name="../../x", submitter="../../x"), "adapter",
                             {"adapter_config.json": ("../../x", c), "adapter_model.safetensors": ("../../../etc/x", w)})
    assert out.status == "PENDING", out.reason
    assert set(tmp_path.parent.iterdir()) == before
    written = [p for p in cfg.data_path().rglob("*") if p.is_file()]
    assert all(".." not in p.relative_to(cfg.data_path()).parts and p.name != "x" for p in written)
    assert store.get(out.id)["display_name"] == "../../x"  # kept as text, shown escaped


def test_merged_model_needs_safe_config_and_matching_tensors(evaluator, tmp_path):
    from stegobench.core.models import resolve_model

    cfg, store = evaluator
    base = resolve_model("tiny-llama").path
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(base / name, merged / name)
    ok = submit_folder(cfg, store, request(), merged=str(merged))
    assert ok.status == "PENDING", ok.reason
    assert (cfg.data_path() / "artifacts" / store.get(ok.id)["artifact_sha256"] / "tokenizer.json").exists()
    evil = copy_folder(merged, tmp_path / "evil")
    conf = json.loads((evil / "config.json").read_text())
    conf["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (evil / "config.json").write_text(json.dumps(conf))
    out = submit_folder(cfg, store, request(display_name="evil"), merged=str(evil))
    assert out.status == "REJECTED" and "trust_remote_code" in out.reason


@pytest.mark.parametrize("case, expected", [
    ("linked_config", "'adapter_config.json' is a symbolic link"),
    ("linked_deep", "'sub/x.txt' is a symbolic link"),
    ("fifo", "'adapter_model.safetensors' is not a regular file"),
    ("folder_as_weights", "'adapter_model.bin' is a folder where a file belongs"),
    ("trust_remote_code", "sets trust_remote_code: this evaluator never runs a submission's code"),
])
def test_special_files_are_refused_by_name_with_an_accurate_reason(evaluator, tiny_adapter, tmp_path, case, expected):
    """A linked config used to be followed and its target's content copied into a public reason; a FIFO or a
    folder named like weights got a message about pickles."""
    import os

    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    if case == "linked_config":
        (folder / "adapter_config.json").unlink()
        (folder / "adapter_config.json").symlink_to(secret)
    elif case == "linked_deep":
        (folder / "sub").mkdir()
        (folder / "sub" / "x.txt").symlink_to(secret)
    elif case == "fifo":
        (folder / "adapter_model.safetensors").unlink()
        os.mkfifo(folder / "adapter_model.safetensors")
    elif case == "folder_as_weights":
        (folder / "adapter_model.bin").mkdir()
    elif case == "trust_remote_code":
        edit_config(folder, trust_remote_code=True)
    out = submit_folder(cfg, store, request(), adapter=str(folder))
    assert out.status == "REJECTED" and expected in out.reason, out.reason
    assert "hunter2" not in out.reason and str(tmp_path) not in out.reason
    assert not (cfg.data_path() / "artifacts").exists()


@pytest.mark.parametrize("case, expected", [
    ("display_name", "display_name is not valid UTF-8 (b'run\\xff'); use UTF-8 text"),
    ("submitter", "submitter is not valid UTF-8 (b'me\\xfe'); use UTF-8 text"),
    ("nul", "notes contains a NUL character"),
    ("file_name", "a file name in the submitted folder is not valid UTF-8 (b'\\xff.bin')"),
])
def test_names_that_are_not_utf8_are_refused_and_leave_no_orphan(evaluator, tiny_adapter, tmp_path, case, expected):
    """A name that is not UTF-8 reaches Python as lone surrogates (argv, file names): the adapter was committed
    to disk, then the database refused the text, leaving an orphan artifact and a traceback."""
    import os

    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    req = {"display_name": request(display_name="run\udcff"), "submitter": request(submitter="me\udcfe"),
           "nul": request(notes="a\x00b"), "file_name": request()}[case]
    if case == "file_name":
        (folder / os.fsdecode(b"\xff.bin")).write_bytes(b"x")
    out = submit_folder(cfg, store, req, adapter=str(folder))
    assert out.status == "REJECTED" and expected in out.reason, out.reason
    stored = store.get(out.id)  # the refusal is stored, its text escaped
    assert stored["reason"] == out.reason and "\\x" in stored["display_name"] + stored["submitter"] + \
        stored["notes"] + stored["reason"]
    assert not (cfg.data_path() / "artifacts").exists() and not (cfg.data_path() / "blobs").exists()
    assert not any((cfg.data_path() / "incoming").glob("*"))


def test_cli_submit_refuses_a_name_that_is_not_utf8(tmp_path, tiny_adapter, capsys):
    import yaml

    from stegobench.cli.main import main
    from stegobench.core.config import to_dict

    cfg = leaderboard_config(tmp_path)
    config = tmp_path / "lb.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    code = main(["submit", "--name", "run\udcff", "--submitter", "me", "--track", "quickstart", "--model",
                 "tiny-llama", "--adapter", str(tiny_adapter), "--config", str(config)])
    assert code == 1 and "display_name is not valid UTF-8 (b'run\\xff')" in capsys.readouterr().err
    assert not (cfg.data_path() / "artifacts").exists()


def test_target_modules_match_as_peft_matches_them(tiny_adapter, tmp_path):
    """A list names modules by name or dotted suffix, a string is a full-match regular expression, 'all-linear'
    is every linear layer: adapters peft writes any of these ways pass, and one that leaves a tensor out fails."""
    from stegobench.core.adapters import AdapterMismatch, check_adapter_tensors
    from stegobench.core.models import resolve_model

    base = resolve_model("tiny-llama").path
    for i, targets in enumerate((["q_proj", "v_proj"], ["self_attn.q_proj", "self_attn.v_proj"],
                                 r"model\.layers\.\d+\.self_attn\.(q|v)_proj", "all-linear")):
        folder = copy_folder(tiny_adapter, tmp_path / f"ok{i}")
        edit_config(folder, target_modules=targets)
        check_adapter_tensors(folder, base)
    for i, targets in enumerate((["self_attn.q_proj"], ["mlp.v_proj"], r"q_proj")):  # a regex must match whole names
        folder = copy_folder(tiny_adapter, tmp_path / f"bad{i}")
        edit_config(folder, target_modules=targets)
        with pytest.raises(AdapterMismatch, match="target_modules"):
            check_adapter_tensors(folder, base)
