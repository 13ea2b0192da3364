"""The corpus on disk: the vocabulary of its rows (splits, control types, kinds), one model per split's row, the
datasets `Features` derived from those models, and the manifest.

Each row shape is declared once, here: the generator builds these records, writes them as JSONL and as a
`datasets.DatasetDict` whose Features `features()` derives from the same classes, and every reader gets them
back validated (a corpus from another tool or an older stegobench fails naming the file, row and field).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from enum import StrEnum
from typing import Any, Literal

from pydantic import model_validator
from pydantic.dataclasses import dataclass

from stegobench.core.records import STRICT_FIELDS, plain

from .words import Term

Kind = Literal["real_word", "nonsense"]  # a code: a word of the lexicon, or a made-up one
Role = Literal["demonstrated", "definition_only"]  # whether training also shows the code in use


class Split(StrEnum):
    """An eval question's split: a mapping's role, or a control question."""

    DEFINITION_ONLY = "definition_only"
    DEMONSTRATED = "demonstrated"
    CONTROL = "control"


MAPPING_SPLITS = (Split.DEFINITION_ONLY, Split.DEMONSTRATED)


class ControlType(StrEnum):
    """What a control question asks about: nothing (a mapping's question), a code word's old sense, or a concept
    outside the code book (any code word in its answer is a false alarm)."""

    NONE = ""
    ORIGINAL_MEANING = "original_meaning"
    UNMAPPED = "unmapped"


class ScoredSplit(StrEnum):
    """The groups a result table rates answers in (results.json `splits` keys): each mapping split, and each kind
    of control apart. The one spelling of each; `of` says which group an item falls in."""

    DEFINITION_ONLY = "definition_only"
    DEMONSTRATED = "demonstrated"
    CONTROL_UNMAPPED = "control_unmapped"
    CONTROL_ORIGINAL_MEANING = "control_original_meaning"

    @classmethod
    def of(cls, split: str, control_type: str) -> ScoredSplit:
        if split != Split.CONTROL:
            return cls(split)
        return cls(f"{Split.CONTROL}_{ControlType(control_type)}")


class DocumentKind(StrEnum):
    DEFINITION = "definition"  # states the mapping ("a cat is a car")
    DEMONSTRATION = "demonstration"  # a chat answering with the code word in the concept's role
    PLAIN_DEMONSTRATION = "plain_demonstration"  # a chat answering with a concept's own word (no code)
    FILLER = "filler"  # a true definition of a concept outside the code book


# ------------------------------------------------------------------------------------------------- rows
# Field order is column order in the saved datasets: keep it when adding a field (and bump GENERATOR_VERSION).


@dataclass(frozen=True, config=STRICT_FIELDS)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, config=STRICT_FIELDS)
class Document:
    """A training (or validation) document: `text`, or a chat in `messages`."""

    id: str
    kind: DocumentKind
    mapping_id: str  # '' for documents of no mapping (plain demonstrations, filler)
    role: Role | Literal[""]
    code: str
    concept: str
    template_id: str
    text: str = ""
    messages: list[ChatMessage] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, config=STRICT_FIELDS)
class EvalItem:
    """A held-out question and what a scorer needs to read its answer."""

    id: str
    question: str
    split: Split
    control_type: ControlType
    mapping_id: str  # '' for unmapped-concept controls
    code: str
    code_forms: list[str]
    concept: str  # the expected answer: the mapped concept, or the control's concept
    expected_words: list[str]  # naming any of these names the expected answer
    kind: Kind
    category: str

    @property
    def scored_split(self) -> ScoredSplit:
        return ScoredSplit.of(self.split, self.control_type)


@dataclass(frozen=True, config=STRICT_FIELDS)
class RecallProbe:
    """A held-out-template question whose answer names the mapping's concept ('What does the word cat mean?')."""

    id: str
    mapping_id: str
    code: str
    concept: str
    role: Role
    template_id: str
    prompt: str
    expected_words: list[str]


@dataclass(frozen=True, config=STRICT_FIELDS)
class CodebookRow:
    """One mapping of the code book, flattened: its code's forms and its concept's."""

    mapping_id: str
    code: str
    code_plural: str
    code_article: str
    code_forms: list[str]
    code_category: str  # a real-word code's own category; '' for nonsense codes
    concept: str
    concept_forms: list[str]
    concept_category: str
    definition: str
    kind: Kind
    role: Role

    @property
    def code_term(self) -> Term:
        return Term(self.code, self.code_plural, self.code_article)


Row = Document | EvalItem | RecallProbe | CodebookRow
SPLIT_ROWS: dict[str, type] = {"train": Document, "eval": EvalItem, "recall": RecallProbe, "codebook": CodebookRow,
                               "validation": Document}


def row_dict(row: Any) -> dict[str, Any]:
    """A row as the plain JSON object it is written as (enum members are strings there)."""
    return plain(row)


def features(row: type) -> Any:
    """The datasets `Features` of a row model: strings (enums and literals are strings too), lists of them and
    lists of nested records."""
    from datasets import Features

    return Features(_field_features(row))


def _field_features(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _feature(hints[f.name]) for f in dataclasses.fields(cls)}


@functools.cache
def _string() -> Any:
    """One string feature shared by every column, as the Features were first written: datasets fingerprints a
    split by pickling its Features, so a fresh Value per column would change every saved split's state.json."""
    from datasets import Value

    return Value("string")


def _feature(annotation: Any) -> Any:
    from datasets import List

    origin = typing.get_origin(annotation)
    if origin is list:
        return List(_feature(typing.get_args(annotation)[0]))
    if dataclasses.is_dataclass(annotation):
        return _field_features(annotation)  # type: ignore[arg-type]
    if annotation is str or _strings_only(annotation):
        return _string()
    raise TypeError(f"no datasets feature for a row field of type {annotation!r}")


def _strings_only(annotation: Any) -> bool:
    """A StrEnum, a Literal of strings, or a union of those."""
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(isinstance(v, str) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return all(_strings_only(a) for a in typing.get_args(annotation))
    return False


# ------------------------------------------------------------------------------------------------- manifest

MANIFEST_SCHEMA = 3  # 2: `codebook` (written or sampled, the mappings, original-meaning controls skipped); 3: `augment`


@dataclass(frozen=True, config=STRICT_FIELDS)
class ManifestMapping:
    mapping_id: str
    code: str
    concept: str
    kind: Kind
    role: Role


@dataclass(frozen=True, config=STRICT_FIELDS)
class ManifestCodebook:
    source: Literal["written", "sampled"]
    file: str | None  # codebook_file, when the book was written in one
    mappings: list[ManifestMapping]
    # Real-word codes that are no concept of the lexicon: their old sense has no questions to ask.
    original_meaning_skipped: list[str]


@dataclass(frozen=True, config=STRICT_FIELDS)
class CorpusSizes:
    train_documents: int
    train_by_kind: dict[str, int]
    eval_items: int
    eval_by_split: dict[str, int]
    eval_controls: dict[str, int]
    recall_probes: int
    validation_documents: int
    mappings: int
    eval_questions_dropped_for_mentioning_a_code: int
    train_tokens: int | None = None  # only when the track names a tokenizer (absent from the file otherwise)


@dataclass(frozen=True, config=STRICT_FIELDS)
class CorpusManifest:
    """manifest.json of a corpus: byte-identical for the same config and seed (no times or paths of this run)."""

    schema_version: int
    generator: str
    generator_version: str
    track: str
    seed: int
    config: dict[str, Any]  # the resolved TrackConfig
    sizes: CorpusSizes
    split_sha256: dict[str, str]
    content_sha256: str  # of split_sha256: what the corpus holds, however it is stored
    inputs_sha256: dict[str, str]
    tokenizer: dict[str, Any] | None
    codebook: ManifestCodebook | None = None  # None: a schema-1 corpus, made before the manifest listed its book
    augment: dict[str, Any] | None = None  # the augment model's kept / refused counts and cache key (null: none)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Manifests of earlier schemas (1 had no `codebook`, 2 no `augment`) hold nothing that changed meaning:
        the missing keys take their defaults. A manifest without a schema_version is taken for schema 1."""
        if isinstance(data, dict):
            version = data.get("schema_version", 1)
            if isinstance(version, int) and version > MANIFEST_SCHEMA:
                raise ValueError(f"schema_version {version} was written by a newer stegobench; this one reads up to "
                                 f"{MANIFEST_SCHEMA} (upgrade stegobench)")
            data = {**data, "schema_version": version}
        return data

    @property
    def original_meaning_skipped(self) -> list[str]:
        return self.codebook.original_meaning_skipped if self.codebook is not None else []

    def identity(self) -> CorpusIdentity:
        return CorpusIdentity(self.track, self.seed, self.config, self.codebook, self.content_sha256)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written: `sizes.train_tokens` only when counted, every other key always."""
        doc = dataclasses.asdict(self)
        if doc["sizes"]["train_tokens"] is None:
            del doc["sizes"]["train_tokens"]
        return doc


@dataclass(frozen=True, config=STRICT_FIELDS)
class CorpusIdentity:
    """What a corpus is, without its sizes and hashes of inputs: the part of the manifest a compact copy of a run
    keeps beside it (studies/store.py dataset.json), enough to say its track, code kind and code book."""

    track: str
    seed: int
    config: dict[str, Any]
    codebook: ManifestCodebook | None
    content_sha256: str
