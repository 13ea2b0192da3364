"""transformers backend: batched greedy generation with left padding (core/causal_lm.py); log-probabilities with
shared prefixes computed once (tree_scorer.py).

An adapter is merged into the base weights once at load (no per-token LoRA overhead). Device and dtype come
from core/device.py unless given: float32 on CPUs, bfloat16 on the first GPU where it is supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from stegobench.core.adapters import adapter_content_sha256
from stegobench.core.causal_lm import CausalLM
from stegobench.core.models import resolve_model
from stegobench.core.provenance import package_versions

from .. import progress
from .base import Backend, Sampling
from .options import HFOptions
from .tree_scorer import score_texts

BATCH_SIZE = HFOptions.batch_size  # float32 on 2 cores, 256 prompts x 32 tokens: 121 tok/s at 32, 166 at 64


class HFBackend(Backend[HFOptions]):
    name = "hf"

    def __init__(self, model: str, options: HFOptions | None = None, adapter: str | None = None, *,
                 corpus: str | Path | None = None, lora_adapters: Sequence[str] = ()):
        options = options or HFOptions()
        self.ref = resolve_model(model)
        self.adapter = adapter
        # The content hash, not the path, keys the generation cache: a retrained adapter must never hit old entries.
        self.adapter_sha256 = adapter_content_sha256(adapter) if adapter else None
        self.lm = CausalLM(self.ref.path, options.dtype, options.device, merge_adapter=adapter,
                           batch_size=options.batch_size)

    def identity(self) -> dict[str, Any]:
        # The libraries that compute the answers key the generation cache too: a new transformers or peft may
        # decode the same weights differently.
        return {"backend": "hf", "versions": package_versions(("torch", "transformers", "peft")),
                "model": self.ref.identity, "adapter": self.adapter, "adapter_sha256": self.adapter_sha256,
                "dtype": self.lm.dtype, "device": self.lm.device}

    def chat_prompt(self, user_text: str) -> str:
        return self.lm.chat_prompt(user_text)

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]:
        return self.lm.generate(prompts, sampling, on_batch=progress.report)  # the step's bar advances batch by batch

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]:
        return score_texts(self.lm.model, self.lm.tokenizer, prompts, continuations)
