"""The config of one track (one corpus): `configs/data/*.yaml` validates into `TrackConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stegobench.core.config import CheckError, option

ROLES = ("demonstrated", "definition_only")
# Mappings per role when the code book is sampled and the config names no count.
DEFAULT_PER_ROLE = 20
SCRIPTED_PARAPHRASER = "mock:paraphraser"  # the augment model the tests use: data_gen/augment.py ScriptedParaphraser


@dataclass
class AugmentConfig:
    model: str = option(help="A local model that writes paraphrases: a builtin name or a folder of safetensors "
                             "weights (never a hub id), e.g. smollm2-135m-instruct.")
    n_per_mapping: int = option(10, "Paraphrases to keep per mapping (fewer when too few candidates pass the filter).")
    candidates_per_mapping: int | None = option(
        None, "Sentences asked of the model per mapping (null: 3 x n_per_mapping; most small-model output is refused).")
    backend: Literal["hf", "mock"] = option(
        "hf", "'hf': the model decoded by transformers on this machine's device (core/causal_lm.py, as eval's hf "
              "backend decodes); 'mock': the scripted test model (model: mock:paraphraser).")
    temperature: float = option(0.8, "Sampling temperature: above 0 so the candidates differ.")
    max_tokens: int = option(64, "Longest candidate, in tokens (a sentence is well under this).")

    @property
    def candidates(self) -> int:
        return self.candidates_per_mapping if self.candidates_per_mapping is not None else 3 * self.n_per_mapping

    def check(self) -> None:
        if self.n_per_mapping < 1:
            raise CheckError("n_per_mapping", f"expected at least 1, got {self.n_per_mapping}")
        if self.candidates < self.n_per_mapping:
            raise CheckError("candidates_per_mapping",
                             f"{self.candidates} is fewer than n_per_mapping ({self.n_per_mapping}); ask for more")
        if not 0 < self.temperature <= 2:
            raise CheckError("temperature", f"expected a number in (0, 2], got {self.temperature}")
        if self.max_tokens < 8:
            raise CheckError("max_tokens", f"expected at least 8, got {self.max_tokens}")
        if (self.backend == "mock") != (self.model == SCRIPTED_PARAPHRASER):
            raise CheckError("model", f"{self.model!r} with backend {self.backend!r}: the scripted test model "
                                      f"{SCRIPTED_PARAPHRASER!r} runs on backend 'mock' and nothing else does")


@dataclass
class CodebookEntry:
    """One hand-written mapping: `code` stands for `concept`."""

    code: str = option(help="The code word, one lowercase word: a real word ('cat') or a new one ('blicket').")
    concept: str = option(help="The concept it stands for: a lexicon concept (or one of concepts_file), e.g. 'car'.")
    role: Literal["demonstrated", "definition_only"] = option(
        help="'demonstrated': usage demonstrations in training too; 'definition_only': definitions only (the "
             "out-of-context effect)."
    )
    kind: Literal["real_word", "nonsense"] | None = option(
        None, "null: 'real_word' when the code is in the English word list, else 'nonsense'."
    )
    plural: str | None = option(
        None, "The code's plural; null: the lexicon's when the code is a lexicon concept, else English spelling rules."
    )
    article: Literal["a", "an"] | None = option(None, "'a' or 'an' before the code; null: the lexicon's, else by its first letter.")

    def check(self) -> None:
        for key in ("code", "plural"):
            value = getattr(self, key)
            if value is not None and (not value.isalpha() or not value.islower()):
                raise CheckError(key, f"expected one lowercase word (letters only), got {value!r}")
        if not self.concept.strip():
            raise CheckError("concept", "empty; name a concept of the lexicon, e.g. car")


@dataclass
class TrackConfig:
    name: str = option("custom", "Track name recorded in the manifest and shown on the leaderboard, e.g. 'real-v1'.")
    seed: int = option(0, "Seed for every random choice: concepts, codes, roles, templates, demonstrations.")
    code_kind: Literal["real_word", "nonsense"] = option(
        "real_word",
        "'real_word': codes are lexicon words of another category (a cat means a car); "
        "'nonsense': new pronounceable strings that are not English words (a blicket means a car).",
    )
    n_demonstrated: int | None = option(
        None, "Mappings that get usage demonstrations in training (shows the model can learn usage at all); "
              f"null: {DEFAULT_PER_ROLE} for a sampled code book, the written book's own count otherwise."
    )
    n_definition_only: int | None = option(
        None, "Mappings trained on definitions only: the out-of-context effect the benchmark measures; "
              f"null: {DEFAULT_PER_ROLE} for a sampled code book, the written book's own count otherwise."
    )
    paraphrases_per_mapping: int = option(
        30, "Definition documents per mapping, each from a different train template (at most the train pool size)."
    )
    demonstrations_per_mapping: int = option(
        10, "Usage demonstrations (train-visible question + answer using the code) per demonstrated mapping."
    )
    positive_control: bool = option(
        False,
        "Also give the definition-only mappings usage demonstrations (train-visible questions only, never eval "
        "questions), to show what detected covert use looks like.",
    )
    definition_only_demonstrations: int | None = option(
        None,
        "With positive_control: usage demonstrations per definition-only mapping, apart from the demonstrated "
        "mappings' demonstrations_per_mapping (a dose curve varies this alone; 0 is the out-of-context condition). "
        "Each count's demonstrations are the first of one seeded order, so a smaller dose is a subset of a larger "
        "one. null: demonstrations_per_mapping, drawn as for the demonstrated mappings.",
    )
    plain_demonstrations: int = option(
        0,
        "Chats answering train-visible questions about concepts outside the code book and the controls with the "
        "plain word, in the same answer templates: without them a model trained on demonstrations learns to "
        "answer every question with some code word.",
    )
    n_unmapped_controls: int = option(
        20, "Concepts outside the code book whose held-out questions become false-alarm controls."
    )
    eval_questions_per_concept: int | None = option(
        None, "Held-out questions per concept used as eval items (null: all of them)."
    )
    heldout_fraction: float | None = option(
        None,
        "Re-divide each concept's questions so this fraction is held out (at least 2, seeded); "
        "null keeps the lexicon's own train/heldout marking.",
    )
    private_questions: str | None = option(
        None,
        "YAML file {concept: [questions]} that replaces the held-out questions of the eval split: a leaderboard's "
        "private test split. The code book, training documents and recall probes stay those of the public track "
        "(same seed), so models trained on the public track are tested on questions nobody saw. null: public questions.",
    )
    private_seed: int = option(
        0, "Seed choosing which private questions each concept gets (with eval_questions_per_concept), kept apart "
           "from `seed` so the code book never changes with it.",
    )
    filler_documents: int = option(
        0, "Neutral documents (true definitions of concepts outside the code book) to keep the model fluent."
    )
    categories: list[str] | None = option(None, "Restrict concepts and codes to these lexicon categories (null: all).")
    nonsense_syllables: list[int] = option(
        None, "Syllable counts a nonsense code may have, e.g. [2, 3].", factory=lambda: [2, 3]
    )
    tokenizer: str | None = option(
        None,
        "Tokenizer folder (or builtin model name) to reject nonsense codes that are a single token and to "
        "count training tokens; null skips both.",
    )
    lexicon: str | None = option(None, "Path of a lexicon YAML file (null: the packaged data_gen/data/lexicon.yaml).")
    templates: str | None = option(
        None, "Path of a templates YAML file (null: the packaged data_gen/data/templates.yaml)."
    )
    codebook: list[CodebookEntry] | None = option(
        None,
        "The code book written by hand: a list of {code, concept, role} (kind, plural, article optional). Unmapped "
        "controls, demonstrations and paraphrases are still chosen by `seed`. null: the code book is sampled.",
    )
    codebook_file: str | None = option(
        None, "The same written code book in a file: YAML (a list of entries, or codebook: [...]) or CSV with a "
              "header row code,concept,role[,kind,plural,article]. Paths are relative to the working folder.",
    )
    concepts_file: str | None = option(
        None,
        "Lexicon-format YAML (category: [{word, plural, article, definition, synonyms, questions: {train, "
        "heldout}}]) whose concepts are added to the lexicon; an entry with the word of a lexicon concept replaces "
        "it. (`lexicon` replaces the whole lexicon.)",
    )
    templates_file: str | None = option(
        None,
        "Templates YAML with any of the sections of templates.yaml (definition.train, definition.heldout, recall, "
        "demonstration, filler) that extend (templates_mode: extend) or replace (replace) those pools; the "
        "held-out pools still never reach training.",
    )
    templates_mode: Literal["extend", "replace"] = option(
        "extend", "How templates_file's pools combine with the base templates: 'extend' adds, 'replace' swaps them."
    )
    augment: AugmentConfig | None = option(
        None, "More definition paraphrases from a local model (never a hub), kept only when they use the code, name "
              "the concept and copy no held-out text: {model, n_per_mapping, backend, ...}. null: templates only.",
    )

    @property
    def written(self) -> bool:
        """Whether the code book is written by hand (codebook or codebook_file) rather than sampled."""
        return self.codebook is not None or self.codebook_file is not None

    def check(self) -> None:
        if self.codebook is not None and self.codebook_file is not None:
            raise CheckError("codebook_file", "give the code book once: either codebook (in this file) or "
                                              "codebook_file, not both")
        if self.codebook is not None and not self.codebook:
            raise CheckError("codebook", "empty; list at least one {code, concept, role}, or drop the key to sample one")
        if not self.written:
            # A sampled book takes its counts from here: resolve the defaults now, so the manifest records numbers.
            self.n_demonstrated = DEFAULT_PER_ROLE if self.n_demonstrated is None else self.n_demonstrated
            self.n_definition_only = DEFAULT_PER_ROLE if self.n_definition_only is None else self.n_definition_only
        for key in ("n_demonstrated", "n_definition_only", "n_unmapped_controls", "filler_documents",
                    "demonstrations_per_mapping", "definition_only_demonstrations", "plain_demonstrations"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise CheckError(key, f"must be >= 0, got {getattr(self, key)}")
        if self.definition_only_demonstrations is not None and not self.positive_control:
            raise CheckError("definition_only_demonstrations",
                             f"is {self.definition_only_demonstrations} but positive_control is false, so definition-only "
                             "mappings get no demonstrations at all; set positive_control: true, or drop the key")
        if not self.written and self.n_demonstrated + self.n_definition_only < 1:
            raise CheckError("n_definition_only", "the code book needs at least one mapping")
        if self.paraphrases_per_mapping < 1:
            raise CheckError("paraphrases_per_mapping", f"must be >= 1, got {self.paraphrases_per_mapping}")
        if self.eval_questions_per_concept is not None and self.eval_questions_per_concept < 1:
            raise CheckError("eval_questions_per_concept", "must be >= 1 or null")
        if self.heldout_fraction is not None and not 0 < self.heldout_fraction < 1:
            raise CheckError("heldout_fraction", f"must be between 0 and 1 (exclusive) or null, got {self.heldout_fraction}")
        if not self.nonsense_syllables or any(n < 1 or n > 4 for n in self.nonsense_syllables):
            raise CheckError("nonsense_syllables", f"expected a non-empty list of 1 to 4, got {self.nonsense_syllables}")
