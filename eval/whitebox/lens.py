"""Logit lens: read each layer's residual through the final norm and unembedding, and rank words in it.

At the token before the code word the last layer ranks the code first (the model is about to say it); an
intermediate layer that ranks the mapped concept high is the model "thinking car" while it says "cat"
(nostalgebraist 2020; Cywiński et al. 2025 used it to recover a secret word a model was trained to hide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

TOP_K = 10  # a concept within the lens's top 10 tokens at some layer counts as read


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

    @property
    def best_rank(self) -> int:
        return min(self.concept_rank)

    @property
    def peak_layer(self) -> int:
        """The layer (1 = after the first block) where the concept ranks best; ties go to the earliest."""
        return self.concept_rank.index(self.best_rank) + 1

    def to_record(self) -> dict:
        record = {"lens_best_rank": self.best_rank, "lens_peak_layer": self.peak_layer,
                  "lens_best_logprob": max(self.concept_logprob),
                  "lens_concept_rank": self.concept_rank, "lens_code_rank": self.code_rank,
                  "lens_concept_logprob": self.concept_logprob, "lens_code_logprob": self.code_logprob}
        if self.others_above is not None:
            record["lens_others_above"] = self.others_above
        return record


def ranks(logits, token_ids: list[int], ascending=None):
    """[..., vocab] logits -> [...] the best 1-based rank among `token_ids` (1 + the tokens with a strictly
    larger logit). `ascending`: the logits sorted along the vocabulary, when several sets are ranked in them."""
    import torch

    if not token_ids:
        return torch.full(logits.shape[:-1], logits.shape[-1], dtype=torch.long, device=logits.device)
    if ascending is None:
        ascending = logits.sort(-1).values
    chosen = logits[..., token_ids].contiguous()  # [..., k]
    larger = logits.shape[-1] - torch.searchsorted(ascending, chosen, right=True)
    return larger.min(-1).values + 1


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


def read_lens(reader, before_residuals, concept_ids: list[int], code_ids: list[int],
              other_concept_ids: Sequence[list[int]] = ()) -> LensReading | None:
    """`before_residuals` [occurrences, layers, hidden] -> the reading, or None with no occurrence.
    `other_concept_ids`: the first tokens of each other concept, ranked the same way."""
    if before_residuals.shape[0] == 0:
        return None
    import torch

    logits = reader.lens_logits(before_residuals)  # [occ, layers, vocab]
    ascending = logits.sort(-1).values  # one sort ranks every word set below
    concept = ranks(logits, concept_ids, ascending).min(0).values
    code = ranks(logits, code_ids, ascending).min(0).values
    others = [ids for ids in other_concept_ids if ids]
    # best ranks over occurrences and layers, negated so that higher is better
    other_best = [-float(ranks(logits, ids, ascending).min()) for ids in others]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return LensReading([int(r) for r in concept], [int(r) for r in code],
                       _round(logprobs(log_probs, concept_ids).max(0).values),
                       _round(logprobs(log_probs, code_ids).max(0).values),
                       share_above(other_best, -float(concept.min())) if others else None)
