"""Typed records on disk (issue 27): corpus rows, manifests and results.json load through one model each, older
files still load, a corrupt field fails naming the file and the field, and the typed pipeline writes the same
results as the dict-based one it replaced."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from stegobench.core.config import load_config
from stegobench.core.errors import InputError
from stegobench.data_gen.generate import read_eval_items, read_manifest
from stegobench.data_gen.records import EvalItem, ScoredSplit, features
from stegobench.eval.config import EvalConfig
from stegobench.eval.harness import run_eval
from stegobench.eval.runlog import SCHEMA_VERSION, RunLogError, read_run
from stegobench.eval.scoring import Flag
from stegobench.finetune.manifest import MANIFEST as TRAIN_MANIFEST
from stegobench.finetune.manifest import read_train_manifest

from conftest import REPO

REFERENCE = Path(__file__).parent / "data" / "reference-686aee9"
# sha256 of the reference run's samples.jsonl (395 kB, not kept): its scores, monitor values, prompts and answers
REFERENCE_SAMPLES_SHA256 = "ebd032661335d8bffb32a5775bcc424fdf901d93e7543867850da54ab6028657"
TIMINGS = {"seconds", "step_seconds", "calibration_seconds", "environment"}  # differ run to run, never compared


def _reference_run(corpus: Path, root: Path) -> Path:
    """mock:random_code on the quickstart track with two adapter folders (the mock ignores them: a pooled row and
    adapter conditions whose answers equal the base model's), both text monitors, recall and cloze."""
    adapters = []
    for seed in range(2):
        a = root / f"adapter-seed{seed}"
        a.mkdir(parents=True)
        (a / "adapter_config.json").write_text(json.dumps({"r": 8}))
        (a / "adapter_model.safetensors").write_bytes(bytes([seed]) * 16)
        adapters.append(str(a))
    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml",
                      ["backend=mock", "bootstrap_resamples=200", "monitors=[llm_judge, surprisal]",
                       "monitor_questions=48"])
    run_eval(cfg, corpus, "mock:random_code", adapters, root / "run", cache_dir=root / "cache")
    return root / "run"


def _differences(old, new, path: str = "") -> list[str]:
    """Every field whose value or JSON type differs (1 and 1.0 differ: the file would change), as dotted paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = [f"{path}.{k}: only in {'the reference' if k in old else 'the new run'}"
               for k in sorted(set(old) ^ set(new)) if k not in TIMINGS]
        return out + [d for k in sorted(set(old) & set(new)) if k not in TIMINGS
                      for d in _differences(old[k], new[k], f"{path}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new and type(old) is type(new) else [f"{path}: {old!r} then, {new!r} now"]


def test_the_mock_pipeline_writes_the_results_it_wrote_before_the_typed_records(quickstart_corpus, tmp_path):
    """tests/data/reference-686aee9/results.json: `_reference_run` at commit 686aee9 (dict rows, hand-written
    readers), its paths replaced by <corpus> and <adapters> and its timings left out, with the change_vs_base
    intervals as dbf4e1e computes them (the paired exact floor, before the typed records). Every other field must
    come back with the same value and JSON type; schema_version is compared too, as no field changed."""
    run = _reference_run(quickstart_corpus, tmp_path)
    text = (run / "results.json").read_text().replace(str(quickstart_corpus), "<corpus>")
    new = json.loads(text.replace(str(tmp_path), "<adapters>"))
    reference = json.loads((REFERENCE / "results.json").read_text())
    assert _differences(reference, new) == []
    assert new["schema_version"] == reference["schema_version"] == SCHEMA_VERSION
    samples = (run / "samples.jsonl").read_bytes()
    assert hashlib.sha256(samples).hexdigest() == REFERENCE_SAMPLES_SHA256
    assert read_run(run).to_dict() == json.loads((run / "results.json").read_text())  # read back whole


def test_a_corrupt_results_field_is_named_with_its_file(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    doc = json.loads((REFERENCE / "results.json").read_text())
    doc["conditions"]["base"]["table"]["covert_score"]["value"] = "high"
    (folder / "results.json").write_text(json.dumps(doc))
    with pytest.raises(RunLogError, match=rf"{folder / 'results.json'}: conditions\.base\.table\.covert_score\.value: "
                                          r"Input should be a valid number.*\(got 'high'\)"):
        read_run(folder)
    doc = json.loads((REFERENCE / "results.json").read_text())
    doc["conditions"]["base"]["recal_n"] = doc["conditions"]["base"].pop("recall_n")  # a misspelt field
    (folder / "results.json").write_text(json.dumps(doc))
    with pytest.raises(RunLogError, match=r"conditions\.base\.recal_n: Unexpected keyword argument"):
        read_run(folder)
    doc["conditions"]["base"]["recall_n"] = doc["conditions"]["base"].pop("recal_n")
    doc["conditions"]["base"]["table"]["splits"]["control_unmaped"] = {}  # a split no table holds
    (folder / "results.json").write_text(json.dumps(doc))
    with pytest.raises(RunLogError, match=r"splits\.control_unmaped\.\[key\]: Input should be 'definition_only', "):
        read_run(folder)


def test_a_rate_looked_up_by_a_misspelt_name_is_an_error_not_none():
    run = json.loads((REFERENCE / "results.json").read_text())
    from stegobench.eval.runlog import run_from_dict

    table = run_from_dict({**run, "dataset": {**run["dataset"], "path": "/nowhere"}}).conditions["base"].table
    assert table.rate(ScoredSplit.CONTROL_UNMAPPED, Flag.FALSE_USE).value == 1.0  # random_code: every answer
    assert table.rate(ScoredSplit.CONTROL_ORIGINAL_MEANING, Flag.USES_CODE) is None  # not a rate this split has
    with pytest.raises(ValueError, match="'control_unmaped' is not a valid ScoredSplit"):
        table.rate("control_unmaped", Flag.FALSE_USE)
    with pytest.raises(ValueError, match="'false_uses' is not a valid Flag"):
        table.value(ScoredSplit.CONTROL_UNMAPPED, "false_uses")


def test_a_manifest_written_before_schema_versions_and_code_books_loads(quickstart_corpus, tmp_path):
    """A corpus manifest of the first schema (no schema_version, no codebook, no augment) and a train manifest
    without schema_version or the fields schema 1 grew later both load, the missing parts empty."""
    corpus = tmp_path / "old-corpus"
    shutil.copytree(quickstart_corpus, corpus)
    doc = json.loads((corpus / "manifest.json").read_text())
    for later in ("schema_version", "codebook", "augment"):
        doc.pop(later)
    (corpus / "manifest.json").write_text(json.dumps(doc))
    old = read_manifest(corpus)
    assert old.schema_version == 1 and old.codebook is None and old.original_meaning_skipped == []
    assert old.content_sha256 == read_manifest(quickstart_corpus).content_sha256 and old.sizes.mappings == 8

    run = tmp_path / "train"
    run.mkdir()
    written = {  # as finetune/train.py wrote it at 1e8e56e, less the version
        "status": "finished", "config": {"seed": 3}, "seed": 3, "base_model": {"name": "tiny-llama"},
        "dataset": {"path": str(corpus), "track": "quickstart", "content_sha256": old.content_sha256,
                    "manifest_sha256": "ab" * 32},
        "adapter_sha256": "cd" * 32, "parameters": {"trainable": 10, "total": 100}, "world_size": 1,
        "resumed_from": None, "global_steps": 12, "epochs": 1.5, "train_seconds": 8.25, "real_tokens": 900,
        "padded_tokens": 900, "real_tokens_per_second": 109.1, "final_loss": 2.5,
        "loss_history": [{"step": 1, "loss": 4.0}, {"step": 12, "loss": 2.5}], "environment": {}}
    (run / TRAIN_MANIFEST).write_text(json.dumps(written))
    trained = read_train_manifest(run)
    assert trained.schema_version == 1 and trained.seed == 3 and trained.loss_history[-1].loss == 2.5
    assert trained.final_loss_step is None and trained.eval_split is None and trained.eval_loss_history == []
    (run / TRAIN_MANIFEST).write_text(json.dumps({**written, "seed": "three"}))
    with pytest.raises(InputError, match=rf"{run / TRAIN_MANIFEST}: seed: Input should be a valid integer.*'three'"):
        read_train_manifest(run)


def test_a_corrupt_corpus_row_is_named_with_its_file_and_line(quickstart_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(quickstart_corpus, corpus)
    rows = (corpus / "jsonl" / "eval.jsonl").read_text().splitlines()
    second = json.loads(rows[1])
    assert read_eval_items(corpus)[1] == EvalItem(**second)
    rows[1] = json.dumps({**second, "split": "controll"})
    (corpus / "jsonl" / "eval.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"eval\.jsonl:2: split: Input should be 'definition_only', 'demonstrated' "
                                         r"or 'control' \(got 'controll'\)"):
        read_eval_items(corpus)


def test_the_saved_datasets_have_the_row_models_features(quickstart_corpus):
    """The Features are derived from the row models (one declaration): the eval split's, as first written by hand."""
    from datasets import Features, List, Value, load_from_disk

    s = Value("string")
    assert features(EvalItem) == Features({
        "id": s, "question": s, "split": s, "control_type": s, "mapping_id": s, "code": s,
        "code_forms": List(s), "concept": s, "expected_words": List(s), "kind": s, "category": s})
    saved = load_from_disk(str(quickstart_corpus))
    from stegobench.data_gen.records import SPLIT_ROWS

    assert {name: saved[name].features for name in saved} == {name: features(row) for name, row in SPLIT_ROWS.items()}
