"""Code books: which code word stands for which concept, sampled by seed or written by hand.

Sampled real-word codes are lexicon concepts of another category than the concept they stand for, and never a
concept of the same code book, so their original meaning can be probed by control questions. Nonsense
codes are pronounceable strings that are not English words and not a single token of the target tokenizer.
A written code book (`written_codebook`) is checked against the same rules a sampled one keeps by construction,
each failure naming the file, the entry, the value and what would be right.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stegobench.core.config import ConfigError
from .lexicon import DATA_DIR, MIN_HELDOUT, Concept, Lexicon
from .records import CodebookRow, Kind, Role
from .templates import Templates
from .track import CodebookEntry
from .words import Term, article_for, contains_any, naive_plural

WORDLIST = DATA_DIR / "english_words.txt.gz"


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

    def to_record(self) -> CodebookRow:
        return CodebookRow(
            mapping_id=self.id,
            code=self.code.word,
            code_plural=self.code.plural,
            code_article=self.code.article,
            code_forms=list(self.code_forms),
            code_category=self.code_origin.category if self.code_origin else "",
            concept=self.concept.word,
            concept_forms=list(self.concept.forms),
            concept_category=self.concept.category,
            definition=self.concept.definition,
            kind=self.kind,
            role=self.role,
        )


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


@functools.lru_cache(maxsize=1)
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
    return Codebook(track, seed, mappings, _unmapped_controls(concepts, mappings, n_unmapped, seed, track))


def _unmapped_controls(concepts: list[Concept], mappings: tuple[Mapping, ...], n: int, seed: int,
                       track: str) -> tuple[Concept, ...]:
    """`n` concepts outside the code book, by seed, for false-alarm controls."""
    used = {m.concept.word for m in mappings} | {m.code_origin.word for m in mappings if m.code_origin is not None}
    code_forms = tuple(f for m in mappings for f in m.code_forms)
    # An unmapped control must not be named by a code (a plain answer would count as code use), nor have
    # questions that mention a code (an echo would look like a false alarm).
    pool = [c for c in concepts if c.word not in used and not set(c.forms) & set(code_forms)
            and not any(contains_any(q, code_forms) for q in c.heldout_questions)]
    if len(pool) < n:
        raise ConfigError(
            f"track {track!r}: only {len(pool)} concepts are left for {n} unmapped controls; "
            "lower n_unmapped_controls"
        )
    return tuple(derive_rng(seed, "unmapped").sample(pool, n))


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


# ---------------------------------------------------------------------------------------------------
# A code book written by hand

CODEBOOK_COLUMNS = ("code", "concept", "role", "kind", "plural", "article")


@dataclass(frozen=True)
class WrittenEntry:
    """An entry of a written code book and where it was written, for error messages."""

    source: str  # the file: the track config (codebook:) or codebook_file
    where: str  # 'codebook[2]' or 'line 4'
    entry: CodebookEntry

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.where}.{key}: {message}")


def inline_entries(entries: list[CodebookEntry], source: str) -> list[WrittenEntry]:
    return [WrittenEntry(source, f"codebook[{i}]", e) for i, e in enumerate(entries)]


def read_codebook_file(path: str | Path) -> list[WrittenEntry]:
    """A code book file: CSV with a header row (code,concept,role[,kind,plural,article]) or YAML (a list of
    entries, or `codebook: [...]`). Each entry is checked like the config's own `codebook:` key."""
    from stegobench.core.config import from_dict, read_text_file, read_yaml_any

    path = Path(path)
    source = str(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(read_text_file(path, "codebook_file"), source)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{source}: codebook_file must end in .csv, .yaml or .yml (the name says how to read it)")
    data = read_yaml_any(path)
    if isinstance(data, dict) and set(data) == {"codebook"}:
        data = data["codebook"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: expected a non-empty list of {{code, concept, role}} entries "
                          "(or codebook: [...])")
    out = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: codebook[{i}]: expected a mapping {{code, concept, role}}, got {raw!r}")
        out.append(WrittenEntry(source, f"codebook[{i}]",
                                from_dict(CodebookEntry, raw, source=source, prefix=f"codebook[{i}].")))
    return out


def _read_csv(text: str, source: str) -> list[WrittenEntry]:
    import csv
    import io

    from stegobench.core.config import from_dict

    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))  # a spreadsheet's byte-order mark is no column
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        raise ConfigError(f"{source}: empty; expected a header row {','.join(CODEBOOK_COLUMNS[:3])} and one row per mapping")
    for name in header:
        if name not in CODEBOOK_COLUMNS:
            close = difflib.get_close_matches(name, CODEBOOK_COLUMNS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: line 1: unknown column {name!r}{hint} Columns: {', '.join(CODEBOOK_COLUMNS)}")
    missing = [c for c in CODEBOOK_COLUMNS[:3] if c not in header]
    if missing:
        raise ConfigError(f"{source}: line 1: no column {missing[0]!r}; the header needs code, concept and role")
    out = []
    for row in reader:
        line = reader.line_num
        if None in row:  # more cells than the header has names
            raise ConfigError(f"{source}: line {line}: {len(header) + len(row[None])} cells for {len(header)} columns")
        cells = {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}
        if not cells:
            continue  # a blank line
        where = f"line {line}"
        out.append(WrittenEntry(source, where, from_dict(CodebookEntry, cells, source=source, prefix=f"{where}: ")))
    if not out:
        raise ConfigError(f"{source}: no mappings below the header; add one row per mapping (code,concept,role)")
    return out


def _did_you_mean(word: str, lexicon: Lexicon) -> str:
    for c in lexicon.concepts:
        if word in c.forms and word != c.word:
            return f"; {word!r} is a form of the concept {c.word!r}: write concept: {c.word}"
    close = difflib.get_close_matches(word, [c.word for c in lexicon.concepts], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _inflections(word: str) -> set[str]:
    """Spellings that are the same noun in another number: cat/cats, box/boxes, berry/berries."""
    out = {word, naive_plural(word)}
    if word.endswith("ies"):
        out.add(word[:-3] + "y")
    if word.endswith("es"):
        out.add(word[:-2])
    if word.endswith("s"):
        out.add(word[:-1])
    return out


def _frame_text(text: str) -> str:
    """A template's fixed wording, its placeholders blanked: what every rendered prompt or answer contains."""
    import re

    return re.sub(r"\{[^{}]*\}", " ", text)


def written_codebook(
    entries: list[WrittenEntry],
    lexicon: Lexicon,
    templates: Templates,
    track: str,
    seed: int,
    n_unmapped: int,
    questions_needed: int | None,
    control_pool: list[Concept] | None = None,
) -> Codebook:
    """The code book as written, checked before anything is generated; unmapped controls still come by `seed`,
    from `control_pool` (default: the whole lexicon).

    `questions_needed`: held-out questions each mapped concept must have (the track's eval_questions_per_concept).
    """
    known = {c.word: c for c in lexicon.concepts}
    words = english_words()
    first_code: dict[str, WrittenEntry] = {}
    first_concept: dict[str, WrittenEntry] = {}
    for w in entries:
        e = w.entry
        if e.concept not in known:
            raise w.error("concept", f"unknown concept {e.concept!r}{_did_you_mean(e.concept, lexicon)} Concepts are "
                                     f"the words of the lexicon ({lexicon.source}); add your own with concepts_file")
        if e.code in first_code:
            other = first_code[e.code]
            raise w.error("code", f"{e.code!r} is already the code of {other.where} (concept {other.entry.concept!r}); "
                                  "each code stands for one concept")
        if e.concept in first_concept:
            other = first_concept[e.concept]
            raise w.error("concept", f"{e.concept!r} already has the code {other.entry.code!r} ({other.where}); "
                                     "each concept gets one code")
        first_code[e.code] = w
        first_concept[e.concept] = w
    mappings = []
    for i, w in enumerate(entries):
        e = w.entry
        english = sorted(_inflections(e.code) & words)
        if e.kind == "nonsense" and english:
            raise w.error("kind", f"'nonsense', but the code {e.code!r} is an English word ({english[0]!r} is in the "
                                  f"word list {WORDLIST.name}); use a made-up word, or kind: real_word")
        kind: Kind = e.kind or ("real_word" if english else "nonsense")
        origin = known.get(e.code)  # a real word of the lexicon: its old sense gets original-meaning controls
        plural = e.plural or (origin.term.plural if origin else naive_plural(e.code))
        article = e.article or (origin.term.article if origin else article_for(e.code))
        mappings.append(Mapping(f"m{i:02d}", Term(e.code, plural, article), known[e.concept], kind, e.role, origin))
    for w, m in zip(entries, mappings):
        _check_code(w, m, mappings, entries, templates)
        if questions_needed is not None and len(m.concept.heldout_questions) < questions_needed:
            raise w.error("concept", f"{m.concept.word!r} has {len(m.concept.heldout_questions)} held-out questions, but "
                                     f"eval_questions_per_concept asks for {questions_needed}; give it more held-out "
                                     "questions (concepts_file) or lower eval_questions_per_concept")
        if len(m.concept.heldout_questions) < MIN_HELDOUT:
            raise w.error("concept", f"{m.concept.word!r} has {len(m.concept.heldout_questions)} held-out questions; "
                                     f"the eval needs at least {MIN_HELDOUT} (heldout_fraction too low?)")
    mappings_t = tuple(mappings)
    pool = control_pool if control_pool is not None else list(lexicon.concepts)
    return Codebook(track, seed, mappings_t, _unmapped_controls(pool, mappings_t, n_unmapped, seed, track))


def _check_code(w: WrittenEntry, m: Mapping, mappings: list[Mapping], entries: list[WrittenEntry],
                templates: Templates) -> None:
    """The code must not name a concept of the book, nor occur in any question or frame the eval shows."""
    own = {f.lower() for f in m.code_forms} | _inflections(m.code.word)
    for other_w, other in zip(entries, mappings):
        c = other.concept
        where = "its own concept" if other is m else f"the concept of {other_w.where}"
        if c.word in own or c.term.plural in own:
            how = "equal to" if m.code.word == c.word else "an inflection of"
            raise w.error("code", f"{m.code.word!r} is {how} {c.word!r}, {where}; a code must not name a concept of "
                                  "the code book (the answer would say the concept itself)")
        synonyms = {f for s in c.synonyms for f in _inflections(s)}
        if own & synonyms:
            raise w.error("code", f"{m.code.word!r} is a synonym of {c.word!r}, {where}; a code must not name a "
                                  "concept of the code book (the answer would say the concept itself)")
    # Held-out questions of every concept the eval asks about: the mapped ones and the codes' original meanings.
    asked = [(o_w, o.concept) for o_w, o in zip(entries, mappings)]
    asked += [(o_w, o.code_origin) for o_w, o in zip(entries, mappings) if o.code_origin is not None]
    for o_w, concept in asked:
        for q in concept.heldout_questions:
            if contains_any(q, m.code_forms):
                raise w.error("code", f"{m.code.word!r} occurs in the held-out question {q!r} of {concept.word!r} "
                                      f"({o_w.where}); an echo of the question would pass for code use. Choose "
                                      "another code, or replace that concept's questions with concepts_file")
    for pool, name in ((templates.demonstration, "answer frame (demonstration template)"),
                       (templates.recall, "recall probe")):
        for t in pool:
            if contains_any(_frame_text(t.text), m.code_forms):
                raise w.error("code", f"{m.code.word!r} occurs in the {name} {t.text!r} ({t.id}); every answer or "
                                      "probe in that frame would contain the code. Choose another code, or change the "
                                      "frame with templates_file")
