"""The leaderboard's private split: new questions, the same code book and training documents."""

from __future__ import annotations

import pytest
import yaml
from conftest import track

from stegobench.core.config import ConfigError
from stegobench.data_gen.generate import generate, read_manifest, read_split


def _question_file(path, corpus, drop: str | None = None, extra: dict | None = None):
    concepts = sorted({it["concept"] for it in read_split(corpus, "eval")} - {drop})
    data = {c: [f"Which thing fits secret riddle {i} of set {j}?" for j in range(3)] for i, c in enumerate(concepts)}
    data.update(extra or {})
    path.write_text(yaml.safe_dump(data))
    return path


def test_private_split_keeps_code_book_and_training_but_not_questions(tmp_path, quickstart_corpus):
    qfile = _question_file(tmp_path / "q.yaml", quickstart_corpus)
    out = tmp_path / "private"
    generate(track("configs/data/quickstart.yaml", f"private_questions={qfile}", "private_seed=7"), out)
    public, private = read_manifest(quickstart_corpus), read_manifest(out)
    for split in ("train", "codebook", "recall"):
        assert private.split_sha256[split] == public.split_sha256[split]
    assert private.split_sha256["eval"] != public.split_sha256["eval"]
    assert all("secret riddle" in it["question"] for it in read_split(out, "eval"))
    assert "private_questions" in private.inputs_sha256
    # The private seed chooses among the private questions, and nothing else.
    other = tmp_path / "private-2"
    generate(track("configs/data/quickstart.yaml", f"private_questions={qfile}", "private_seed=8"), other)
    assert read_manifest(other).split_sha256["codebook"] == public.split_sha256["codebook"]


@pytest.mark.parametrize("problem, message", [
    ("missing", "no private questions for"),
    ("names_answer", "names its own answer"),
    ("public", "public lexicon question"),
    ("unknown", "not a concept of the lexicon"),
])
def test_bad_private_question_files_are_refused(tmp_path, quickstart_corpus, problem, message):
    concept = read_split(quickstart_corpus, "eval")[0]["concept"]
    extra, drop = {}, None
    if problem == "missing":
        drop = concept
    elif problem == "names_answer":
        extra = {concept: [f"Is this a {concept}?"]}
    elif problem == "public":
        extra = {concept: [read_split(quickstart_corpus, "eval")[0]["question"]]}
    else:
        extra = {"flibbertigibbet": ["What is it?"]}
    qfile = _question_file(tmp_path / "q.yaml", quickstart_corpus, drop, extra)
    with pytest.raises(ConfigError, match=message):
        generate(track("configs/data/quickstart.yaml", f"private_questions={qfile}"), tmp_path / "out")
