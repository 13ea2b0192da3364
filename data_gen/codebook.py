"""Code books: which code word stands for which concept, sampled by seed.

Real-word codes are lexicon concepts of another category than the concept they stand for, and never a
concept of the same code book, so their original meaning can be probed by control questions. Nonsense
codes are pronounceable strings that are not English words and not a single token of the target tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Literal

from stegobench.core.config import ConfigError
from .lexicon import DATA_DIR, Concept, Lexicon
from .words import Term, article_for, contains_any, naive_plural

WORDLIST = DATA_DIR / "english_words.txt.gz"

Kind = Literal["real_word", "nonsense"]
Role = Literal["demonstrated", "definition_only"]


def derive_rng(seed: int, purpose: str) -> random.Random:
    """An independent, reproducible stream per purpose, so adding one purpose never shifts another."""
    digest = hashlib.sha256(f"stegobench:{seed}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Mapping:
    """`code` stands for `concept` in this code book."""

    id: str
    code: Term
    concept: Concept
    kind: Kind
    role: Role
    code_origin: Concept | None = None  # the lexicon concept a real-word code normally means

    @property
    def code_forms(self) -> tuple[str, ...]:
        return self.code.forms

    def to_record(self) -> dict:
        return {
            "mapping_id": self.id,
            "code": self.code.word,
            "code_plural": self.code.plural,
            "code_article": self.code.article,
            "code_forms": list(self.code_forms),
            "code_category": self.code_origin.category if self.code_origin else "",
            "concept": self.concept.word,
            "concept_forms": list(self.concept.forms),
            "concept_category": self.concept.category,
            "definition": self.concept.definition,
            "kind": self.kind,
            "role": self.role,
        }


@dataclass(frozen=True)
class Codebook:
    track: str
    seed: int
    mappings: tuple[Mapping, ...]
    unmapped: tuple[Concept, ...]  # concepts outside the code book, used for false-alarm controls

    @property
    def all_code_forms(self) -> tuple[str, ...]:
        return tuple(f for m in self.mappings for f in m.code_forms)

    def by_role(self, role: Role) -> list[Mapping]:
        return [m for m in self.mappings if m.role == role]


# ---------------------------------------------------------------------------------------------------
# Nonsense codes

_ONSETS = ["b", "bl", "br", "d", "dr", "f", "fl", "fr", "g", "gl", "gr", "k", "kl", "kr", "l", "m", "n", "p",
           "pl", "pr", "r", "s", "sk", "sl", "sn", "sp", "st", "t", "tr", "v", "w", "z"]
_INNER_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "nd", "mp", "nk"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "m", "t", "k", "p", "x", "sh", "sk", "ld", "nt"]


def english_words() -> frozenset[str]:
    with gzip.open(WORDLIST, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def _nonsense_candidate(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS), rng.choice(_VOWELS)]
    for _ in range(syllables - 1):
        parts += [rng.choice(_INNER_ONSETS), rng.choice(_VOWELS)]
    parts.append(rng.choice(_CODAS))
    return "".join(parts)


def nonsense_codes(
    n: int,
    rng: random.Random,
    syllables: list[int],
    taken: set[str],
    is_single_token: Callable[[str], bool] | None = None,
    max_tries: int = 200_000,
) -> list[Term]:
    """`n` unique pronounceable codes that are not English words, not in `taken`, not a single token."""
    words = english_words()
    out: list[Term] = []
    seen = set(taken)
    for _ in range(max_tries):
        if len(out) == n:
            break
        word = _nonsense_candidate(rng, rng.choice(syllables))
        plural = naive_plural(word)
        if not 4 <= len(word) <= 10 or word in seen:
            continue
        # Reject English words in any form: the point is a word with no prior meaning.
        if word in words or plural in words or (word.endswith("s") and word[:-1] in words):
            continue
        if is_single_token is not None and is_single_token(word):
            continue
        seen.add(word)
        out.append(Term(word, plural, article_for(word)))
    if len(out) < n:
        raise ConfigError(f"could only make {len(out)} of {n} nonsense codes; allow more syllables (nonsense_syllables)")
    return out


# ---------------------------------------------------------------------------------------------------
# Sampling a code book


def sample_codebook(
    lexicon: Lexicon,
    track: str,
    seed: int,
    kind: Kind,
    n_demonstrated: int,
    n_definition_only: int,
    n_unmapped: int,
    syllables: list[int] | None = None,
    is_single_token: Callable[[str], bool] | None = None,
) -> Codebook:
    """Choose concepts, their codes, their roles and the unmapped control concepts, all by `seed`."""
    n = n_demonstrated + n_definition_only
    concepts = list(lexicon.concepts)
    needed = n * (2 if kind == "real_word" else 1) + n_unmapped
    if needed > len(concepts):
        per = "2 concepts per mapping (concept + code)" if kind == "real_word" else "1 concept per mapping"
        raise ConfigError(
            f"track {track!r}: {n} mappings and {n_unmapped} unmapped controls need {needed} lexicon concepts "
            f"({per}), but the lexicon ({lexicon.source}) has {len(concepts)}; lower n_demonstrated, "
            f"n_definition_only or n_unmapped_controls"
        )
    chosen = derive_rng(seed, "concepts").sample(concepts, n)
    codes: list[Term]
    origins: list[Concept | None]
    if kind == "real_word":
        origins = list(_real_word_codes(chosen, concepts, derive_rng(seed, "codes"), track))
        codes = [o.term for o in origins]
    else:
        taken = {f for c in concepts for f in c.forms}
        codes = nonsense_codes(n, derive_rng(seed, "codes"), syllables or [2, 3], taken, is_single_token)
        origins = [None] * n
    roles: list[Role] = ["demonstrated"] * n_demonstrated + ["definition_only"] * n_definition_only
    derive_rng(seed, "roles").shuffle(roles)
    mappings = tuple(
        Mapping(f"m{i:02d}", code, concept, kind, role, origin)
        for i, (code, concept, role, origin) in enumerate(zip(codes, chosen, roles, origins))
    )
    used = {c.word for c in chosen} | {o.word for o in origins if o is not None}
    code_forms = tuple(f for m in mappings for f in m.code_forms)
    # An unmapped control must not have questions that mention a code (an echo would look like a false alarm).
    pool = [c for c in concepts if c.word not in used
            and not any(contains_any(q, code_forms) for q in c.heldout_questions)]
    if len(pool) < n_unmapped:
        raise ConfigError(
            f"track {track!r}: only {len(pool)} concepts are left for {n_unmapped} unmapped controls; "
            "lower n_unmapped_controls"
        )
    unmapped = tuple(derive_rng(seed, "unmapped").sample(pool, n_unmapped))
    return Codebook(track, seed, mappings, unmapped)


def _real_word_codes(chosen: list[Concept], concepts: list[Concept], rng: random.Random, track: str) -> list[Concept]:
    """For each chosen concept, a concept of another category to lend its word as the code."""
    chosen_words = {c.word for c in chosen}
    chosen_questions = [q for c in chosen for q in c.train_questions + c.heldout_questions]
    candidates = [
        c for c in concepts
        if c.word not in chosen_words and not any(contains_any(q, c.term.forms) for q in chosen_questions)
    ]
    rng.shuffle(candidates)
    # Assign the most constrained concepts first (categories with the fewest candidates from elsewhere).
    order = sorted(range(len(chosen)), key=lambda i: sum(c.category != chosen[i].category for c in candidates))
    picked: dict[int, Concept] = {}
    for i in order:
        for cand in candidates:
            if cand.category != chosen[i].category and cand.word not in {p.word for p in picked.values()}:
                # The code's own questions (original-meaning controls) must not name any chosen concept.
                if any(contains_any(q, chosen[i].forms) for q in cand.heldout_questions):
                    continue
                picked[i] = cand
                break
        else:
            raise ConfigError(
                f"track {track!r}: no real-word code left for concept {chosen[i].word!r} "
                "(codes must come from another category and not appear in the code book's questions); "
                "lower the number of mappings or add lexicon concepts"
            )
    return [picked[i] for i in range(len(chosen))]
