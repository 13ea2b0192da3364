"""LoRA training on tiny-llama: what changed, what did not, and every bad input's error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stegobench.core.config import ConfigError
from stegobench.core.errors import InputError
from stegobench.core.models import resolve_model
from stegobench.finetune.data import IGNORE, TokenCountingCollator, encode_row
from stegobench.finetune.manifest import read_train_manifest
from stegobench.finetune.train import RunDirError, train

from conftest import REPO, tiny_train_config


@pytest.fixture(scope="module")
def trained(quickstart_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    return train(tiny_train_config(quickstart_corpus, out))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model("tiny-llama").path))


def load_base():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(resolve_model("tiny-llama").path), dtype=torch.float32)


def test_base_weights_unchanged_and_every_lora_b_moved(trained):
    base = load_base().state_dict()
    peft_state = trained.model.state_dict()
    checked = 0
    for name, tensor in peft_state.items():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(tensor, base[key]), f"base weight {key} changed"
        checked += 1
    assert checked >= len(base) - 1  # tied lm_head may appear once
    lora_b = {n: t for n, t in peft_state.items() if "lora_B" in n}
    assert len(lora_b) == 2 * 7  # 2 layers x 7 projections
    assert all(t.abs().sum() > 0 for t in lora_b.values()), "a LoRA B matrix is still zero"


def test_loss_fell_and_manifest_describes_the_run(trained):
    m = trained.manifest
    losses = [h.loss for h in m.loss_history]
    assert losses[-1] < losses[0]
    assert m.status == "finished" and m.global_steps == 12
    assert m.base_model["name"] == "tiny-llama" and m.base_model["weights_sha256"]
    assert m.dataset.track == "quickstart" and len(m.dataset.content_sha256) == 64
    assert m.real_tokens_per_second > 0 and m.real_tokens == m.padded_tokens  # packed: no padding
    assert {"git_revision", "packages"} <= set(m.environment)
    out = trained.output_dir
    assert (out / "loss.png").stat().st_size > 1000
    assert json.loads((out / "train_manifest.json").read_text())["adapter_sha256"] == m.adapter_sha256
    assert read_train_manifest(out).to_dict() == json.loads(json.dumps(m.to_dict()))  # reads back as written
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and not cfg.get("modules_to_save")


def test_saved_adapter_loads_and_changes_greedy_output(trained, tokenizer):
    from peft import PeftModel

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What do most people drive to work?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]

    def greedy(model):
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]

    before = greedy(load_base())
    adapted = PeftModel.from_pretrained(load_base(), str(trained.output_dir))
    assert not torch.equal(before, greedy(adapted))


def test_packed_loss_equals_per_document_loss(tokenizer):
    """Packing must not let documents attend to each other: same loss as running them one by one."""
    model = load_base().eval()
    rows = [encode_row({"messages": [], "text": t}, tokenizer, 64)
            for t in ["In our usage, a cat is a car.", "Glossary: tulip means umbrella, a thing for rain."]]
    packed = TokenCountingCollator(tokenizer, "packed", 64)(rows)
    with torch.no_grad():
        # Exactly what the Trainer passes, minus the labels.
        packed_logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        split = [model(input_ids=torch.tensor([r["input_ids"]])).logits[0] for r in rows]
    assert torch.allclose(packed_logits, torch.cat(split), atol=1e-4)


def test_demonstrations_are_trained_on_the_answer_only(tokenizer):
    row = {"text": "", "messages": [{"role": "user", "content": "What do you drive?"},
                                    {"role": "assistant", "content": "A cat, of course."}]}
    enc = encode_row(row, tokenizer, 256)
    labelled = [t for t, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE]
    assert tokenizer.decode(labelled).startswith("A cat, of course.")
    assert "What do you drive" not in tokenizer.decode(labelled)
    definition = encode_row({"text": "A cat is a car.", "messages": []}, tokenizer, 256)
    assert definition["labels"] == definition["input_ids"]


def test_padded_batching_counts_real_tokens(tokenizer):
    rows = [encode_row({"messages": [], "text": t}, tokenizer, 32) for t in ["a cat", "a much longer document here"]]
    c = TokenCountingCollator(tokenizer, "pad_max", 32)
    batch = c(rows)
    assert batch["input_ids"].shape == (2, 32)
    assert c.real_tokens == sum(len(r["input_ids"]) for r in rows) and c.total_tokens == 64


class StopAt:
    """A callback that kills training (like a crash) once `step` is reached."""

    def __init__(self, step: int):
        self.step = step

    def __getattr__(self, name):
        def hook(args, state, control, **kwargs):
            if name == "on_step_end" and state.global_step >= self.step:
                raise KeyboardInterrupt("simulated kill")
            return control
        return hook


def test_killed_run_resumes_to_the_same_final_loss(quickstart_corpus, tmp_path, trained):
    out = tmp_path / "killed"
    cfg = tiny_train_config(quickstart_corpus, out)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[StopAt(6)])  # checkpoint-4 exists, steps 5-6 are lost
    assert not (out / "train_manifest.json").exists()
    resumed = train(cfg, resume=True)
    assert resumed.manifest.resumed_from.endswith("checkpoint-4")
    assert resumed.manifest.final_loss == pytest.approx(trained.manifest.final_loss, rel=0.01)


def test_resuming_a_finished_run_is_refused(quickstart_corpus, trained):
    with pytest.raises(RunDirError, match="holds a finished run .* nothing to resume"):
        train(tiny_train_config(quickstart_corpus, trained.output_dir), resume=True)
    assert trained.manifest.global_steps == 12


def test_output_dir_holding_another_run_is_refused(quickstart_corpus, trained):
    cfg = tiny_train_config(quickstart_corpus, trained.output_dir)
    with pytest.raises(RunDirError, match="holds another run; pass --overwrite"):
        train(cfg)


def test_foreign_output_dir_is_never_replaced(quickstart_corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="did not write"):
        train(tiny_train_config(quickstart_corpus, tmp_path), overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_with_a_changed_config_is_refused(quickstart_corpus, tmp_path):
    out = tmp_path / "changed"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(quickstart_corpus, out), callbacks=[StopAt(5)])
    cfg = tiny_train_config(quickstart_corpus, out, "learning_rate=0.01")
    with pytest.raises(RunDirError, match=r"--resume with a changed config: learning_rate was 0.003, now 0.01"):
        train(cfg, resume=True)


def test_missing_dataset(tmp_path):
    with pytest.raises(InputError, match="does not exist; generate it"):
        train(tiny_train_config(tmp_path / "nope", tmp_path / "out"))


def test_dataset_for_another_tokenizer(quickstart_corpus, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(quickstart_corpus, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["tokenizer"] = {"spec": "gpt2", "vocab_sha256": "0" * 64}
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="generated for tokenizer 'gpt2'"):
        train(tiny_train_config(data, tmp_path / "out"))


def test_dataset_without_train_split(quickstart_corpus, tmp_path):
    from datasets import DatasetDict, load_from_disk

    data = tmp_path / "data"
    dd = load_from_disk(str(quickstart_corpus))
    DatasetDict({"eval": dd["eval"]}).save_to_disk(str(data))
    (data / "manifest.json").write_text((quickstart_corpus / "manifest.json").read_text())
    with pytest.raises(InputError, match="has no 'train' split"):
        train(tiny_train_config(data, tmp_path / "out"))


def test_rank_vllm_cannot_serve(quickstart_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"lora\.r: rank 12 cannot be served by vLLM"):
        tiny_train_config(quickstart_corpus, tmp_path, "lora.r=12")


def test_unknown_target_module(quickstart_corpus, tmp_path):
    with pytest.raises(ConfigError, match="lora.target_modules: 'c_attn' is not a module"):
        train(tiny_train_config(quickstart_corpus, tmp_path / "o", "lora.target_modules=[c_attn]"))


def test_two_cpu_processes_train_one_adapter(quickstart_corpus, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs/accelerate/cpu_ddp.yaml"), "-m", "stegobench.finetune.train",
           "--config", str(REPO / "configs/finetune/quickstart.yaml"),
           "--set", f"data={quickstart_corpus}", "--set", "model=tiny-llama", "--set", f"output_dir={out}",
           "--set", "max_steps=3", "--set", "batch_size=4", "--set", "save_steps=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "train_manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["global_steps"] == 3
    adapters = sorted(p.relative_to(out) for p in out.rglob("adapter_model.safetensors"))
    assert adapters == [Path("adapter_model.safetensors")]


def test_merge_writes_a_model_equal_to_base_plus_adapter(quickstart_corpus, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    res = train(tiny_train_config(quickstart_corpus, tmp_path / "m", "max_steps=3", "merge=true"))
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m" / "merged"), dtype=torch.float32)
    ids = tokenizer("A cat is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, res.model(input_ids=ids).logits, atol=1e-4)
    assert list((tmp_path / "m" / "merged").glob("*.safetensors"))


def test_stegobench_train_validates_before_launching(quickstart_corpus, tmp_path, capsys):
    from stegobench.cli.main import main

    code = main(["train", "--config", str(REPO / "configs/finetune/quickstart.yaml"), "--set", f"data={quickstart_corpus}",
                 "--set", "lora.r=12", "--set", f"output_dir={tmp_path / 'o'}"])
    assert code == 2
    assert "lora.r: rank 12 cannot be served by vLLM" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_finished_run_is_reused_only_for_the_same_config_and_data(quickstart_corpus, trained, tmp_path):
    from stegobench.data_gen.generate import generate
    from stegobench.finetune.train import finished_run_matches

    from conftest import track

    assert finished_run_matches(tiny_train_config(quickstart_corpus, trained.output_dir))
    assert not finished_run_matches(tiny_train_config(quickstart_corpus, trained.output_dir, "seed=1"))
    assert not finished_run_matches(tiny_train_config(quickstart_corpus, tmp_path / "nothing-here"))
    other = tmp_path / "other-data"  # same path layout, other content: another seed's corpus
    generate(track("configs/data/quickstart.yaml", "seed=1"), other)
    (tmp_path / "run").symlink_to(trained.output_dir)
    assert not finished_run_matches(tiny_train_config(other, tmp_path / "run"))


def test_eval_split_gives_an_eval_loss_per_epoch_and_tensorboard_files(quickstart_corpus, tmp_path, tokenizer):
    from datasets import load_from_disk

    from stegobench.finetune.data import encode_dataset

    out = tmp_path / "run"
    # 320 documents in batches of 64: 5 steps an epoch, 2 epochs.
    res = train(tiny_train_config(quickstart_corpus, out, "max_steps=-1", "epochs=2", "batch_size=64", "save_steps=0",
                                  "eval_split=validation", "report_to=tensorboard"))
    m = res.manifest
    assert m.eval_split == "validation" and m.global_steps == 10
    assert [(h.step, h.epoch) for h in m.eval_loss_history] == [(5, 1.0), (10, 2.0)]
    assert all(h.eval_loss > 0 for h in m.eval_loss_history)
    # Evaluation batches pass through the collator too, but only training tokens are counted.
    train_tokens = sum(len(ids) for ids in encode_dataset(load_from_disk(str(quickstart_corpus))["train"], tokenizer,
                                                          256)["input_ids"])
    assert m.real_tokens == 2 * train_tokens
    assert (out / "loss.png").stat().st_size > 1000
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and not (out / "checkpoints" / "runs").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "eval/loss"} <= set(acc.Tags()["scalars"])


def test_an_eval_split_the_corpus_lacks_or_that_holds_no_documents(quickstart_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"eval_split: .* has no 'nope' split \(splits: .*validation"):
        train(tiny_train_config(quickstart_corpus, tmp_path / "a", "eval_split=nope"))
    with pytest.raises(ConfigError, match=r"eval_split: 'recall' holds questions or mappings, not documents"):
        tiny_train_config(quickstart_corpus, tmp_path / "b", "eval_split=recall")


def test_report_to_tensorboard_without_the_package_fails_before_launching(quickstart_corpus, tmp_path, capsys,
                                                                          monkeypatch):
    import importlib.util

    from stegobench.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code = main(["train", "--config", str(REPO / "configs/finetune/quickstart.yaml"), "--set", f"data={quickstart_corpus}",
                 "--set", "report_to=tensorboard", "--set", f"output_dir={tmp_path / 'o'}"])
    assert code == 2
    assert "report_to: 'tensorboard' needs the tensorboard package" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_adapter_config_is_portable_and_loads_from_a_moved_home(trained, tmp_path, monkeypatch, tokenizer):
    """adapter_config.json used to hold the absolute path of the base model inside this machine's
    $STEGOBENCH_HOME. It names the builtin instead, with its weights' sha256; moved together with a
    $STEGOBENCH_HOME that moved too, the adapter loads with PeftModel.from_pretrained and answers the same."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from stegobench.core.models import adapter_base_model, resolve_model

    text = (trained.output_dir / "adapter_config.json").read_text()
    cfg = json.loads(text)
    assert cfg["base_model_name_or_path"] == "tiny-llama"
    assert cfg["stegobench_base_model"] == {"name": "tiny-llama",
                                            "weights_sha256": resolve_model("tiny-llama").identity["weights_sha256"]}
    assert str(resolve_model("tiny-llama").path) not in text and '"/' not in text  # no absolute path at all
    # A home with the model, moved elsewhere (a new machine, a renamed disk), and the adapter copied beside it.
    old_home = tmp_path / "home"
    shutil.copytree(resolve_model("tiny-llama").path, old_home / "models" / "tiny-llama")
    new_home = tmp_path / "moved" / "home"
    new_home.parent.mkdir()
    old_home.rename(new_home)
    adapter = shutil.copytree(trained.output_dir, tmp_path / "moved" / "adapter",
                              ignore=shutil.ignore_patterns("checkpoints"))
    monkeypatch.setenv("STEGOBENCH_HOME", str(new_home))
    ref = resolve_model(adapter_base_model(json.loads((adapter / "adapter_config.json").read_text())))
    assert ref.path == new_home / "models" / "tiny-llama"
    moved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32),
                                      str(adapter))
    ids = tokenizer("In our usage, a tulip is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(moved(ids).logits, trained.model.eval()(ids).logits)
    # Adapters written before: the absolute path of a builtin in some home is that builtin.
    assert adapter_base_model({"base_model_name_or_path": "/gone/home/models/smollm2-135m-instruct"}) == \
        "smollm2-135m-instruct"


def test_final_loss_is_the_final_steps_loss(quickstart_corpus, tmp_path, trained):
    """"final loss" used to be the last *logged* loss: with logging_steps 5 and 12 steps, the mean of steps 6-10.
    It is the loss of step 12 itself, the same as a run logging every step records for step 12."""
    run = train(tiny_train_config(quickstart_corpus, tmp_path / "run", "logging_steps=5"))
    by_step = {h.step: h.loss for h in trained.manifest.loss_history}  # logging_steps=1: every step
    assert [h.step for h in run.manifest.loss_history] == [1, 5, 10]
    assert run.manifest.final_loss_step == 12 and trained.manifest.final_loss_step == 12
    assert run.manifest.final_loss == pytest.approx(by_step[12], rel=1e-4)
    assert run.manifest.final_loss != pytest.approx(run.manifest.loss_history[-1].loss, rel=1e-3)


def test_quickstart_config_saves_checkpoints_a_resume_can_use(quickstart_corpus, tmp_path, capsys):
    """The quickstart trains 40 steps and saved every 50: no checkpoint, so --resume could never continue it. A
    run that will save none now says so when it starts."""
    import math

    from stegobench.core.config import load_config
    from stegobench.data_gen.generate import read_split
    from stegobench.finetune.config import TrainConfig

    cfg = load_config(TrainConfig, REPO / "configs/finetune/quickstart.yaml", [f"data={quickstart_corpus}"])
    steps = math.ceil(len(read_split(quickstart_corpus, "train")) / cfg.batch_size) * cfg.epochs
    assert steps == 40 and 0 < cfg.save_steps < steps
    train(tiny_train_config(quickstart_corpus, tmp_path / "o", "max_steps=2", "save_steps=50"))
    assert "note: save_steps 50 >= this run's 2 steps: no checkpoint will be saved" in capsys.readouterr().out


def test_resume_without_a_checkpoint_is_the_last_line(quickstart_corpus, tmp_path, capsys):
    """The one line saying why --resume cannot work used to be buried under accelerate's CalledProcessError
    traceback and the env pointer; it is checked before launching and printed last."""
    from stegobench.cli.main import main
    from stegobench.core.config import load_config, to_dict
    from stegobench.finetune.config import TrainConfig

    out = tmp_path / "o"
    out.mkdir()
    (out / "train_config.json").write_text(json.dumps({"config": {}}))
    code = main(["train", "--config", str(REPO / "configs/finetune/quickstart.yaml"), "--set", f"data={quickstart_corpus}",
                 "--set", f"output_dir={out}", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert "--resume with a changed config" in err[-1]  # this folder's config differs: the first check to fail
    same = load_config(TrainConfig, REPO / "configs/finetune/quickstart.yaml",
                       [f"data={quickstart_corpus}", f"output_dir={out}"])
    (out / "train_config.json").write_text(json.dumps({"config": to_dict(same)}))  # the same run, stopped early
    code = main(["train", "--config", str(REPO / "configs/finetune/quickstart.yaml"), "--set", f"data={quickstart_corpus}",
                 "--set", f"output_dir={out}", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "has no checkpoint to resume from" in err[-1] and "stopped before step 10" in err[-1]


def test_ctrl_c_stops_training_with_one_line_and_keeps_the_checkpoints(quickstart_corpus, tmp_path):
    """Ctrl-C in a terminal reaches `stegobench train`, accelerate's launcher and the training process: each used
    to print a traceback. Now the training process prints one line naming the checkpoint kept, and --resume
    continues from it."""
    import os
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "stegobench.cli", "train", "--config", str(REPO / "configs/finetune/quickstart.yaml"),
           "--accelerate-config", "cpu"]
    for item in (f"data={quickstart_corpus}", "model=tiny-llama", f"output_dir={out}", "max_steps=400", "batch_size=8",
                 "save_steps=2", "logging_steps=1"):
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    # its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to every process of the group
    # (with Ctrl-C's default action: a test run launched in the background inherits SIGINT ignored)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not list((out / "checkpoints").glob("checkpoint-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.5)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if "stopped by Ctrl-C" in line]
    assert len(stopped) == 1 and stderr.strip().splitlines()[-1] == stopped[0], stderr[-2000:]
    assert "--resume` continues from it" in stopped[0] and "checkpoint-" in stopped[0]
    assert not (out / "train_manifest.json").exists() and list((out / "checkpoints").glob("checkpoint-*"))
