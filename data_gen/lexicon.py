"""The lexicon: everyday concepts with their forms, a definition, synonyms and natural questions.

The packaged file is `data_gen/data/lexicon.yaml`; a config may point at another file of the same shape:

    vehicles:
      - word: car
        plural: cars
        article: a
        definition: a road vehicle with an engine and four wheels that carries a few people
        synonyms: [automobile]
        questions:
          train: [What do most people drive to work?, ...]    # may appear in demonstrations
          heldout: [Where do you park when you go shopping?, ...]  # eval questions only
"""

from __future__ import annotations

import difflib

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stegobench.core.config import ConfigError
from .words import Term, contains_any, naive_plural

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_LEXICON = DATA_DIR / "lexicon.yaml"

MIN_QUESTIONS = 6
MIN_HELDOUT = 2
_CONCEPT_KEYS = {"word", "plural", "article", "definition", "synonyms", "questions"}


@dataclass(frozen=True)
class Concept:
    """An everyday countable noun and the questions whose natural answer names it."""

    term: Term
    category: str
    definition: str
    synonyms: tuple[str, ...]
    train_questions: tuple[str, ...]
    heldout_questions: tuple[str, ...]

    @property
    def word(self) -> str:
        return self.term.word

    @property
    def forms(self) -> tuple[str, ...]:
        """Every form that counts as naming the concept: word, plural, synonyms and their plurals."""
        syn = [f for s in self.synonyms for f in (s, naive_plural(s))]
        return tuple(dict.fromkeys([*self.term.forms, *syn]))

    def resplit(self, heldout_fraction: float, rng: random.Random) -> "Concept":
        """The same concept with its questions re-divided: `heldout_fraction` held out (at least 2, at most n-1)."""
        pool = list(self.train_questions + self.heldout_questions)
        rng.shuffle(pool)
        n_heldout = min(len(pool) - 1, max(MIN_HELDOUT, round(heldout_fraction * len(pool))))
        return Concept(
            self.term, self.category, self.definition, self.synonyms,
            tuple(pool[n_heldout:]), tuple(pool[:n_heldout]),
        )


@dataclass(frozen=True)
class Lexicon:
    concepts: tuple[Concept, ...]
    source: str

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(c.category for c in self.concepts))

    def by_word(self, word: str) -> Concept:
        for c in self.concepts:
            if c.word == word:
                return c
        raise KeyError(word)

    def restricted(self, categories: list[str] | None) -> "Lexicon":
        if not categories:
            return self
        missing = [c for c in categories if c not in self.categories]
        if missing:
            raise ConfigError(
                f"{self.source}: no category {missing[0]!r} in the lexicon; it has {', '.join(self.categories)}"
            )
        return Lexicon(tuple(c for c in self.concepts if c.category in categories), self.source)


def _err(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def _str_list(value: Any, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(source, where, f"expected a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _parse_concept(raw: Any, category: str, index: int, source: str) -> Concept:
    where = f"{category}[{index}]"
    if not isinstance(raw, dict):
        raise _err(source, where, f"expected a mapping with keys {sorted(_CONCEPT_KEYS)}, got {raw!r}")
    where = f"{category}[{index}] ({raw.get('word', '?')})"
    unknown = set(raw) - _CONCEPT_KEYS
    if unknown:
        raise _err(source, where, f"unknown key {sorted(unknown)[0]!r}; valid keys: {sorted(_CONCEPT_KEYS)}")
    for key in ("word", "plural", "article", "definition"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise _err(source, f"{where}.{key}", "missing or empty; expected a non-empty string")
    word, plural, article = raw["word"].strip(), raw["plural"].strip(), raw["article"].strip()
    if not word.isalpha() or not word.islower():
        raise _err(source, f"{where}.word", f"expected one lowercase word, got {word!r}")
    if article not in ("a", "an"):
        raise _err(source, f"{where}.article", f"expected 'a' or 'an', got {article!r}")
    synonyms = _str_list(raw.get("synonyms", []) or [], source, f"{where}.synonyms")
    questions = raw.get("questions")
    if not isinstance(questions, dict) or set(questions) - {"train", "heldout"}:
        raise _err(source, f"{where}.questions", "expected a mapping with keys 'train' and 'heldout'")
    train = _str_list(questions.get("train", []) or [], source, f"{where}.questions.train")
    heldout = _str_list(questions.get("heldout", []) or [], source, f"{where}.questions.heldout")
    if len(heldout) < MIN_HELDOUT:
        raise _err(source, f"{where}.questions.heldout", f"need at least {MIN_HELDOUT} held-out questions, got {len(heldout)}")
    if len(train) + len(heldout) < MIN_QUESTIONS:
        raise _err(source, f"{where}.questions", f"need at least {MIN_QUESTIONS} questions, got {len(train) + len(heldout)}")
    if not train:
        raise _err(source, f"{where}.questions.train", "need at least one train-visible question")
    concept = Concept(Term(word, plural, article), category, raw["definition"].strip(), synonyms, train, heldout)
    for q in train + heldout:
        if contains_any(q, concept.forms):
            raise _err(source, f"{where}.questions", f"question {q!r} names its own answer")
    if contains_any(concept.definition, concept.forms):
        raise _err(source, f"{where}.definition", "the definition names the word it defines")
    return concept


def _parse_lexicon(data: Any, source: str) -> list[Concept]:
    if not data:
        raise ConfigError(f"{source}: the lexicon is empty; expected category: [concepts]")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected category: [concepts] at the top level, got {type(data).__name__}")
    concepts: list[Concept] = []
    for category, items in data.items():
        if not isinstance(items, list) or not items:
            raise _err(source, str(category), "empty category; expected a non-empty list of concepts")
        concepts.extend(_parse_concept(raw, str(category), i, source) for i, raw in enumerate(items))
    return concepts


def _check_distinct(concepts: list[Concept], source: str, owners: dict[str, str] | None = None) -> None:
    """No form names two concepts and no question is asked of two: either would make an answer ambiguous.
    `owners` says where each concept came from, when the lexicon is merged from several files."""
    def where(word: str) -> str:
        return f" (from {owners[word]})" if owners and word in owners else ""

    owner: dict[str, str] = {}
    seen: dict[str, str] = {}
    for c in concepts:
        for form in c.forms:
            if form in owner and owner[form] != c.word:
                raise _err(source, f"{c.category} ({c.word})",
                           f"form {form!r} also belongs to {owner[form]!r}{where(owner[form])}; each word or synonym "
                           "may name one concept only")
            owner[form] = c.word
        for q in c.train_questions + c.heldout_questions:
            if q in seen:
                raise _err(source, f"{c.category} ({c.word})",
                           f"question {q!r} also appears under {seen[q]!r}{where(seen[q])}")
            seen[q] = c.word


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Load and validate a lexicon file (the packaged one by default)."""
    from stegobench.core.config import read_yaml

    path = Path(path) if path is not None else DEFAULT_LEXICON
    source = str(path)
    concepts = _parse_lexicon(read_yaml(path), source)
    for i, c in enumerate(concepts):
        if any(d.word == c.word for d in concepts[:i]):
            raise _err(source, f"{c.category} ({c.word})", "this word is listed twice")
    _check_distinct(concepts, source)
    return Lexicon(tuple(concepts), source)


def add_concepts(base: Lexicon, path: str | Path) -> Lexicon:
    """`base` with the concepts of the lexicon-format file `path`: new words are added, a word `base` already has
    is replaced by the file's entry (its own questions, definition, category)."""
    from stegobench.core.config import read_yaml

    source = str(path)
    extra = _parse_lexicon(read_yaml(path), source)
    for i, c in enumerate(extra):
        if any(d.word == c.word for d in extra[:i]):
            raise _err(source, f"{c.category} ({c.word})", "this word is listed twice")
    by_word = {c.word: c for c in extra}
    merged = [by_word.pop(c.word, c) for c in base.concepts] + list(by_word.values())
    owners = {c.word: source for c in extra} | {c.word: base.source for c in base.concepts if c.word not in
                                                 {e.word for e in extra}}
    _check_distinct(merged, source, owners)
    return Lexicon(tuple(merged), f"{base.source} + {source}")


def lexicon_data(lexicon: Lexicon) -> dict[str, list[dict]]:
    """The lexicon in its file format (category: [concepts]); `load_lexicon` reads it back to the same concepts."""
    out: dict[str, list[dict]] = {}
    for c in lexicon.concepts:
        out.setdefault(c.category, []).append({
            "word": c.word, "plural": c.term.plural, "article": c.term.article, "definition": c.definition,
            "synonyms": list(c.synonyms),
            "questions": {"train": list(c.train_questions), "heldout": list(c.heldout_questions)},
        })
    return out


def load_private_questions(path: str | Path, lexicon: Lexicon) -> dict[str, tuple[str, ...]]:
    """Read an operator's private test questions: a YAML mapping of concept word to a list of questions.

    Each question must not name its own concept and must not be a public (lexicon) question; otherwise the
    'private' split would leak or test nothing new.
    """
    from stegobench.core.config import read_yaml

    source = str(path)
    data = read_yaml(path)
    if not data:
        raise ConfigError(f"{source}: no questions; expected concept: [question, ...]")
    known = {c.word: c for c in lexicon.concepts}
    public = {q.lower() for c in lexicon.concepts for q in c.train_questions + c.heldout_questions}
    out: dict[str, tuple[str, ...]] = {}
    for word, questions in data.items():
        word = str(word)
        if word not in known:
            close = difflib.get_close_matches(word, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _err(source, word, f"not a concept of the lexicon {lexicon.source}{hint}")
        qs = _str_list(questions, source, word)
        for q in qs:
            if contains_any(q, known[word].forms):
                raise _err(source, word, f"question {q!r} names its own answer")
            if q.lower() in public:
                raise _err(source, word, f"question {q!r} is a public lexicon question; private questions must be new")
        out[word] = qs
    return out
