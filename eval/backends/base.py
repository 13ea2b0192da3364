"""The one interface every decoding backend implements (docs/design.md §5).

An abstract base with the required abilities abstract and the optional ones given defaults (inspect_ai's
`ModelAPI` pattern), so a caller asks any backend the same questions and never probes it for an attribute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, Sequence, TypeVar

from stegobench.core.causal_lm import Sampling

from .options import BackendOptions

OptionsT = TypeVar("OptionsT", bound=BackendOptions)


class Backend(ABC, Generic[OptionsT]):
    """Prompts are fully rendered strings (eval applies the chat template once, so every backend sees the same
    text); `score` returns the summed log-probability of each continuation given its prompt.

    Every backend is opened the same way, `Backend(model, options, adapter, corpus=, lora_adapters=)`:
    `options` is its own typed options (eval/backends/options.py; None: every default), so an option it does not
    know cannot reach it; `corpus` is the run's corpus folder and `lora_adapters` the adapters the caller will ask
    for with `with_adapter`: each backend keeps what it uses of them (the scripted mock answers the corpus's
    questions, vLLM serves the adapters in one engine). `get_backend` opens one by name.
    """

    name: ClassVar[str]
    uses_device: ClassVar[bool] = True  # runs a model on this machine's devices (the scripted mock does not)

    def __init__(self, model: str, options: OptionsT | None = None, adapter: str | None = None, *,
                 corpus: str | Path | None = None, lora_adapters: Sequence[str] = ()) -> None:
        """The signature every backend is opened with (`get_backend` calls it); this base keeps none of it."""

    @abstractmethod
    def chat_prompt(self, user_text: str) -> str: ...

    @abstractmethod
    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]: ...

    @abstractmethod
    def score(self, prompts: list[str], continuations: list[str]) -> list[float]: ...

    @abstractmethod
    def identity(self) -> dict[str, Any]: ...

    def with_adapter(self, adapter: str) -> Backend | None:
        """This backend's engine serving `adapter` too, or None when it cannot (the caller opens a backend of its
        own for the adapter): only an engine that serves adapters as LoRA can."""
        return None

    def close(self) -> None:
        """Free the engine and the weights (one run may open many backends); nothing to free by default."""

    @classmethod
    def run_options(cls, options: OptionsT, model: str, whitebox: bool) -> OptionsT:
        """The options an eval run opens this backend with, given the config's `options`: as configured unless
        the backend adjusts them for the run (vLLM leaves room on the GPU for the white-box reader)."""
        return options


__all__ = ["Backend", "BackendOptions", "Sampling"]
