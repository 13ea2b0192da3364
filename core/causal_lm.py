"""Causal LMs in transformers, loaded one way and decoded one way for every stage (docs/design.md §5).

`load_causal_lm` is the only place a causal LM's weights are loaded: eval's hf backend, vLLM's scorer and its
merged-adapter folders, the white-box reader, training and data_gen's augment paraphraser all go through it. It
reads a resolved model folder (core/models.py) and nothing else: never the hub (`local_files_only`), never remote
code (`trust_remote_code=False`, passed explicitly), safetensors weights only.

`CausalLM` decodes batches of chat prompts with it (left padding, greedy or seeded sampling): the hf backend and
the augment paraphraser share it, so one model answers one prompt the same way in every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import InputError


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 48
    temperature: float = 0.0  # greedy by default: the benchmark measures the model's preferred answer
    seed: int = 0


def load_tokenizer_at(folder: str | Path):
    """The tokenizer of a model folder on this machine (never downloaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def load_causal_lm(folder: str | Path, dtype: str, device: str | None = None, *, merge_adapter: str | Path | None = None,
                   attn_implementation: str | None = None):
    """The causal LM in `folder` at `dtype` ('float32', 'bfloat16', 'float16'), moved to `device` when one is given
    (else left where transformers loads it: the CPU), with the LoRA adapter folder `merge_adapter` merged into its
    weights when one is given (no LoRA overhead per token), in eval mode (a trainer switches modes itself)."""
    from .profile import Work, model_label, span

    with span(Work.MODEL_LOAD, model=model_label(folder), merge=merge_adapter is not None):
        return _load_causal_lm(folder, dtype, device, merge_adapter, attn_implementation)


def _load_causal_lm(folder, dtype, device, merge_adapter, attn_implementation):
    import torch
    from transformers import AutoModelForCausalLM

    if not any(Path(folder).glob("*.safetensors")):
        raise InputError(f"{folder}: no *.safetensors weights; stegobench loads safetensors only (pickled "
                         "pytorch_model.bin files can run code): save the model with safe_serialization=True")
    extra: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype), local_files_only=True,
                                                      use_safetensors=True, trust_remote_code=False, **extra)
    if device is not None:
        model = model.to(device)
    if merge_adapter is not None:
        from .adapters import load_peft

        model = load_peft(model, merge_adapter).merge_and_unload()
    return model.eval()


def decode_placement(dtype: str = "auto", device: str | None = None) -> tuple[str, str]:
    """(device, dtype) a model decodes on when the caller leaves them to the machine: the device default
    (core/device.py), and float32 on a CPU (bf16 is emulated and slower there) or the device's eval dtype."""
    from .device import device_defaults, resolve_dtype
    from .machine import read_machine

    defaults = device_defaults(read_machine())
    where = device or defaults.device
    return where, resolve_dtype(dtype, defaults.eval_dtype if where != "cpu" else "float32")


class CausalLM:
    """A causal LM and its tokenizer, decoding chat prompts in batches with left padding.

    `dtype` 'auto' and `device` None take the machine's defaults (`decode_placement`); `merge_adapter` is merged
    into the weights once at load."""

    def __init__(self, folder: str | Path, dtype: str = "auto", device: str | None = None,
                 merge_adapter: str | Path | None = None, batch_size: int = 64):
        self.device, self.dtype = decode_placement(dtype, device)
        self.tokenizer = load_tokenizer_at(folder)
        self.tokenizer.padding_side = "left"  # generated tokens follow every prompt directly
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_causal_lm(folder, self.dtype, self.device, merge_adapter=merge_adapter)
        self.batch_size = batch_size

    def chat_prompt(self, user_text: str) -> str:
        messages = [{"role": "user", "content": user_text}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"User: {user_text}\nAssistant:"

    def generate(self, prompts: list[str], sampling: Sampling,
                 on_batch: Callable[[int], None] | None = None) -> list[str]:
        """One answer per prompt, `batch_size` prompts at a time; `on_batch(n)` after each batch of n."""
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
            if on_batch is not None:
                on_batch(len(ids))
        return out
