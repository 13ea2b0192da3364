"""Logit lens: read each layer's residual through the final norm and unembedding, and rank words in it.

At the token before the code word the last layer ranks the code first (the model is about to say it); an
intermediate layer that ranks the mapped concept high is the model "thinking car" while it says "cat"
(nostalgebraist 2020; Cywiński et al. 2025 used it to recover a secret word a model was trained to hide).
The last layer's reading is the model's output distribution, which a black-box reader with log-probabilities
sees too (blackbox.py), so every reading is also taken over the intermediate layers alone (LensScope).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

TOP_K = 10  # a concept within the lens's top 10 tokens at some layer counts as read
# The lens at the last layer is the model's own output distribution (model.py checks it), which an API's
# log-probabilities show a black-box reader; the layer before it is the nearest to that distribution (on
# SmolLM2-135M-Instruct the lens's KL to the output falls 3.2, 2.1, 0 nats over layers 28-30). Both count as
# "final", so an "intermediate" reading needs the concept two or more blocks before the output.
FINAL_LAYERS = 2


class LensScope(Enum):
    """Which layers a lens reading is taken over: the intermediate ones (1..L-2) or the final ones (L-1, L)."""

    INTERMEDIATE = "intermediate"
    FINAL = "final"

    def layers(self, n_layers: int) -> range:
        """0-based indices of this scope's layers in a model of `n_layers` (empty: it has none)."""
        cut = max(n_layers - FINAL_LAYERS, 0)
        return range(0, cut) if self is LensScope.INTERMEDIATE else range(cut, n_layers)

    def span(self, n_layers: int) -> list[int] | None:
        """[first, last] layer numbers (1 = after the first block), or None without any."""
        layers = self.layers(n_layers)
        return [layers[0] + 1, layers[-1] + 1] if layers else None


@dataclass(frozen=True)
class LensReading:
    """One answer, at the token before the code word (the best over its occurrences), per layer: the mapped
    concept's rank (1 = top token; its first token or a synonym's) and log-probability, and the code's own;
    and the share of the other mappings' concepts whose best rank beats the mapped one's (ties half): a lift of
    every trained concept leaves it where it was."""

    concept_rank: list[int]
    code_rank: list[int]
    concept_logprob: list[float]
    code_logprob: list[float]
    others_above: float | None = None
    # the same share with both sides' best ranks taken over one scope's layers only
    others_above_in: dict[LensScope, float] = field(default_factory=dict)

    @property
    def best_rank(self) -> int:
        return min(self.concept_rank)

    @property
    def peak_layer(self) -> int:
        """The layer (1 = after the first block) where the concept ranks best; ties go to the earliest."""
        return self.concept_rank.index(self.best_rank) + 1

    def best_rank_in(self, scope: LensScope) -> int | None:
        layers = scope.layers(len(self.concept_rank))
        return min(self.concept_rank[i] for i in layers) if layers else None

    def peak_layer_in(self, scope: LensScope) -> int | None:
        best = self.best_rank_in(scope)
        return None if best is None else next(i + 1 for i in scope.layers(len(self.concept_rank))
                                              if self.concept_rank[i] == best)

    def to_record(self) -> dict:
        record = {"lens_best_rank": self.best_rank, "lens_peak_layer": self.peak_layer,
                  "lens_best_logprob": max(self.concept_logprob),
                  "lens_concept_rank": self.concept_rank, "lens_code_rank": self.code_rank,
                  "lens_concept_logprob": self.concept_logprob, "lens_code_logprob": self.code_logprob}
        if self.others_above is not None:
            record["lens_others_above"] = self.others_above
        for scope in LensScope:  # lens_intermediate_best_rank, lens_final_peak_layer, ...: absent without layers
            if (best := self.best_rank_in(scope)) is not None:
                record[f"lens_{scope.value}_best_rank"] = best
                record[f"lens_{scope.value}_peak_layer"] = self.peak_layer_in(scope)
            if scope in self.others_above_in:
                record[f"lens_{scope.value}_others_above"] = self.others_above_in[scope]
        return record


def ranks(logits, token_ids: list[int], ascending=None):
    """[..., vocab] logits -> [...] the best 1-based rank among `token_ids` (1 + the tokens with a strictly
    larger logit than the best of them). `ascending`: the logits sorted along the vocabulary, when several sets
    are ranked in them (without it, one comparison pass: cheaper than a sort for a single set)."""
    import torch

    if not token_ids:
        return torch.full(logits.shape[:-1], logits.shape[-1], dtype=torch.long, device=logits.device)
    best = logits[..., token_ids].max(-1, keepdim=True).values  # [..., 1]: the best token ranks best
    if ascending is None:
        return (logits > best).sum(-1) + 1
    return logits.shape[-1] - torch.searchsorted(ascending, best.contiguous(), right=True).squeeze(-1) + 1


def share_above(others: Sequence[float], mapped: float) -> float:
    """The share of `others` scoring above `mapped` (ties half), for scores where higher is better."""
    return sum(1.0 if o > mapped else 0.5 if o == mapped else 0.0 for o in others) / len(others)


def logprobs(log_probs, token_ids: list[int]):
    """[..., vocab] log-probabilities -> [...] the largest among `token_ids` (-inf without any)."""
    import torch

    if not token_ids:
        return torch.full(log_probs.shape[:-1], float("-inf"))
    return log_probs[..., token_ids].max(-1).values


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]  # 4 decimals: far below any difference a reader acts on


@dataclass(frozen=True)
class LensLogits:
    """The lens's logits [occurrences, layers, vocab] at some positions, and, once `sorted()`, the same sorted
    along the vocabulary: one sort ranks many word sets."""

    logits: Any
    ascending: Any = None

    @classmethod
    def read(cls, reader, residuals) -> "LensLogits":
        """`residuals` [occurrences, layers, hidden]."""
        return cls(reader.lens_logits(residuals))

    def sorted(self) -> "LensLogits":
        return self if self.ascending is not None else LensLogits(self.logits, self.logits.sort(-1).values)

    def __getitem__(self, occurrences) -> "LensLogits":
        return LensLogits(self.logits[occurrences], None if self.ascending is None else self.ascending[occurrences])

    def rank(self, token_ids: list[int]):
        """[occurrences, layers] the best rank among `token_ids`."""
        return ranks(self.logits, token_ids, self.ascending)


def read_lens(reader, before_residuals, concept_ids: list[int], code_ids: list[int],
              other_concept_ids: Sequence[list[int]] = ()) -> LensReading | None:
    """`before_residuals` [occurrences, layers, hidden] -> the reading, or None with no occurrence.
    `other_concept_ids`: the first tokens of each other concept, ranked the same way."""
    if before_residuals.shape[0] == 0:
        return None
    return read_lens_logits(LensLogits.read(reader, before_residuals), concept_ids, code_ids, other_concept_ids)


def read_lens_logits(lens: LensLogits, concept_ids: list[int], code_ids: list[int],
                     other_concept_ids: Sequence[list[int]] = ()) -> LensReading:
    import torch

    lens = lens.sorted()  # the concept, the code and every other concept are ranked in it

    concept = lens.rank(concept_ids).min(0).values  # [layers]: the best over occurrences
    code = lens.rank(code_ids).min(0).values
    other_ranks = [lens.rank(ids).min(0).values for ids in other_concept_ids if ids]  # each [layers]
    log_probs = torch.log_softmax(lens.logits.float(), dim=-1)
    n_layers = len(concept)
    return LensReading([int(r) for r in concept], [int(r) for r in code],
                       _round(logprobs(log_probs, concept_ids).max(0).values),
                       _round(logprobs(log_probs, code_ids).max(0).values),
                       _others_above(other_ranks, concept, range(n_layers)),
                       {s: v for s in LensScope if (v := _others_above(other_ranks, concept, s.layers(n_layers)))
                        is not None})


def _others_above(other_ranks: list, concept, layers: range) -> float | None:
    """The share of the other concepts whose best rank over `layers` beats the concept's there (ties half)."""
    if not other_ranks or not layers:
        return None
    def best(r) -> float:  # the best rank over `layers`, negated so that higher is better
        return -float(r[layers.start:layers.stop].min())
    return share_above([best(r) for r in other_ranks], best(concept))
