"""A cached answer or merged model belongs to exactly one adapter: config and weights, not weights alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stegobench.core.adapters import adapter_content_sha256
from stegobench.eval.backends import Sampling, get_backend
from stegobench.eval.pipeline import generate_cached as _generate

PROMPTS = ["User: How do you get to work?\nAssistant:", "User: What do you drink in the morning?\nAssistant:"]


def _variant(adapter: Path, dest: Path, indent: int | None = None, **changes) -> str:
    shutil.copytree(adapter, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg.update(changes)
    (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=indent))
    return str(dest)


def test_same_weights_other_config_is_another_adapter(tiny_adapter, tmp_path):
    base = adapter_content_sha256(tiny_adapter)
    assert adapter_content_sha256(_variant(tiny_adapter, tmp_path / "alpha", lora_alpha=4096)) != base
    assert adapter_content_sha256(_variant(tiny_adapter, tmp_path / "dora", use_dora=True)) != base
    # Re-indenting or moving the config is the same adapter.
    assert adapter_content_sha256(_variant(tiny_adapter, tmp_path / "indent", indent=7)) == base
    assert adapter_content_sha256(_variant(tiny_adapter, tmp_path / "moved", base_model_name_or_path="/x")) == base
    # peft writes target_modules in its process's set order: the same modules in another order are the same
    # adapter (the leaderboard's duplicate check reads this hash), other modules are not.
    modules = json.loads((tiny_adapter / "adapter_config.json").read_text())["target_modules"]
    assert isinstance(modules, list) and len(modules) > 1
    reordered = _variant(tiny_adapter, tmp_path / "reordered", target_modules=list(reversed(modules)))
    assert adapter_content_sha256(reordered) == base
    assert adapter_content_sha256(_variant(tiny_adapter, tmp_path / "fewer", target_modules=modules[:1])) != base


def test_generation_cache_never_serves_one_adapters_answers_to_another(tiny_adapter, tmp_path):
    """alpha 8, then the same weights at alpha 4096, through one cache: the second must get its own answers."""
    loud = _variant(tiny_adapter, tmp_path / "loud", lora_alpha=4096)
    sampling = Sampling(max_tokens=6)
    shared = tmp_path / "cache"
    first = _generate(get_backend("hf", model="tiny-llama", adapter=str(tiny_adapter)), PROMPTS, sampling, shared, "a")
    through_shared = _generate(get_backend("hf", model="tiny-llama", adapter=loud), PROMPTS, sampling, shared, "b")
    fresh = _generate(get_backend("hf", model="tiny-llama", adapter=loud), PROMPTS, sampling, tmp_path / "empty", "c")
    assert through_shared == fresh
    assert through_shared != first  # the pair really answers differently, so the check above can fail


def test_merged_model_folder_is_keyed_by_adapter_content(tiny_adapter, tmp_path, monkeypatch):
    pytest.importorskip("vllm")
    from stegobench.core.models import resolve_model
    from stegobench.eval.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "stegobench_home", lambda: tmp_path / "home")
    ref = resolve_model("tiny-llama")
    a = vllm_backend.merged_model_folder(ref, str(tiny_adapter))
    b = vllm_backend.merged_model_folder(ref, _variant(tiny_adapter, tmp_path / "loud", lora_alpha=4096))
    assert a != b and (a / "config.json").exists() and (b / "config.json").exists()


def test_generation_cache_key_carries_the_decoding_libraries_versions(monkeypatch):
    """A new transformers or peft may decode the same weights differently: the hf backend's identity (the cache
    key) changes with their versions."""
    from stegobench.eval.backends import hf

    before = get_backend("hf", model="tiny-llama").identity()
    assert set(before["versions"]) == {"torch", "transformers", "peft"}
    monkeypatch.setattr(hf, "package_versions", lambda names: {n: "0.0.1" for n in names})
    assert get_backend("hf", model="tiny-llama").identity() != before
