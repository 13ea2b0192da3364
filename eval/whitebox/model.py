"""The residual stream of a causal LM at chosen token positions, and the parts a logit lens needs.

The parts are found by architecture, not by per-model name lists: the decoder blocks are the ModuleList whose
length is the config's layer count; the final norm is the child of the module holding that list whose weight
is a vector of the hidden size; the unembedding is `get_output_embeddings()`. A check on the first forward
pass (lens at the last layer == the model's own logits) refuses any model where that guess is wrong.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from stegobench.core.errors import InputError

TOKENS_PER_BATCH = 4096  # padded tokens per forward pass: answers here are 20-120 tokens, so ~40-200 sequences


@dataclass(frozen=True)
class LensParts:
    layers: Any  # torch.nn.ModuleList of decoder blocks
    norm: Any  # the final norm, applied before the unembedding
    unembed: Any  # hidden -> vocabulary logits


def find_lens_parts(model) -> LensParts:
    import torch

    n_layers = getattr(model.config, "num_hidden_layers", None)
    hidden = getattr(model.config, "hidden_size", None)
    for owner in model.modules():
        for child in owner.children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == n_layers:
                norms = [m for m in owner.children() if not isinstance(m, (torch.nn.Embedding, torch.nn.ModuleList))
                         and getattr(m, "weight", None) is not None and tuple(m.weight.shape) == (hidden,)]
                if len(norms) == 1 and model.get_output_embeddings() is not None:
                    return LensParts(child, norms[0], model.get_output_embeddings())
    raise InputError(f"{type(model).__name__}: no decoder-block list of {n_layers} layers with one final norm of "
                     f"size {hidden} beside it; white-box monitors need a causal LM with a final norm and an unembedding")


@dataclass
class Encoded:
    """One text (prompt + response) as tokens, with the character span of every token."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    prompt_chars: int

    def tokens_in(self, start: int, end: int) -> list[int]:
        """Indices of the tokens overlapping characters [start, end)."""
        return [i for i, (s, e) in enumerate(self.offsets) if e > s and e > start and s < end]

    @property
    def last_prompt_token(self) -> int:
        inside = [i for i, (s, e) in enumerate(self.offsets) if e <= self.prompt_chars and e > s]
        return inside[-1] if inside else 0


class ResidualReader:
    """A transformers model (adapters applied by peft, never merged, so the base stays readable) whose
    residual stream after every decoder block can be read at chosen positions."""

    def __init__(self, model_spec: str, dtype: str = "auto", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from stegobench.core.device import device_defaults, resolve_dtype
        from stegobench.core.machine import read_machine
        from stegobench.core.models import resolve_model

        ref = resolve_model(model_spec)
        defaults = device_defaults(read_machine())
        self.device = device or defaults.device
        self.dtype = resolve_dtype(dtype, defaults.eval_dtype if self.device != "cpu" else "float32")
        self.tokenizer = AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
        if not self.tokenizer.is_fast:
            raise InputError(f"{model_spec}: white-box reading needs a fast tokenizer (character offsets per token)")
        self.model = AutoModelForCausalLM.from_pretrained(str(ref.path), dtype=getattr(torch, self.dtype),
                                                          local_files_only=True).to(self.device).eval()
        self.parts = find_lens_parts(self.model)
        self.n_layers = len(self.parts.layers)
        self._checked = False

    @contextmanager
    def adapter(self, path: str | None) -> Iterator[None]:
        """Apply a LoRA adapter for the duration (unloaded after, leaving the base weights untouched)."""
        if path is None:
            yield
            return
        from peft import PeftModel

        self.model = PeftModel.from_pretrained(self.model, path).eval()
        try:
            yield
        finally:
            self.model = self.model.unload()

    def encode(self, prompt: str, response: str) -> Encoded:
        enc = self.tokenizer(prompt + response, add_special_tokens=False, return_offsets_mapping=True)
        return Encoded(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]], len(prompt))

    def residuals(self, encoded: list[Encoded], positions: list[list[int]]):
        """[sum of positions, n_layers, hidden] float32 on the CPU: the residual after every block at each
        sample's positions, in order."""
        import torch

        captured: list[Any] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple)
                                                                                  else out))
                 for layer in self.parts.layers]
        rows: list[Any] = []
        try:
            for batch in _batches(encoded, TOKENS_PER_BATCH):
                width = max(len(encoded[i].ids) for i in batch)
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                ids = torch.tensor([encoded[i].ids + [pad] * (width - len(encoded[i].ids)) for i in batch])
                mask = torch.tensor([[1] * len(encoded[i].ids) + [0] * (width - len(encoded[i].ids)) for i in batch])
                captured.clear()
                with torch.no_grad():  # right padding: real tokens keep positions 0..n-1
                    out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                    if not self._checked:
                        self._check_lens(captured[-1], out.logits)
                for b, i in enumerate(batch):  # only the kept positions leave the layers' outputs
                    rows.append((i, torch.stack([h[b, positions[i]] for h in captured], dim=1).float().cpu()))
        finally:
            for h in hooks:
                h.remove()
        rows.sort(key=lambda r: r[0])
        hidden = self.model.config.hidden_size
        return torch.cat([r for _, r in rows]) if rows else torch.zeros(0, self.n_layers, hidden)

    def lens_logits(self, residual):
        """Vocabulary logits of residual vectors [..., hidden] read through the final norm and unembedding."""
        import torch

        with torch.no_grad():
            return self.parts.unembed(self.parts.norm(residual.to(self.device, getattr(torch, self.dtype)))).float()

    def _check_lens(self, last_layer, logits) -> None:
        import torch

        lens = self.parts.unembed(self.parts.norm(last_layer))
        if not torch.allclose(lens.float(), logits.float(), atol=1e-3 if self.dtype == "float32" else 5e-2):
            raise InputError(f"{type(self.model).__name__}: the final norm and unembedding found by architecture do "
                             "not reproduce the model's logits; this model is not supported by the white-box monitors")
        self._checked = True

    def first_token_ids(self, words: list[str]) -> list[int]:
        """The first token of each word as it starts an answer or follows a space, in lower and title case."""
        ids: set[int] = set()
        for w in words:
            for variant in {w, w.lower(), w[:1].upper() + w[1:]}:
                for text in (variant, " " + variant):
                    toks = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                    if toks:
                        ids.add(toks[0])
        return sorted(ids)


def _batches(encoded: list[Encoded], budget: int) -> Iterator[list[int]]:
    """Indices grouped by length (least padding) so each batch's padded size stays within `budget` tokens."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    batch: list[int] = []
    for i in order:
        if batch and len(encoded[i].ids) * (len(batch) + 1) > budget:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
