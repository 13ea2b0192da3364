"""The residual stream of a causal LM at chosen token positions, and the parts a logit lens needs.

The parts are found by architecture, not by per-model name lists: the decoder blocks are the ModuleList whose
length is the config's layer count; the final norm is the child of the module holding that list whose weight
is a vector of the hidden size; the unembedding is `get_output_embeddings()`. A check on the first forward
pass (lens at the last layer == the model's own logits) refuses any model where that guess is wrong.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from stegobench.core.errors import InputError

TOKENS_PER_BATCH = 4096  # padded tokens per forward pass, shared prefix included: texts are 20-120 tokens


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
        from stegobench.core.causal_lm import decode_placement, load_causal_lm, load_tokenizer_at
        from stegobench.core.models import resolve_model

        ref = resolve_model(model_spec)
        self.device, self.dtype = decode_placement(dtype, device)
        self.tokenizer = load_tokenizer_at(ref.path)
        if not self.tokenizer.is_fast:
            raise InputError(f"{model_spec}: white-box reading needs a fast tokenizer (character offsets per token)")
        self.model = load_causal_lm(ref.path, self.dtype, self.device)
        self.parts = find_lens_parts(self.model)
        self.n_layers = len(self.parts.layers)
        # Only the last position's logits when the model's forward allows it: the unembedding of every position
        # is a sizeable share of a small model's forward pass, and the hooks read the blocks, not the logits.
        self._can_limit_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.share_prefix = True  # turned off when the cached prefix cannot be used or reads differently
        self._lens_checked = self._sharing_checked = False

    @contextmanager
    def adapter(self, path: str | None) -> Iterator[None]:
        """Apply a LoRA adapter for the duration (unloaded after, leaving the base weights untouched)."""
        if path is None:
            yield
            return
        from stegobench.core.adapters import load_peft

        self.model = load_peft(self.model, path).eval()
        try:
            yield
        finally:
            self.model = self.model.unload()

    def encode(self, prompt: str, response: str) -> Encoded:
        enc = self.tokenizer(prompt + response, add_special_tokens=False, return_offsets_mapping=True)
        return Encoded(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]], len(prompt))

    def residuals(self, encoded: list[Encoded], positions: list[list[int]]):
        """[sum of positions, n_layers, hidden] float32 on the CPU: the residual after every block at each
        sample's positions, in order.

        The token prefix every text shares (the chat template's system turn) is run once and its keys and values
        reused by every batch; each text is run only up to its last kept position, and only one position's logits
        are computed. The first read checks the lens against the model's logits, and the first read that shares
        a prefix checks it against a plain forward pass (reading every text whole from then on if they differ)."""
        import torch

        hidden = self.model.config.hidden_size
        rows: list[Any] = [torch.zeros(0, self.n_layers, hidden)] * len(encoded)
        # A causal model's residual at a position ignores every later token.
        wanted = [i for i, p in enumerate(positions) if p]
        texts = [encoded[i].ids[:max(positions[i]) + 1] for i in wanted]
        if not texts:
            return torch.zeros(0, self.n_layers, hidden)
        plain = None  # one plain pass of the first text serves both first-read checks
        if not self._lens_checked:
            plain = self._plain(texts[0])
            self._check_lens(*plain)
        shared = _shared_prefix(texts) if self.share_prefix else 0
        with self._captured() as captured:
            prefix = self._run_prefix(texts[0][:shared], captured) if shared else None
            shared = shared if prefix is not None else 0
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            for batch in _batches(texts, TOKENS_PER_BATCH):  # full lengths: the prefix's keys and values count too
                own = [texts[i][shared:] for i in batch]
                width = max(len(o) for o in own)
                ids = torch.tensor([o + [pad] * (width - len(o)) for o in own])
                mask = torch.tensor([[1] * len(o) + [0] * (width - len(o)) for o in own])
                past = None
                if prefix is not None:
                    past = copy.deepcopy(prefix[1])
                    past.batch_repeat_interleave(len(batch))
                    mask = torch.cat([torch.ones(len(batch), shared, dtype=mask.dtype), mask], dim=1)
                captured.clear()
                self._forward(ids, mask, past, use_cache=past is not None)  # right padding: positions 0..n-1
                for b, i in enumerate(batch):  # only the kept positions leave the layers' outputs
                    rows[wanted[i]] = _gather(captured, b, prefix[0] if prefix else None, positions[wanted[i]], shared)
        # every text is read past the prefix (it ends at a kept position and leaves one token of its own)
        if shared and not self._sharing_checked:
            states = (plain or self._plain(texts[0]))[0]
            if not self._check_sharing(states, positions[wanted[0]], rows[wanted[0]]):
                return self.residuals(encoded, positions)
        return torch.cat(rows)

    @contextmanager
    def _captured(self) -> Iterator[list[Any]]:
        """Every decoder block's output of each forward pass run inside, in block order."""
        captured: list[Any] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple)
                                                                                  else out))
                 for layer in self.parts.layers]
        try:
            yield captured
        finally:
            for h in hooks:
                h.remove()

    def _forward(self, ids, mask, past, use_cache: bool = False, all_logits: bool = False):
        import torch

        lean = {} if all_logits or not self._can_limit_logits else {"logits_to_keep": 1}
        with torch.no_grad():
            mask = None if mask is None else mask.to(self.device)
            return self.model(input_ids=ids.to(self.device), attention_mask=mask, past_key_values=past,
                              use_cache=use_cache, **lean)

    def _run_prefix(self, ids: list[int], captured: list[Any]):
        """(per-block states [prefix, hidden], key/value cache) of the shared prefix, or None (sharing turned off,
        with a line saying why) for a model whose cache cannot be copied across a batch."""
        import torch

        captured.clear()
        out = self._forward(torch.tensor([ids]), None, None, use_cache=True)
        cache = getattr(out, "past_key_values", None)
        try:
            copy.deepcopy(cache).batch_repeat_interleave(2)
        except (AttributeError, TypeError, RuntimeError, NotImplementedError) as exc:
            self._stop_sharing(f"its key/value cache ({type(cache).__name__}) cannot be repeated across a batch "
                               f"({type(exc).__name__})")
            return None
        return [h[0] for h in captured], cache

    def _plain(self, ids: list[int]):
        """Per-block states [tokens, hidden] and logits [tokens, vocab] of one text, run whole."""
        import torch

        with self._captured() as captured:
            out = self._forward(torch.tensor([ids]), None, None, all_logits=True)
        return [h[0] for h in captured], out.logits[0]

    def _check_lens(self, states: list[Any], logits) -> None:
        """The lens at the last block of a plain pass must reproduce its logits, else the parts were guessed wrong."""
        import torch

        if not torch.allclose(self.lens_logits(states[-1]), logits.float(),
                              atol=1e-3 if self.dtype == "float32" else 5e-2):
            raise InputError(f"{type(self.model).__name__}: the final norm and unembedding found by architecture do "
                             "not reproduce the model's logits; this model is not supported by the white-box monitors")
        self._lens_checked = True

    def _check_sharing(self, states: list[Any], positions: list[int], read) -> bool:
        """Whether the shared-prefix reading of one text matches its plain pass's `states` (if not, sharing stops)."""
        import torch

        plain = torch.stack([h[positions] for h in states], dim=1).float().cpu()
        error = float((plain - read).norm() / plain.norm().clamp_min(1e-12))
        self._sharing_checked = True
        if error > (1e-3 if self.dtype == "float32" else 3e-2):
            self._stop_sharing(f"it reads differently with a shared prefix (relative error {error:.1e})")
            return False
        return True

    def _stop_sharing(self, why: str) -> None:
        print(f"white-box: {type(self.model).__name__}: {why}; reading every text whole", flush=True)
        self.share_prefix = False

    def lens_logits(self, residual):
        """Vocabulary logits of residual vectors [..., hidden] read through the final norm and unembedding."""
        import torch

        with torch.no_grad():
            return self.parts.unembed(self.parts.norm(residual.to(self.device, getattr(torch, self.dtype)))).float()

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


MIN_SHARED_PREFIX = 4  # tokens: a shorter shared prefix saves less than its own forward pass costs


def _shared_prefix(texts: list[list[int]]) -> int:
    """Tokens every text starts with, leaving each at least one of its own (0 when too few to be worth it)."""
    if len(texts) < 2:
        return 0
    first, n = texts[0], min(len(t) for t in texts) - 1
    shared = next((k for k in range(n) if any(t[k] != first[k] for t in texts)), max(n, 0))
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _gather(captured: list[Any], b: int, prefix_states: list[Any] | None, positions: list[int], shared: int):
    """[positions, layers, hidden] of batch row `b`: positions inside the shared prefix come from its own pass."""
    import torch

    own = [t - shared for t in positions if t >= shared]
    out = torch.stack([h[b, own] for h in captured], dim=1).float().cpu()
    if len(own) == len(positions):
        return out
    inside = [t for t in positions if t < shared]
    rows = torch.empty(len(positions), *out.shape[1:])
    is_own = torch.tensor([t >= shared for t in positions])
    rows[is_own] = out
    rows[~is_own] = torch.stack([h[inside] for h in prefix_states], dim=1).float().cpu()
    return rows


def _batches(texts: list[list[int]], budget: int) -> Iterator[list[int]]:
    """Indices grouped by length (least padding) so each batch's padded size stays within `budget` tokens."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batch: list[int] = []
    for i in order:
        if batch and len(texts[i]) * (len(batch) + 1) > budget:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
