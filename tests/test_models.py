"""The model zoo: builtins resolve offline, the real model answers sensibly, saved adapters load as peft does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stegobench.core.errors import InputError
from stegobench.core.models import resolve_model

from conftest import tiny_train_config


def test_smollm2_answers_a_plain_question_under_its_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = resolve_model("smollm2-135m-instruct")
    assert ref.identity["weights_sha256"] and ref.identity["gguf_sha256"]
    tok = AutoTokenizer.from_pretrained(str(ref.path))
    model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=torch.float32)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_tiny_llama_is_deterministic_and_small():
    ref = resolve_model("tiny-llama")
    assert ref.identity["seed"] == 0 and ref.identity["shape"]["num_hidden_layers"] == 2
    # The recorded hash matches the file: the cache is what it claims to be.
    from stegobench.core.provenance import sha256_file

    assert sha256_file(ref.path / "model.safetensors") == ref.identity["weights_sha256"]["model.safetensors"]


def test_hub_ids_and_missing_folders_fail_clearly(tmp_path):
    with pytest.raises(InputError, match="never downloads at run time.*local folder"):
        resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(InputError, match="no such folder and not a builtin"):
        resolve_model(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a model folder"):
        resolve_model(str(tmp_path / "empty"))


def test_a_saved_adapter_decodes_in_the_hf_backend_as_transformers_and_peft_do(quickstart_corpus, tmp_path):
    """The hf backend's greedy answers with an adapter equal PeftModel.from_pretrained's, token for token
    (float32). vLLM's answers equal the hf backend's, as LoRA and merged: tests/test_backends.py's probe."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stegobench.eval.backends import Sampling, get_backend
    from stegobench.finetune.train import train

    res = train(tiny_train_config(quickstart_corpus, tmp_path / "run", "max_steps=12"))
    base_path = str(resolve_model("tiny-llama").path)
    prompts = ["A cat is", "In our usage, a tulip is"]
    tok = AutoTokenizer.from_pretrained(base_path)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                           str(res.output_dir))

    def peft_greedy() -> list[str]:
        outs = []
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                o = peft_model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            outs.append(tok.decode(o[0, ids.shape[1]:], skip_special_tokens=True))
        return outs

    sampling = Sampling(max_tokens=8)
    tuned = get_backend("hf", "tiny-llama", str(res.output_dir)).generate(prompts, sampling)
    assert tuned == peft_greedy()
    with peft_model.disable_adapter():
        base = peft_greedy()
    assert get_backend("hf", "tiny-llama").generate(prompts, sampling) == base
    assert tuned != base, "the adapter changed nothing: the comparison would not see an adapter ignored"


def test_a_builtin_prepared_by_two_processes_at_once_keeps_the_first_folder(tmp_path):
    """Test workers (and a user's parallel jobs) may build tiny-llama together: each builds in its own staging
    folder, the first published stays, a later one is discarded, an incomplete folder is replaced."""
    from stegobench.core import models

    def built(name: str, text: str) -> Path:
        staging = tmp_path / name
        staging.mkdir()
        (staging / "model.safetensors").write_text(text)
        return staging

    folder = tmp_path / "models" / "tiny-llama"
    folder.parent.mkdir()
    models._publish_model_folder(built("a", "first"), folder, {"name": "tiny-llama"})
    inode = (folder / "model.safetensors").stat().st_ino
    models._publish_model_folder(built("b", "second"), folder, {"name": "tiny-llama"})  # a slower process
    assert (folder / "model.safetensors").read_text() == "first" and (folder / "model.safetensors").stat().st_ino == inode
    assert not (tmp_path / "b").exists() and sorted(p.name for p in folder.parent.iterdir()) == ["tiny-llama"]
    (folder / models.BUILTIN_MARKER).unlink()  # a folder some interrupted run left without its marker
    models._publish_model_folder(built("c", "third"), folder, {"name": "tiny-llama"})
    assert (folder / "model.safetensors").read_text() == "third" and (folder / models.BUILTIN_MARKER).exists()
    assert models._staging_folder(folder).name == f"tiny-llama.tmp-{os.getpid()}"  # one staging folder a process
