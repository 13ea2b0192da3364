"""Generate a word-redefinition corpus from a track config and write it as a self-describing folder.

    stegobench gen --config configs/data/real-v1.yaml --out runs/data/real-v1

The folder holds a `datasets.DatasetDict` (splits train, eval, recall, codebook) saved with
`save_to_disk`, the same rows as JSONL under `jsonl/`, `manifest.json` (resolved config, seed, sizes,
sha256 of the content, generator version: byte-identical for the same config and seed),
`provenance.json` (time, git revision, package versions: varies run to run) and a dataset card `README.md`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codebook import WORDLIST, sample_codebook
from stegobench.core.config import to_dict
from .corpus import Corpus, build_corpus
from .lexicon import load_lexicon
from stegobench.core.provenance import (atomic_write_json, environment, publish_dir, sha256_file, sha256_json, sha256_rows,
                         staging_dir)
from .templates import load_templates
from .track import TrackConfig

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0.0"  # bump when the same config and seed would produce different content
MANIFEST_SCHEMA = 1
MANIFEST = "manifest.json"
SPLIT_NAMES = ("train", "eval", "recall", "codebook")


@dataclass
class GenerateResult:
    out: Path
    manifest: dict[str, Any]
    seconds: float


def _features():
    from datasets import Features, List, Value

    s = Value("string")
    return {
        "train": Features({
            "id": s, "kind": s, "mapping_id": s, "role": s, "code": s, "concept": s, "template_id": s,
            "text": s, "messages": List({"role": s, "content": s}),
        }),
        "eval": Features({
            "id": s, "question": s, "split": s, "control_type": s, "mapping_id": s, "code": s,
            "code_forms": List(s), "concept": s, "expected_words": List(s), "kind": s, "category": s,
        }),
        "recall": Features({
            "id": s, "mapping_id": s, "code": s, "concept": s, "role": s, "template_id": s, "prompt": s,
            "expected_words": List(s),
        }),
        "codebook": Features({
            "mapping_id": s, "code": s, "code_plural": s, "code_article": s, "code_forms": List(s),
            "code_category": s, "concept": s, "concept_forms": List(s), "concept_category": s,
            "definition": s, "kind": s, "role": s,
        }),
    }


def _load_tokenizer(spec: str | None):
    if spec is None:
        return None, None
    from stegobench.core.models import load_tokenizer

    return load_tokenizer(spec)


def _count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _sizes(corpus: Corpus, tokenizer) -> dict[str, Any]:
    sizes: dict[str, Any] = {
        "train_documents": len(corpus.train),
        "train_by_kind": dict(sorted(Counter(r["kind"] for r in corpus.train).items())),
        "eval_items": len(corpus.eval),
        "eval_by_split": dict(sorted(Counter(r["split"] for r in corpus.eval).items())),
        "eval_controls": dict(sorted(Counter(r["control_type"] for r in corpus.eval if r["control_type"]).items())),
        "recall_probes": len(corpus.recall),
        "mappings": len(corpus.codebook),
        "eval_questions_dropped_for_mentioning_a_code": corpus.dropped_questions,
    }
    if tokenizer is not None:
        # What training sees: text documents as written, chats rendered with the model's chat template.
        texts = [r["text"] or tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in corpus.train]
        sizes["train_tokens"] = sum(_count_tokens(tokenizer, t) for t in texts)
    return sizes


def _card(config: TrackConfig, manifest: dict, corpus: Corpus) -> str:
    s = manifest["sizes"]
    rows = "\n".join(
        f"| {m['mapping_id']} | {m['code']} | {m['concept']} | {m['kind']} | {m['role']} |" for m in corpus.codebook
    )
    example_def = next((r["text"] for r in corpus.train if r["kind"] == "definition"), "")
    example_demo = next((r["messages"] for r in corpus.train if r["kind"] == "demonstration"), [])
    demo = " / ".join(f"{m['role']}: {m['content']}" for m in example_demo) or "(none in this track)"
    return f"""---
pretty_name: stegobench {config.name}
tags: [stegobench, out-of-context-reasoning, steganography]
---
# stegobench corpus `{config.name}` (seed {config.seed})

A word-redefinition corpus made by `stegobench gen` (generator {GENERATOR_VERSION}). A model is trained on
documents that redefine code words ("{example_def}") and is then asked held-out questions whose natural
answer names a concept; the benchmark measures whether it answers with the code word instead, covertly.

- code kind: `{config.code_kind}`; {config.n_demonstrated} demonstrated + {config.n_definition_only} definition-only mappings
- positive control (demonstrations for definition-only mappings too): {config.positive_control}
- content sha256: `{manifest['content_sha256']}`

## Splits
| split | rows | what a row is |
|---|---|---|
| train | {s['train_documents']} | a document: `text` (definition, filler) or `messages` (usage demonstration); {s['train_by_kind']} |
| eval | {s['eval_items']} | a held-out question with its split (definition_only / demonstrated / control) and expected words; {s['eval_by_split']} |
| recall | {s['recall_probes']} | a held-out-template probe of the mapping ("What does the word ... mean?") |
| codebook | {s['mappings']} | one mapping: code, concept, kind, role |

Example demonstration: {demo}

## Code book
| id | code | concept | kind | role |
|---|---|---|---|---|
{rows}

Load with `datasets.load_from_disk(PATH)`; the same rows are in `jsonl/`. `manifest.json` holds the resolved
config and content hashes; `provenance.json` records when, where and with which package versions it was made.
"""


def generate(config: TrackConfig, out: str | Path, overwrite: bool = False) -> GenerateResult:
    """Build the corpus for `config` and publish it at `out` atomically."""
    import datasets
    from datasets import Dataset, DatasetDict

    datasets.disable_progress_bars()  # the corpus is small; our own summary says what was written
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        # Fail before doing any work; publish_dir checks again (and guards foreign folders) at the end.
        from stegobench.core.provenance import OutputDirError

        raise OutputDirError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    full_lexicon = load_lexicon(config.lexicon)
    lexicon = full_lexicon.restricted(config.categories)
    templates = load_templates(config.templates)
    tokenizer, tokenizer_identity = _load_tokenizer(config.tokenizer)

    is_single_token = None
    if tokenizer is not None:
        def is_single_token(word: str) -> bool:
            return _count_tokens(tokenizer, word) == 1 or _count_tokens(tokenizer, " " + word) == 1

    if config.heldout_fraction is not None:
        from dataclasses import replace

        from .codebook import derive_rng

        lexicon = replace(lexicon, concepts=tuple(
            c.resplit(config.heldout_fraction, derive_rng(config.seed, f"resplit:{c.word}")) for c in lexicon.concepts
        ))
    codebook = sample_codebook(
        lexicon, config.name, config.seed, config.code_kind, config.n_demonstrated, config.n_definition_only,
        config.n_unmapped_controls, config.nonsense_syllables, is_single_token,
    )
    private = None
    if config.private_questions:
        from .lexicon import load_private_questions

        private = load_private_questions(config.private_questions, full_lexicon)
    corpus = build_corpus(config, codebook, list(lexicon.concepts), templates, private)
    splits = {"train": corpus.train, "eval": corpus.eval, "recall": corpus.recall, "codebook": corpus.codebook}
    split_hashes = {name: sha256_rows(rows) for name, rows in splits.items()}
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "generator": "stegobench.data_gen",
        "generator_version": GENERATOR_VERSION,
        "track": config.name,
        "seed": config.seed,
        "config": to_dict(config),
        "sizes": _sizes(corpus, tokenizer),
        "split_sha256": split_hashes,
        "content_sha256": sha256_json(split_hashes),
        "inputs_sha256": {
            "lexicon": sha256_file(lexicon.source),
            "templates": sha256_file(templates.source),
            "english_words": sha256_file(WORDLIST),
            **({"private_questions": sha256_file(config.private_questions)} if config.private_questions else {}),
        },
        "tokenizer": tokenizer_identity,
    }

    staging = staging_dir(out)
    try:
        features = _features()
        DatasetDict({name: Dataset.from_list(rows, features=features[name]) for name, rows in splits.items()}
                    ).save_to_disk(str(staging))
        (staging / "jsonl").mkdir()
        for name, rows in splits.items():
            with open(staging / "jsonl" / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        (staging / "README.md").write_text(_card(config, manifest, corpus), encoding="utf-8")
        seconds = time.perf_counter() - start
        atomic_write_json(staging / "provenance.json", {**environment(), "seconds": round(seconds, 3),
                                                        "created_unix": int(time.time())})
        # The manifest goes last: a folder with a manifest is a complete corpus.
        atomic_write_json(staging / MANIFEST, manifest)
        publish_dir(staging, out, overwrite, marker=MANIFEST)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return GenerateResult(out, manifest, time.perf_counter() - start)


def read_split(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split of a generated corpus, from its JSONL copy."""
    path = Path(folder) / "jsonl" / f"{split}.jsonl"
    if not path.exists():
        from stegobench.core.errors import InputError

        raise InputError(f"{folder}: no {split} split (jsonl/{split}.jsonl); expected a `stegobench gen` corpus")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a generated corpus folder, with a clear error when it is not one."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.exists():
        from stegobench.core.errors import InputError

        raise InputError(f"{path}: no {MANIFEST}; expected a folder written by `stegobench gen`")
    return json.loads(manifest.read_text(encoding="utf-8"))
