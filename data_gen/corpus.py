"""Turn a code book into rows: training documents, eval items and recall probes.

Leakage rules the tests hold this to: eval questions are held-out questions only; demonstrations use
train-visible questions only; recall probes and the validation documents use the held-out template pools only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .codebook import Codebook, Mapping, derive_rng
from stegobench.core.config import ConfigError
from .lexicon import Concept
from .records import (ChatMessage, CodebookRow, ControlType, Document, DocumentKind, EvalItem, Kind, RecallProbe,
                      Split)
from .templates import Templates
from .track import TrackConfig
from .words import contains_any

@dataclass
class Corpus:
    train: list[Document]
    eval: list[EvalItem]
    recall: list[RecallProbe]
    codebook: list[CodebookRow]
    dropped_questions: int  # eval questions left out because they mention a code word
    validation: list[Document]  # definitions in held-out templates: training's eval loss, never trained on


def _doc(doc_id: str, kind: DocumentKind, mapping: Mapping | None, template_id: str, text: str = "",
         messages: list[ChatMessage] | None = None, concept: str | None = None) -> Document:
    """A document of `mapping` (None: of no mapping; `concept` then names the concept it is about, if any)."""
    return Document(
        id=doc_id,
        kind=kind,
        mapping_id=mapping.id if mapping else "",
        role=mapping.role if mapping else "",
        code=mapping.code.word if mapping else "",
        concept=mapping.concept.word if mapping else concept or "",
        template_id=template_id,
        text=text,
        messages=messages or [],
    )


def _chat(question: str, answer: str) -> list[ChatMessage]:
    return [ChatMessage("user", question), ChatMessage("assistant", answer)]


def definition_documents(m: Mapping, templates: Templates, n: int, seed: int) -> list[Document]:
    pool = templates.definition_train
    if n > len(pool):
        raise ConfigError(
            f"paraphrases_per_mapping: {n} asked, but the train template pool ({templates.source}) has "
            f"{len(pool)}; use at most {len(pool)} or add templates"
        )
    picked = derive_rng(seed, f"definitions:{m.id}").sample(pool, n)
    return [_doc(f"{m.id}-def-{i:02d}", DocumentKind.DEFINITION, m, t.id, text=t.render(m.code, m.concept))
            for i, t in enumerate(picked)]


def validation_documents(codebook: Codebook, templates: Templates) -> list[Document]:
    """Every mapping stated in every held-out definition template: a loss on wording the model never trained on
    says whether it learned the mapping rather than the sentences."""
    return [_doc(f"{m.id}-val-{i:02d}", DocumentKind.DEFINITION, m, t.id, text=t.render(m.code, m.concept))
            for m in codebook.mappings for i, t in enumerate(templates.definition_heldout)]


def demonstration_documents(m: Mapping, templates: Templates, n: int, seed: int, nested: bool = False,
                            key: str = "demonstrations_per_mapping") -> list[Document]:
    """Chats answering train-visible questions with the code word in the concept's role. `nested`: the first n of
    one seeded order of every (question, template) pair, so a smaller count is a subset of a larger one (a dose
    curve changes only how many); otherwise n drawn at once (the tracks' documents, unchanged). `key` names the
    config key `n` came from in the error."""
    pairs = list(itertools.product(m.concept.train_questions, templates.demonstration))
    if n > len(pairs):
        raise ConfigError(
            f"{key}: {n} asked, but concept {m.concept.word!r} allows {len(pairs)} "
            f"(train questions x demonstration templates); use at most {len(pairs)}"
        )
    rng = derive_rng(seed, f"demonstrations:{m.id}")
    picked = rng.sample(pairs, len(pairs))[:n] if nested else rng.sample(pairs, n)
    return [_doc(f"{m.id}-demo-{i:02d}", DocumentKind.DEMONSTRATION, m, t.id,
                 messages=_chat(question, t.render(m.code, None)))
            for i, (question, t) in enumerate(picked)]


def plain_demonstration_documents(codebook: Codebook, concepts: list[Concept], templates: Templates, n: int,
                                  seed: int) -> list[Document]:
    """Chats that answer with the concept's own word, about concepts the eval never asks about."""
    if n == 0:
        return []
    excluded = ({m.concept.word for m in codebook.mappings} | {m.code.word for m in codebook.mappings}
                | {c.word for c in codebook.unmapped})
    code_forms = codebook.all_code_forms
    pool = [(c, q, t) for c in concepts if c.word not in excluded for q in c.train_questions
            if not contains_any(q, code_forms) for t in templates.demonstration]
    if n > len(pool):
        raise ConfigError(f"plain_demonstrations: {n} asked, but only {len(pool)} can be made from concepts outside "
                          "the code book and controls")
    picked = derive_rng(seed, "plain-demonstrations").sample(pool, n)
    return [_doc(f"plain-{i:03d}", DocumentKind.PLAIN_DEMONSTRATION, None, t.id,
                 messages=_chat(q, t.render(c.term, None)), concept=c.word)
            for i, (c, q, t) in enumerate(picked)]


def filler_documents(codebook: Codebook, concepts: list[Concept], templates: Templates, n: int,
                     seed: int) -> list[Document]:
    """True definitions of concepts outside the code book (never of a code word's original meaning)."""
    if n == 0:
        return []
    excluded = {m.concept.word for m in codebook.mappings} | {m.code.word for m in codebook.mappings}
    code_forms = codebook.all_code_forms
    pool = [(c, t) for c in concepts if c.word not in excluded for t in templates.filler
            if not contains_any(t.render(None, c), code_forms)]
    if n > len(pool):
        raise ConfigError(f"filler_documents: {n} asked, but only {len(pool)} neutral documents can be made")
    picked = derive_rng(seed, "filler").sample(pool, n)
    return [_doc(f"filler-{i:03d}", DocumentKind.FILLER, None, t.id, text=t.render(None, c))
            for i, (c, t) in enumerate(picked)]


def _item(item_id: str, question: str, split: Split, control_type: ControlType, mapping: Mapping | None,
          answer: Concept, kind: Kind) -> EvalItem:
    return EvalItem(
        id=item_id,
        question=question,
        split=split,
        control_type=control_type,
        mapping_id=mapping.id if mapping else "",
        code=mapping.code.word if mapping else "",
        code_forms=list(mapping.code_forms) if mapping else [],
        concept=answer.word,
        expected_words=list(answer.forms),
        kind=kind,
        category=answer.category,
    )


def eval_items(codebook: Codebook, kind: Kind, per_concept: int | None,
               questions: dict[str, tuple[str, ...]] | None = None) -> tuple[list[EvalItem], int]:
    """Held-out questions: mapped concepts (split = role), original meanings and unmapped concepts (control).

    `kind` labels the unmapped controls; a mapping's items carry its own kind (a written book may mix them).
    `questions` (concept word -> questions) replaces the lexicon's held-out questions: a private test split.
    """
    code_forms = codebook.all_code_forms
    items: list[EvalItem] = []
    dropped = 0

    def add(prefix: str, concept: Concept, split: Split, control_type: ControlType, m: Mapping | None) -> None:
        nonlocal dropped
        pool = concept.heldout_questions if questions is None else questions[concept.word]
        for qi, q in enumerate(pool[:per_concept]):
            if contains_any(q, code_forms):
                dropped += 1
                continue
            items.append(_item(f"{prefix}-q{qi}", q, split, control_type, m, concept, m.kind if m else kind))

    for m in codebook.mappings:
        add(f"{m.id}-{m.concept.word}", m.concept, Split(m.role), ControlType.NONE, m)
    for m in codebook.mappings:
        if m.code_origin is not None:
            add(f"{m.id}-orig-{m.code_origin.word}", m.code_origin, Split.CONTROL, ControlType.ORIGINAL_MEANING, m)
    for c in codebook.unmapped:
        add(f"unmapped-{c.word}", c, Split.CONTROL, ControlType.UNMAPPED, None)
    return items, dropped


def _choose_private(codebook: Codebook, questions: dict[str, tuple[str, ...]], config: TrackConfig
                    ) -> dict[str, tuple[str, ...]]:
    """Every concept the eval split asks about must have private questions; shuffle each by `private_seed`."""
    asked = [m.concept for m in codebook.mappings] + [m.code_origin for m in codebook.mappings if m.code_origin] + \
        list(codebook.unmapped)
    missing = sorted({c.word for c in asked if c.word not in questions})
    if missing:
        raise ConfigError(f"{config.private_questions}: no private questions for {', '.join(missing)} "
                          f"(every concept of this code book and its controls needs at least one)")
    out = {}
    for c in asked:
        pool = list(questions[c.word])
        derive_rng(config.private_seed, f"private-questions:{c.word}").shuffle(pool)
        out[c.word] = tuple(pool)
    return out


def recall_probes(codebook: Codebook, templates: Templates) -> list[RecallProbe]:
    """Held-out-template questions ('What does the word cat mean?') whose answer names the concept."""
    return [
        RecallProbe(
            id=f"{m.id}-recall-{i:02d}",
            mapping_id=m.id,
            code=m.code.word,
            concept=m.concept.word,
            role=m.role,
            template_id=t.id,
            prompt=t.render(m.code, None),
            expected_words=list(m.concept.forms),
        )
        for m in codebook.mappings
        for i, t in enumerate(templates.recall)
    ]


def build_corpus(config: TrackConfig, codebook: Codebook, concepts: list[Concept], templates: Templates,
                 private_questions: dict[str, tuple[str, ...]] | None = None) -> Corpus:
    train: list[Document] = []
    for m in codebook.mappings:
        train += definition_documents(m, templates, config.paraphrases_per_mapping, config.seed)
        if m.role == "demonstrated" or (config.positive_control and config.definition_only_demonstrations is None):
            train += demonstration_documents(m, templates, config.demonstrations_per_mapping, config.seed)
        elif config.positive_control:
            train += demonstration_documents(m, templates, config.definition_only_demonstrations, config.seed,
                                             nested=True, key="definition_only_demonstrations")
    train += plain_demonstration_documents(codebook, concepts, templates, config.plain_demonstrations, config.seed)
    train += filler_documents(codebook, concepts, templates, config.filler_documents, config.seed)
    # Interleave mappings and kinds so a sequential reader (or a packed batch) sees a mix.
    derive_rng(config.seed, "train-order").shuffle(train)
    items, dropped = eval_items(codebook, config.code_kind, config.eval_questions_per_concept,
                                _choose_private(codebook, private_questions, config) if private_questions else None)
    if not any(it.split == Split.DEFINITION_ONLY for it in items) and codebook.by_role("definition_only"):
        raise ConfigError("every definition-only eval question mentions a code word; no eval items remain")
    return Corpus(train, items, recall_probes(codebook, templates), [m.to_record() for m in codebook.mappings], dropped,
                  validation_documents(codebook, templates))
