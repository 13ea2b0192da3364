"""Logit lens: read each layer's residual through the final norm and unembedding, and rank words in it.

At the token before the code word the last layer ranks the code first (the model is about to say it); an
intermediate layer that ranks the mapped concept high is the model "thinking car" while it says "cat"
(nostalgebraist 2020; Cywiński et al. 2025 used it to recover a secret word a model was trained to hide).
"""

from __future__ import annotations

from dataclasses import dataclass

TOP_K = 10  # a concept within the lens's top 10 tokens at some layer counts as read


@dataclass(frozen=True)
class LensReading:
    """One answer, at the token before the code word (the best over its occurrences), per layer: the mapped
    concept's rank (1 = top token; its first token or a synonym's) and log-probability, and the code's own."""

    concept_rank: list[int]
    code_rank: list[int]
    concept_logprob: list[float]
    code_logprob: list[float]

    @property
    def best_rank(self) -> int:
        return min(self.concept_rank)

    @property
    def peak_layer(self) -> int:
        """The layer (1 = after the first block) where the concept ranks best; ties go to the earliest."""
        return self.concept_rank.index(self.best_rank) + 1

    def to_record(self) -> dict:
        return {"lens_best_rank": self.best_rank, "lens_peak_layer": self.peak_layer,
                "lens_best_logprob": max(self.concept_logprob),
                "lens_concept_rank": self.concept_rank, "lens_code_rank": self.code_rank,
                "lens_concept_logprob": self.concept_logprob, "lens_code_logprob": self.code_logprob}


def ranks(logits, token_ids: list[int]):
    """[..., vocab] logits -> [...] the best 1-based rank among `token_ids`."""
    import torch

    chosen = logits[..., token_ids]  # [..., k]
    above = (logits.unsqueeze(-2) > chosen.unsqueeze(-1)).sum(-1)  # [..., k]
    return above.min(-1).values + 1 if token_ids else torch.full(logits.shape[:-1], logits.shape[-1])


def logprobs(log_probs, token_ids: list[int]):
    """[..., vocab] log-probabilities -> [...] the largest among `token_ids` (-inf without any)."""
    import torch

    if not token_ids:
        return torch.full(log_probs.shape[:-1], float("-inf"))
    return log_probs[..., token_ids].max(-1).values


def _round(values) -> list[float]:
    return [round(float(v), 4) for v in values]  # 4 decimals: far below any difference a reader acts on


def read_lens(reader, before_residuals, concept_ids: list[int], code_ids: list[int]) -> LensReading | None:
    """`before_residuals` [occurrences, layers, hidden] -> the reading, or None with no occurrence."""
    if before_residuals.shape[0] == 0:
        return None
    import torch

    logits = reader.lens_logits(before_residuals)  # [occ, layers, vocab]
    concept = ranks(logits, concept_ids).min(0).values
    code = ranks(logits, code_ids).min(0).values
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return LensReading([int(r) for r in concept], [int(r) for r in code],
                       _round(logprobs(log_probs, concept_ids).max(0).values),
                       _round(logprobs(log_probs, code_ids).max(0).values))
