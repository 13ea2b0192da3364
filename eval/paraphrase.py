"""The augment model of a track (`augment:` in a track config) as data_gen.augment's Paraphraser, run by an eval
backend: data_gen may not import eval, so `stegobench gen` hands `paraphraser_factory` to `generate`.

    stegobench gen --config my-track.yaml --out runs/my-track/data   # the track has augment: {model: ..., ...}
"""

from __future__ import annotations

from typing import Any

from stegobench.core.device import device_defaults
from stegobench.core.machine import read_machine
from stegobench.core.models import resolve_model
from stegobench.core.provenance import sha256_file
from stegobench.data_gen.track import AugmentConfig

from .backends import Sampling, get_backend, is_scripted_model


class BackendParaphraser:
    """Completions of augmentation requests from `cfg.model` on `cfg.backend`; the model is loaded only when the
    augment cache misses (its identity needs no weights in memory)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg

    def identity(self) -> dict[str, Any]:
        """What changes the completions besides the prompts and sampling: the weights, or the mock's script; and
        the dtype the backend would decode in here (float32 on CPUs, bf16 on GPUs sample differently)."""
        if is_scripted_model(self.cfg.model):
            from .backends import mock

            return {"spec": self.cfg.model, "script_sha256": sha256_file(mock.__file__)}
        defaults = device_defaults(read_machine())
        return {"spec": self.cfg.model, **resolve_model(self.cfg.model).identity, "dtype": defaults.eval_dtype,
                "device": defaults.device}

    def complete(self, user_texts: list[str], temperature: float, max_tokens: int, seed: int) -> list[str]:
        backend = get_backend(self.cfg.backend, self.cfg.model)
        try:
            prompts = [backend.chat_prompt(t) for t in user_texts]
            return backend.generate(prompts, Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed))
        finally:
            backend.close()


def paraphraser_factory(cfg: AugmentConfig) -> BackendParaphraser:
    return BackendParaphraser(cfg)
