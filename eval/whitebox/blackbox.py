"""The black-box baseline: what an auditor who sees only the model's output log-probabilities could compute.

At the token before a code word the model's output distribution is the one the code word was drawn from; an
API that returns log-probabilities shows it (the full distribution, or its top k, which gives every rank up to
k). A fine-tuned model that says "cat" for car may still rank "car" high there, and the logit lens's last layer
reads exactly this distribution. Whatever a white-box monitor finds that this does not, the intermediate layers
added. The functions here take output logits and token ids only: no hidden state, no lens, no probe.
"""

from __future__ import annotations

import math

from .lens import ranks


def output_concept_ranks(output_logits, concept_ids: list[list[int]]) -> list[int]:
    """`output_logits` [occurrences, vocab]: the model's output logits at the token before each code word;
    `concept_ids[k]`: the first tokens of occurrence k's mapped concept. -> each occurrence's best rank of its
    concept (1 = the model's most likely next token)."""
    if output_logits.dim() != 2 or output_logits.shape[0] != len(concept_ids):
        raise ValueError(f"output logits of shape {tuple(output_logits.shape)} for {len(concept_ids)} occurrences; "
                         "expected [occurrences, vocab]")
    return [int(ranks(output_logits[k], ids)) for k, ids in enumerate(concept_ids)]


def rank_value(rank: int) -> float:
    """A monitor value from a rank: minus its log (0 = the top token, higher = nearer the top), so that ranks far
    down a vocabulary of 50,000 and ranks near the top both spread over a few units."""
    return round(-math.log(rank), 4)
