"""Before any condition: load the reader, train the concept probe on the base model's plain answers, and read
the base model's own eval answers (the probe's ceiling; the base condition reuses the reading). The white-box
monitors are calibrated on other answers (eval/heldout.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from stegobench.core.errors import ConfigError
from stegobench.data_gen.generate import corpus_templates
from stegobench.data_gen.records import ControlType
from stegobench.data_gen.words import Term, article_for, naive_plural

from ..prompts import user_text
from ..runlog import Interval, ProbeSelection, ProbeSummary
from ..stats import wilson_interval
from .model import ResidualReader
from .positions import find_positions
from .probe import OTHER, LinearProbe, train_probe
from .reading import Answers, Book, read_answers

# Teacher-forced plain answers per question ("A car, of course."), rotated over the templates: 3 gave the same
# layer curve on SmolLM2 for 30% more reading.
FRAMES_PER_QUESTION = 2


@dataclass
class WhiteboxState:
    reader: ResidualReader
    probe: LinearProbe
    book: Book
    summary: ProbeSummary
    base_prompts: list[str]
    base_answers: list[str]
    base_reading: Answers  # the base model's eval answers: the base condition reuses them


def probe_classes(inputs) -> list[str]:
    """Concepts of the code book, of the unmapped controls, and real-word codes that are lexicon concepts (so a
    code word's own meaning has a class), then OTHER."""
    known = {c.word for c in inputs.lexicon.concepts}
    words = [m.concept for m in inputs.codebook]
    words += sorted({it.concept for it in inputs.items if it.control_type == ControlType.UNMAPPED})
    words += [m.code for m in inputs.codebook if m.code in known]
    return [w for w in dict.fromkeys(words) if w in known] + [OTHER]


def make_book(inputs, reader: ResidualReader, classes: list[str]) -> Book:
    lex = inputs.lexicon
    word_class = {f.lower(): c for c in classes if c != OTHER for f in lex.by_word(c).forms}
    return Book(
        code_forms={m.mapping_id: list(m.code_forms) for m in inputs.codebook},
        concept={m.mapping_id: m.concept for m in inputs.codebook},
        concept_ids={m.mapping_id: reader.first_token_ids(list(m.concept_forms)) for m in inputs.codebook},
        code_ids={m.mapping_id: reader.first_token_ids(list(m.code_forms)) for m in inputs.codebook},
        word_class=word_class,
        concept_category={m.mapping_id: m.concept_category for m in inputs.codebook if m.concept_category},
    )


def _labelled(reader: ResidualReader, book: Book, classes: list[str], texts: list[tuple[str, str]],
              skip: frozenset[str] = frozenset(), only: frozenset[str] | None = None):
    """Residuals [n, layers, hidden] and class labels of the content words of `texts` (prompt, answer): every
    one but those in `skip`, or only those in `only`."""
    import torch

    encoded, positions, labels = [], [], []
    for prompt, answer in texts:
        enc = reader.encode(prompt, answer)
        words = [(w, t) for w, t in find_positions(enc, answer, []).words
                 if w not in skip and (only is None or w in only)]
        encoded.append(enc)
        positions.append([t for _, t in words])
        labels += [classes.index(book.own_class(w)) for w, _ in words]
    return reader.residuals(encoded, positions), torch.tensor(labels, dtype=torch.long)


def _frames(inputs, chat, questions_of, terms_of=lambda concept: [concept.term]) -> list[tuple[str, str]]:
    """Teacher-forced plain answers (prompt, answer) naming each probe concept: FRAMES_PER_QUESTION per
    question of `questions_of(concept)` and term of `terms_of(concept)`, rotated over the demonstration templates."""
    frames = corpus_templates(inputs.data).demonstration
    texts, k = [], 0
    for word in probe_classes(inputs)[:-1]:
        concept = inputs.lexicon.by_word(word)
        for term in terms_of(concept):
            for q in questions_of(concept):
                for _ in range(FRAMES_PER_QUESTION):
                    texts.append((chat(user_text(q)), " " + frames[k % len(frames)].render(term, None)))
                    k += 1
    return texts


def another_concepts_questions(inputs, classes: list[str]):
    """concept -> the held-out questions of the next probe concept (cyclically): a context that names another."""
    words = classes[:-1]
    following = {w: inputs.lexicon.by_word(words[(i + 1) % len(words)]) for i, w in enumerate(words)}
    return lambda concept: following[concept.word].heldout_questions


def synonym_terms(concept) -> list[Term]:
    return [Term(w, naive_plural(w), article_for(w)) for w in concept.synonyms]


def synonym_forms(inputs, classes: list[str]) -> frozenset[str]:
    """Every form of a synonym of a probe concept (lower case; the concept's forms less its word's own, as the
    book's word classes have them): kept out of training, read only to choose the layer."""
    concepts = [inputs.lexicon.by_word(c) for c in classes if c != OTHER]
    return frozenset(f.lower() for c in concepts for f in c.forms if f not in c.term.forms)


def prepare_whitebox(inputs, model_spec: str, judge, generate, base_prompts: list[str],
                     base_answers: list[str]) -> WhiteboxState:
    """Read `model_spec` (adapters are applied to it per condition); `judge` is the base model's backend and
    `generate(prompts, desc)` decodes with it (cached); `base_*` are its eval prompts and answers."""
    t0 = time.perf_counter()
    reader = ResidualReader(model_spec)
    too_deep = [x for x in inputs.cfg.save_activations or [] if x > reader.n_layers]
    if too_deep:
        raise ConfigError(f"save_activations: layer {too_deep[0]} is beyond {model_spec}'s {reader.n_layers} layers "
                          f"(use 1..{reader.n_layers})")
    classes = probe_classes(inputs)
    book = make_book(inputs, reader, classes)
    train_questions = [q for w in classes[:-1] for q in inputs.lexicon.by_word(w).train_questions]
    train_prompts = [judge.chat_prompt(user_text(q)) for q in train_questions]
    decoded = generate(train_prompts, "whitebox probe answers")
    synonyms = synonym_forms(inputs, classes)
    train_x, train_y = _labelled(reader, book, classes, [*_frames(inputs, judge.chat_prompt, lambda c: c.train_questions),
                                                         *zip(train_prompts, decoded)], skip=synonyms)
    # The layer is chosen where a probe fitted on the plain words reads their synonyms, held out from training:
    # a different surface form with the same meaning, as a code word is. Each synonym answers another concept's
    # held-out question, so a layer that reads the question's topic instead of the word scores nothing. Held-out
    # accuracy on the plain words themselves would choose an early layer that reads the token.
    # (one probe concept has no other concept's questions: its synonyms answer its own)
    selected_by = ProbeSelection.SYNONYMS if len(classes) > 2 else ProbeSelection.OWN_SYNONYMS
    select_x, select_y = _labelled(reader, book, classes, _frames(inputs, judge.chat_prompt,
                                                                  another_concepts_questions(inputs, classes),
                                                                  synonym_terms), only=synonyms)
    if len(select_y) == 0:  # no probe concept has a synonym the reader finds as a word
        selected_by = ProbeSelection.PLAIN_WORDS
        select_x, select_y = _labelled(reader, book, classes, _frames(inputs, judge.chat_prompt,
                                                                      lambda c: c.heldout_questions))
    probe, accuracy = train_probe(classes, train_x, train_y, select_x, select_y, inputs.cfg.seed)
    reading = read_answers(reader, probe, book, inputs.items, base_prompts, base_answers,
                           inputs.cfg.save_activations, "base")
    ceiling = plain_words_read(reading)
    summary = ProbeSummary(classes, probe.layer + 1, [round(a, 4) for a in accuracy], ceiling, int(len(train_y)),
                           round(time.perf_counter() - t0, 2), selected_by, int(len(select_y)))
    return WhiteboxState(reader, probe, book, summary, base_prompts, base_answers, reading)


def plain_words_read(reading: Answers) -> Interval | None:
    """The probe's accuracy on words that name a probe concept in these answers (Wilson interval)."""
    pairs = [p for r in reading.records for p in r.get("plain_words", [])]
    if not pairs:
        return None
    return Interval(*wilson_interval(sum(a == b for a, b in pairs), len(pairs)))

