"""transformers backend: batched greedy generation with left padding; log-probabilities with shared prefixes
computed once (tree_scorer.py).

An adapter is merged into the base weights once at load (no per-token LoRA overhead). Device and dtype come
from core/device.py unless given: float32 on CPUs, bfloat16 on the first GPU where it is supported.
"""

from __future__ import annotations

from typing import Any

from stegobench.core.adapters import adapter_content_sha256
from stegobench.core.device import device_defaults, resolve_dtype
from stegobench.core.machine import read_machine
from stegobench.core.models import resolve_model
from stegobench.core.provenance import package_versions

from .. import progress
from .base import Sampling
from .options import HFOptions
from .tree_scorer import score_texts

BATCH_SIZE = HFOptions.batch_size  # float32 on 2 cores, 256 prompts x 32 tokens: 121 tok/s at 32, 166 at 64


class HFBackend:
    name = "hf"

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto", batch_size: int = BATCH_SIZE,
                 device: str | None = None, **_: Any):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = resolve_model(model)
        self.adapter = adapter
        # The content hash, not the path, keys the generation cache: a retrained adapter must never hit old entries.
        self.adapter_sha256 = adapter_content_sha256(adapter) if adapter else None
        defaults = device_defaults(read_machine())
        self.device = device or defaults.device
        self.dtype = resolve_dtype(dtype, defaults.eval_dtype if self.device != "cpu" else "float32")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.ref.path), local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        net = AutoModelForCausalLM.from_pretrained(str(self.ref.path), dtype=getattr(torch, self.dtype),
                                                   local_files_only=True).to(self.device)
        if adapter:
            from stegobench.core.adapters import load_peft

            net = load_peft(net, adapter).merge_and_unload()
        self.model = net.eval()
        self.batch_size = batch_size

    def identity(self) -> dict[str, Any]:
        # The libraries that compute the answers key the generation cache too: a new transformers or peft may
        # decode the same weights differently.
        return {"backend": "hf", "versions": package_versions(("torch", "transformers", "peft")),
                "model": self.ref.identity, "adapter": self.adapter, "adapter_sha256": self.adapter_sha256,
                "dtype": self.dtype, "device": self.device}

    def chat_prompt(self, user_text: str) -> str:
        messages = [{"role": "user", "content": user_text}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"User: {user_text}\nAssistant:"

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]:
        import torch

        out: list[str] = []
        torch.manual_seed(sampling.seed)
        for i in range(0, len(prompts), self.batch_size):
            enc = self.tokenizer(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
            kwargs.update({"do_sample": True, "temperature": sampling.temperature} if sampling.temperature > 0
                          else {"do_sample": False})
            with torch.no_grad():
                ids = self.model.generate(**enc, **kwargs)
            out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            progress.report(len(ids))  # the step's bar advances batch by batch
        return out

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]:
        return score_texts(self.model, self.tokenizer, prompts, continuations)
