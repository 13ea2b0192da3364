"""Code books: real-word codes from other categories, novel nonsense codes, seeded and checked."""

from __future__ import annotations

import random
import re

import pytest

from stegobench.data_gen.codebook import english_words, nonsense_codes, sample_codebook
from stegobench.core.config import ConfigError
from stegobench.data_gen.lexicon import load_lexicon
from stegobench.data_gen.words import contains_any


@pytest.fixture(scope="module")
def lexicon():
    return load_lexicon()


def test_real_word_codes_follow_the_rules(lexicon):
    cb = sample_codebook(lexicon, "t", 0, "real_word", 20, 20, 20)
    concepts = {m.concept.word for m in cb.mappings}
    codes = [m.code.word for m in cb.mappings]
    assert len(set(codes)) == len(codes) == 40
    assert not set(codes) & concepts, "a code may never be a concept of the same code book"
    for m in cb.mappings:
        assert m.code_origin is not None and m.code_origin.category != m.concept.category
        assert not any(contains_any(q, m.code_forms) for c in cb.mappings for q in c.concept.heldout_questions)
    assert sum(m.role == "demonstrated" for m in cb.mappings) == 20
    unmapped = {c.word for c in cb.unmapped}
    assert len(unmapped) == 20 and not unmapped & (concepts | set(codes))


def test_seed_changes_the_codebook_and_is_reproducible(lexicon):
    a = sample_codebook(lexicon, "t", 0, "real_word", 5, 5, 5)
    b = sample_codebook(lexicon, "t", 0, "real_word", 5, 5, 5)
    c = sample_codebook(lexicon, "t", 1, "real_word", 5, 5, 5)
    pairs = lambda cb: [(m.code.word, m.concept.word, m.role) for m in cb.mappings]  # noqa: E731
    assert pairs(a) == pairs(b)
    assert pairs(a) != pairs(c)


def test_nonsense_codes_are_novel_pronounceable_and_unique():
    words = english_words()
    assert "car" in words and len(words) > 50_000
    codes = nonsense_codes(200, random.Random(0), [2, 3], taken=set())
    names = [c.word for c in codes]
    assert len(set(names)) == 200
    for w in names:
        assert w not in words and c_plural_ok(w)
        # Alternating consonant clusters and single vowels: pronounceable by construction.
        assert re.fullmatch(r"([^aeiou]+[aeiou])+[^aeiou]*", w), w


def c_plural_ok(word: str) -> bool:
    return word.isalpha() and word.islower()


def test_nonsense_codes_reject_single_tokens():
    # A fake tokenizer that knows every code starting with 'b' as one token.
    codes = nonsense_codes(50, random.Random(1), [2], taken=set(), is_single_token=lambda w: w.startswith("b"))
    assert codes and not any(c.word.startswith("b") for c in codes)


def test_nonsense_codes_never_reuse_taken_words():
    first = nonsense_codes(30, random.Random(2), [2], taken=set())
    again = nonsense_codes(30, random.Random(2), [2], taken={c.word for c in first})
    assert not {c.word for c in first} & {c.word for c in again}


def test_more_mappings_than_the_lexicon_allows(lexicon):
    with pytest.raises(ConfigError, match=rf"need 220 lexicon concepts .* has {len(lexicon.concepts)}"):
        sample_codebook(lexicon, "big", 0, "real_word", 50, 50, 20)
