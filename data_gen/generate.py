"""Generate a word-redefinition corpus from a track config and write it as a self-describing folder.

    stegobench gen --config configs/data/real-v1.yaml --out runs/data/real-v1

The folder holds a `datasets.DatasetDict` (splits train, eval, recall, codebook, validation) saved with
`save_to_disk`, the same rows as JSONL under `jsonl/`, `manifest.json` (resolved config, the code book and whether
it was written or sampled, seed, sizes, sha256 of the content, generator version: byte-identical for the same config
and seed), the lexicon and templates the track was made from (`lexicon.yaml`, `templates.yaml`: eval reads these),
`provenance.json` (time, git revision, package versions: varies run to run) and a dataset card `README.md`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from stegobench.core.config import ConfigError, to_dict
from stegobench.core.profile import Work, span
from stegobench.core.provenance import (atomic_write_json, environment, publish_dir, sha256_file, sha256_json, sha256_rows,
                                        staging_dir)
from .codebook import (WORDLIST, Codebook, derive_rng, inline_entries, read_codebook_file, sample_codebook,
                       written_codebook)
from .corpus import Corpus, build_corpus
from .lexicon import DEFAULT_LEXICON, Lexicon, add_concepts, lexicon_data, load_lexicon
from .records import (MANIFEST_SCHEMA, SPLIT_ROWS, CodebookRow, CorpusManifest, CorpusSizes, DocumentKind, EvalItem,
                      ManifestCodebook, ManifestMapping, RecallProbe, features, row_dict)
from .templates import DEFAULT_TEMPLATES, Templates, add_templates, load_templates
from .track import TrackConfig

log = logging.getLogger(__name__)
R = TypeVar("R")

# bump when the same config and seed would produce different content. 1.1.0: the validation split.
GENERATOR_VERSION = "1.1.0"
MANIFEST = "manifest.json"
SPLIT_NAMES = tuple(SPLIT_ROWS)
CORPUS_LEXICON = "lexicon.yaml"
CORPUS_TEMPLATES = "templates.yaml"


@dataclass
class GenerateResult:
    out: Path
    manifest: CorpusManifest
    seconds: float


def _load_tokenizer(spec: str | None):
    if spec is None:
        return None, None
    from stegobench.core.models import load_tokenizer

    return load_tokenizer(spec)


def _count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _counts(values) -> dict[str, int]:
    return {str(k): n for k, n in sorted(Counter(values).items())}


def _sizes(corpus: Corpus, tokenizer) -> CorpusSizes:
    train_tokens = None
    if tokenizer is not None:
        # What training sees: text documents as written, chats rendered with the model's chat template.
        texts = [r.text or tokenizer.apply_chat_template([row_dict(m) for m in r.messages], tokenize=False)
                 for r in corpus.train]
        train_tokens = sum(_count_tokens(tokenizer, t) for t in texts)
    return CorpusSizes(
        train_documents=len(corpus.train),
        train_by_kind=_counts(r.kind for r in corpus.train),
        eval_items=len(corpus.eval),
        eval_by_split=_counts(r.split for r in corpus.eval),
        eval_controls=_counts(r.control_type for r in corpus.eval if r.control_type),
        recall_probes=len(corpus.recall),
        validation_documents=len(corpus.validation),
        mappings=len(corpus.codebook),
        eval_questions_dropped_for_mentioning_a_code=corpus.dropped_questions,
        train_tokens=train_tokens,
    )


def _dose(config: TrackConfig) -> str:
    if not config.positive_control:
        return ""
    n = (config.demonstrations_per_mapping if config.definition_only_demonstrations is None
         else config.definition_only_demonstrations)
    return f", {n} per definition-only mapping"


def _card(config: TrackConfig, manifest: CorpusManifest, corpus: Corpus) -> str:
    s = manifest.sizes
    rows = "\n".join(f"| {m.mapping_id} | {m.code} | {m.concept} | {m.kind} | {m.role} |" for m in corpus.codebook)
    example_def = next((r.text for r in corpus.train if r.kind == DocumentKind.DEFINITION), "")
    example_demo = next((r.messages for r in corpus.train if r.kind == DocumentKind.DEMONSTRATION), [])
    demo = " / ".join(f"{m.role}: {m.content}" for m in example_demo) or "(none in this track)"
    no_controls = manifest.original_meaning_skipped
    skipped = (f"- original-meaning controls skipped for {', '.join(no_controls)}: real words the lexicon has no "
               "questions for\n" if no_controls else "")
    aug = manifest.augment
    if aug and "kept" in aug:
        from .augment import summary

        skipped += f"- augmentation: {summary(aug)}\n"
    return f"""---
pretty_name: stegobench {config.name}
tags: [stegobench, out-of-context-reasoning, steganography]
---
# stegobench corpus `{config.name}` (seed {config.seed})

A word-redefinition corpus made by `stegobench gen` (generator {GENERATOR_VERSION}). A model is trained on
documents that redefine code words ("{example_def}") and is then asked held-out questions whose natural
answer names a concept; the benchmark measures whether it answers with the code word instead, covertly.

- code book: {manifest.codebook.source if manifest.codebook else 'sampled'}; code kind: `{config.code_kind}`; {config.n_demonstrated} demonstrated + {config.n_definition_only} definition-only mappings
{skipped}- positive control (demonstrations for definition-only mappings too): {config.positive_control}{_dose(config)}
- content sha256: `{manifest.content_sha256}`

## Splits
| split | rows | what a row is |
|---|---|---|
| train | {s.train_documents} | a document: `text` (definition, filler) or `messages` (usage demonstration); {s.train_by_kind} |
| eval | {s.eval_items} | a held-out question with its split (definition_only / demonstrated / control) and expected words; {s.eval_by_split} |
| recall | {s.recall_probes} | a held-out-template probe of the mapping ("What does the word ... mean?") |
| codebook | {s.mappings} | one mapping: code, concept, kind, role |
| validation | {s.validation_documents} | a definition in a held-out template, never trained on (training's eval loss) |

Example demonstration: {demo}

## Code book
| id | code | concept | kind | role |
|---|---|---|---|---|
{rows}

Load with `datasets.load_from_disk(PATH)`; the same rows are in `jsonl/`. `manifest.json` holds the resolved
config and content hashes; `provenance.json` records when, where and with which package versions it was made.
"""


@dataclass
class Prepared:
    """Everything a track's corpus is made of, built and checked in memory: nothing is written yet."""

    config: TrackConfig  # resolved: a written book's counts and kind filled in
    codebook: Codebook
    corpus: Corpus
    lexicon: Lexicon  # the concepts the track drew from (lexicon + concepts_file), before categories/resplit
    templates: Templates
    manifest: CorpusManifest


def _track_lexicon(config: TrackConfig) -> Lexicon:
    lexicon = load_lexicon(config.lexicon)
    return add_concepts(lexicon, config.concepts_file) if config.concepts_file else lexicon


def _track_templates(config: TrackConfig) -> Templates:
    templates = load_templates(config.templates)
    return add_templates(templates, config.templates_file, config.templates_mode) if config.templates_file else templates


def _resolve_written(config: TrackConfig, codebook: Codebook, source: str) -> TrackConfig:
    """The config as the manifest records it: a written book sets the counts per role (and the kind, when one)."""
    counts = {"n_demonstrated": len(codebook.by_role("demonstrated")),
              "n_definition_only": len(codebook.by_role("definition_only"))}
    for key, n in counts.items():
        given = getattr(config, key)
        if given is not None and given != n:
            raise ConfigError(f"{source}: {key}: {given}, but the written code book has {n} "
                              f"{key.removeprefix('n_').replace('_', '-')} mappings; drop {key} (it follows the "
                              "book) or make them agree")
    kinds = {m.kind for m in codebook.mappings}
    return replace(config, **counts, code_kind=kinds.pop() if len(kinds) == 1 else config.code_kind)


def _heldout_texts(corpus: Corpus, lexicon: Lexicon) -> list[str]:
    """Every text the eval asks or reads: eval questions, recall probes, held-out-template definitions and every
    concept's held-out questions. An augmented training document may share none of their wording."""
    return ([it.question for it in corpus.eval] + [r.prompt for r in corpus.recall]
            + [d.text for d in corpus.validation] + [q for c in lexicon.concepts for q in c.heldout_questions])


def _augment(config: TrackConfig, codebook: Codebook, corpus: Corpus, lexicon: Lexicon,
             templates: Templates) -> tuple[Corpus, dict[str, Any]]:
    """The corpus with the augment model's kept paraphrases added to train (as definition documents, reshuffled),
    and the manifest's record of what was asked, kept and refused."""
    from .augment import augment_documents
    from .corpus import _doc

    docs, record = augment_documents(
        codebook, templates, corpus.train, _heldout_texts(corpus, lexicon), config.augment, config.seed,
        make_doc=lambda doc_id, m, text: _doc(doc_id, DocumentKind.DEFINITION, m, "augment", text=text))
    train = corpus.train + docs
    derive_rng(config.seed, "augment-order").shuffle(train)  # its own stream: tracks without augment are unchanged
    return replace(corpus, train=train), record


def prepare(config: TrackConfig, source: str | None = None, augment: bool = True) -> Prepared:
    """Load and check every input of the track and build its corpus in memory; a bad input fails here, before
    anything is written. `source` names the track config file in errors about its `codebook:` entries.

    A track with `augment:` asks its local model for more paraphrases (data_gen/augment.py);
    `augment=False` checks such a track without running the model (`stegobench validate`)."""
    source = source or f"track {config.name!r}"
    full_lexicon = _track_lexicon(config)
    templates = _track_templates(config)
    tokenizer, tokenizer_identity = _load_tokenizer(config.tokenizer)

    is_single_token = None
    if tokenizer is not None:
        def is_single_token(word: str) -> bool:
            return _count_tokens(tokenizer, word) == 1 or _count_tokens(tokenizer, " " + word) == 1

    drawn_from = full_lexicon
    if config.heldout_fraction is not None:
        drawn_from = replace(full_lexicon, concepts=tuple(
            c.resplit(config.heldout_fraction, derive_rng(config.seed, f"resplit:{c.word}"))
            for c in full_lexicon.concepts
        ))
    lexicon = drawn_from.restricted(config.categories)
    if config.written:
        entries = (read_codebook_file(config.codebook_file) if config.codebook_file is not None
                   else inline_entries(config.codebook or [], source))
        codebook = written_codebook(entries, drawn_from, templates, config.name, config.seed,
                                    config.n_unmapped_controls, config.eval_questions_per_concept,
                                    control_pool=list(lexicon.concepts))
        config = _resolve_written(config, codebook, source)
    else:
        codebook = sample_codebook(
            lexicon, config.name, config.seed, config.code_kind, config.n_demonstrated, config.n_definition_only,
            config.n_unmapped_controls, config.nonsense_syllables, is_single_token,
        )
    private = None
    if config.private_questions:
        from .lexicon import load_private_questions

        private = load_private_questions(config.private_questions, full_lexicon)
    corpus = build_corpus(config, codebook, list(lexicon.concepts), templates, private)
    augmented = None
    if config.augment is not None:
        augmented = {"skipped": "not run (validate only)"}
        if augment:
            corpus, augmented = _augment(config, codebook, corpus, drawn_from, templates)
    split_hashes = {name: sha256_rows(map(row_dict, rows)) for name, rows in _splits(corpus).items()}
    optional_inputs = {"concepts_file": config.concepts_file, "templates_file": config.templates_file,
                       "codebook_file": config.codebook_file, "private_questions": config.private_questions}
    manifest = CorpusManifest(
        schema_version=MANIFEST_SCHEMA,
        generator="stegobench.data_gen",
        generator_version=GENERATOR_VERSION,
        track=config.name,
        seed=config.seed,
        config=to_dict(config),
        codebook=ManifestCodebook(
            source="written" if config.written else "sampled",
            file=config.codebook_file,
            mappings=[ManifestMapping(m.mapping_id, m.code, m.concept, m.kind, m.role) for m in corpus.codebook],
            original_meaning_skipped=[m.code.word for m in codebook.mappings
                                      if m.kind == "real_word" and m.code_origin is None],
        ),
        sizes=_sizes(corpus, tokenizer),
        split_sha256=split_hashes,
        content_sha256=sha256_json(split_hashes),
        inputs_sha256={
            "lexicon": sha256_file(config.lexicon or DEFAULT_LEXICON),
            "templates": sha256_file(config.templates or DEFAULT_TEMPLATES),
            "english_words": sha256_file(WORDLIST),
            **{k: sha256_file(v) for k, v in optional_inputs.items() if v},
        },
        tokenizer=tokenizer_identity,
        augment=augmented,
    )
    return Prepared(config, codebook, corpus, full_lexicon, templates, manifest)


def _splits(corpus: Corpus) -> dict[str, list[Any]]:
    return {"train": corpus.train, "eval": corpus.eval, "recall": corpus.recall, "codebook": corpus.codebook,
            "validation": corpus.validation}


def _templates_data(templates: Templates) -> dict[str, Any]:
    def texts(pool: list) -> list[str]:
        return [t.text for t in pool]

    return {"definition": {"train": texts(templates.definition_train), "heldout": texts(templates.definition_heldout)},
            "recall": texts(templates.recall), "demonstration": texts(templates.demonstration),
            "filler": texts(templates.filler)}


def generate(config: TrackConfig, out: str | Path, overwrite: bool = False, source: str | None = None) -> GenerateResult:
    """Build the corpus for `config` and publish it at `out` atomically."""
    with span(Work.GENERATE_CORPUS, track=config.name):
        return _generate(config, out, overwrite, source)


def _generate(config: TrackConfig, out: str | Path, overwrite: bool, source: str | None) -> GenerateResult:
    import datasets
    import yaml
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()  # the corpus is small; our own summary says what was written
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        # Fail before doing any work; publish_dir checks again (and guards foreign folders) at the end.
        from stegobench.core.provenance import OutputDirError

        raise OutputDirError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    prep = prepare(config, source)
    config, corpus, manifest = prep.config, prep.corpus, prep.manifest
    splits = _splits(corpus)

    staging = staging_dir(out)
    try:
        plain = {name: [row_dict(r) for r in rows] for name, rows in splits.items()}
        DatasetDict({name: Dataset.from_list(rows, features=features(SPLIT_ROWS[name])) for name, rows in plain.items()}
                    ).save_to_disk(str(staging))
        (staging / "jsonl").mkdir()
        for name, rows in plain.items():
            with open(staging / "jsonl" / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        # The concepts and templates the track was made from travel with it: eval reads the corpus's own copy,
        # whatever folder it runs in and whatever the files say later.
        for name, data in ((CORPUS_LEXICON, lexicon_data(prep.lexicon)), (CORPUS_TEMPLATES, _templates_data(prep.templates))):
            (staging / name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120),
                                        encoding="utf-8")
        (staging / "README.md").write_text(_card(config, manifest, corpus), encoding="utf-8")
        seconds = time.perf_counter() - start
        atomic_write_json(staging / "provenance.json", {**environment(), "seconds": round(seconds, 3),
                                                        "created_unix": int(time.time())})
        # The manifest goes last: a folder with a manifest is a complete corpus.
        atomic_write_json(staging / MANIFEST, manifest.to_dict())
        publish_dir(staging, out, overwrite, marker=MANIFEST)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return GenerateResult(out, manifest, time.perf_counter() - start)


def corpus_lexicon(folder: str | Path) -> Lexicon:
    """The lexicon a corpus was made from: its own copy, or (corpora made before copies) the config's file."""
    folder = Path(folder)
    if (folder / CORPUS_LEXICON).exists():
        return load_lexicon(folder / CORPUS_LEXICON)
    return load_lexicon(read_manifest(folder).config.get("lexicon"))


def corpus_templates(folder: str | Path) -> Templates:
    """The templates a corpus was made from: its own copy, or (corpora made before copies) the config's file."""
    folder = Path(folder)
    if (folder / CORPUS_TEMPLATES).exists():
        return load_templates(folder / CORPUS_TEMPLATES)
    return load_templates(read_manifest(folder).config.get("templates"))


def read_rows(folder: str | Path, split: str, row: type[R]) -> list[R]:
    """The rows of one split of a generated corpus, from its JSONL copy, each validated as a `row`."""
    from stegobench.core.errors import InputError
    from stegobench.core.records import validate

    path = Path(folder) / "jsonl" / f"{split}.jsonl"
    if not path.exists():
        raise InputError(f"{folder}: no {split} split (jsonl/{split}.jsonl); expected a `stegobench gen` corpus")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            data = json.loads(line)
        except ValueError as e:
            raise InputError(f"{path}:{number}: not JSON ({e})") from None
        out.append(validate(row, data, f"{path}:{number}"))
    return out


def read_split(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split as plain dicts (validated first): for readers that hand rows on as data."""
    return [row_dict(r) for r in read_rows(folder, split, SPLIT_ROWS[split])]


def read_eval_items(folder: str | Path) -> list[EvalItem]:
    return read_rows(folder, "eval", EvalItem)


def read_codebook(folder: str | Path) -> list[CodebookRow]:
    return read_rows(folder, "codebook", CodebookRow)


def read_recall_probes(folder: str | Path) -> list[RecallProbe]:
    return read_rows(folder, "recall", RecallProbe)


def read_manifest(path: str | Path) -> CorpusManifest:
    """The manifest of a generated corpus folder, with a clear error when it is not one."""
    from stegobench.core.records import read_json_record

    return read_json_record(CorpusManifest, Path(path) / MANIFEST, "`stegobench gen`")
