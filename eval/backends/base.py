"""The one interface every decoding backend implements (docs/design.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 48
    temperature: float = 0.0  # greedy by default: the benchmark measures the model's preferred answer
    seed: int = 0


class Backend(Protocol):
    """Prompts are fully rendered strings (eval applies the chat template once, so every backend sees the same
    text); `score` returns the summed log-probability of each continuation given its prompt."""

    name: str

    def chat_prompt(self, user_text: str) -> str: ...

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]: ...

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]: ...

    def identity(self) -> dict[str, Any]: ...
