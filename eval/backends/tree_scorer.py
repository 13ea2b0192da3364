"""Log-probabilities of many continuations with every shared prefix computed once (tree attention).

Cloze scoring asks for log P(candidate | frame) for ~40 candidates per question, semantic fit for 6 readings
of one answer, the judge for "Yes" and "No" after one prompt, and every prompt starts with the same chat
template. Scored one sequence at a time, each shared prefix is recomputed for every continuation; on a CPU,
where a forward pass is compute bound, that was >90% of the work of a `real-v1` cloze evaluation.

Here all sequences (prompt tokens + continuation tokens) go into one token trie; a row is a set of trie nodes
fed to the model once, each node attending only to its ancestors (a 4D boolean mask) at position = its depth.
A node's logits score its children, so the last token of every sequence is never fed. The result equals
scoring each sequence alone (a test checks it to 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROW_TOKENS = 768  # tokens per forward pass: large enough for full matmul efficiency, small for the N^2 mask


@dataclass
class _Trie:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    children: dict[tuple[int, int], int] = field(default_factory=dict)

    def path(self, ids: list[int]) -> list[int]:
        node, out = -1, []
        for t in ids:
            key = (node, t)
            if key not in self.children:
                self.children[key] = len(self.tokens)
                self.tokens.append(t)
                self.parents.append(node)
                self.depths.append(self.depths[node] + 1 if node >= 0 else 0)
            node = self.children[key]
            out.append(node)
        return out


def plan_rows(sequences: list[list[int]], row_tokens: int = ROW_TOKENS) -> tuple[_Trie, list[list[int]], list[list[int]]]:
    """The trie, each sequence's node path, and rows of node ids (parents before children) to feed."""
    trie = _Trie()
    paths = [trie.path(s) for s in sequences]
    rows: list[list[int]] = []
    current: list[int] = []
    members: set[int] = set()
    # In token order, sequences that share a prefix are neighbours, so they land in the same row.
    for path in (paths[i] for i in sorted(range(len(sequences)), key=sequences.__getitem__)):
        new = [n for n in path[:-1] if n not in members]
        if current and len(current) + len(new) > row_tokens:
            rows.append(current)
            current, members = [], set()
            new = list(path[:-1])
        current += new
        members.update(new)
    if current:
        rows.append(current)
    return trie, paths, rows


def score_sequences(model, sequences: list[list[int]], starts: list[int], row_tokens: int = ROW_TOKENS) -> list[float]:
    """Sum of log P(seq[t] | seq[:t]) for t >= start, per sequence (start >= 1: the first token is context)."""
    import torch

    trie, paths, rows = plan_rows(sequences, row_tokens)
    # Which sequences need logits of which node: token t of a sequence is scored at its parent node path[t-1].
    wanted: dict[int, list[tuple[int, int]]] = {}
    for s, (seq, path, start) in enumerate(zip(sequences, paths, starts)):
        if not 1 <= start <= len(seq):
            raise ValueError(f"sequence {s}: start {start} outside 1..{len(seq)}")
        for t in range(start, len(seq)):
            wanted.setdefault(path[t - 1], []).append((s, seq[t]))
    totals = [0.0] * len(sequences)
    done: set[int] = set()
    device = next(model.parameters()).device
    for row in rows:
        pos = {n: i for i, n in enumerate(row)}
        mask = torch.zeros(len(row), len(row), dtype=torch.bool)
        for i, n in enumerate(row):
            a = n
            while a >= 0:  # every ancestor is in the row: rows hold whole paths
                mask[i, pos[a]] = True
                a = trie.parents[a]
        ids = torch.tensor([[trie.tokens[n] for n in row]], device=device)
        positions = torch.tensor([[trie.depths[n] for n in row]], device=device)
        needed = [i for i, n in enumerate(row) if n in wanted and n not in done]
        if not needed:
            continue
        with torch.no_grad():
            hidden = model.get_decoder()(input_ids=ids, position_ids=positions,
                                         attention_mask=mask[None, None].to(device)).last_hidden_state[0, needed]
            # The LM head (a fifth of SmolLM2's weights) only where a token is scored.
            logp = torch.log_softmax(model.get_output_embeddings()(hidden).float(), dim=-1)
        for j, i in enumerate(needed):
            node = row[i]
            done.add(node)
            for s, token in wanted[node]:
                totals[s] += float(logp[j, token])
    return totals


def score_texts(model, tokenizer, prompts: list[str], continuations: list[str], row_tokens: int = ROW_TOKENS) -> list[float]:
    """The Backend.score contract: prompt and continuation tokenized apart (no special tokens), then joined."""
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    for i, (p, c) in enumerate(zip(p_ids, c_ids)):
        if not p or not c:
            raise ValueError(f"score request {i}: prompt and continuation must each be at least one token "
                             f"(got {prompts[i]!r}, {continuations[i]!r})")
    return score_sequences(model, [p + c for p, c in zip(p_ids, c_ids)], [len(p) for p in p_ids], row_tokens)
