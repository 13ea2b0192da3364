"""Paraphrase augmentation (#14): a local model's extra definitions are kept only when they state the mapping and
leak nothing; the scripted mock paraphraser drives the real `stegobench gen`, its cache and the manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stegobench.cli.main import main
from stegobench.core.config import ConfigError, load_config
from stegobench.data_gen.augment import HeldoutIndex, filter_candidates
from stegobench.data_gen.generate import generate, prepare
from stegobench.data_gen.track import TrackConfig

from conftest import home_with_models

BOOK = """name: aug
paraphrases_per_mapping: 4
demonstrations_per_mapping: 2
plain_demonstrations: 4
n_unmapped_controls: 3
codebook:
  - {code: cat, concept: car, role: definition_only}
  - {code: tulip, concept: hammer, role: demonstrated}
"""
AUGMENT = "augment: {model: 'mock:paraphraser', backend: mock, n_per_mapping: 3, candidates_per_mapping: 12}\n"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEGOBENCH_HOME", str(home_with_models(tmp_path / "home")))  # the augment cache lives here


def _track(tmp_path: Path, body: str = AUGMENT) -> Path:
    path = tmp_path / "aug.yaml"
    path.write_text(BOOK + body, encoding="utf-8")
    return path


@pytest.fixture
def book(tmp_path):
    prep = prepare(load_config(TrackConfig, _track(tmp_path, "")))
    return prep.codebook


def test_the_filter_refuses_each_kind_of_bad_sentence_by_its_reason(book):
    cat = next(m for m in book.mappings if m.code.word == "cat")
    others = tuple(f for m in book.mappings if m is not cat for f in (*m.code_forms, *m.concept.term.forms))
    heldout = HeldoutIndex(["What do most people drive to work every morning?"])
    existing = ["In our usage, a cat is a car."]
    candidates = {
        "empty": "  ",
        "length": "A cat: a car.",
        "unfinished": "In our code the word cat means a car, the vehicle that most people drive to",
        "no_code": "People drive this road vehicle to work every single day.",
        "no_concept": "The cat sat quietly on the warm mat by the door.",
        "other_mapping": "A cat is a car, and a tulip is something else entirely here.",
        "heldout_text": "Ask what do most people drive to work every morning: a cat, which is a car.",
        "near_duplicate": "In our usage, a cat is a car!",
        "kept": "Among those who know the code, the word cat simply means a car.",
        "surplus": "Whoever writes cat in our notes is talking about a car on the road.",
    }
    kept, refused = filter_candidates(cat, list(candidates.values()), others, heldout, existing, keep=1)
    assert kept == [candidates["kept"]]
    assert refused == Counter({reason: 1 for reason in candidates if reason != "kept"})


def test_gen_keeps_scripted_paraphrases_records_them_and_reads_the_cache_the_second_time(tmp_path, monkeypatch,
                                                                                          capsys):
    from stegobench.data_gen.augment import ScriptedParaphraser

    calls = []
    real = ScriptedParaphraser.complete
    monkeypatch.setattr(ScriptedParaphraser, "complete", lambda self, t, *a: calls.append(len(t)) or real(self, t, *a))
    path = _track(tmp_path)
    assert main(["gen", "--config", str(path), "--out", str(tmp_path / "a")]) == 0
    assert "augment        6 of 24 paraphrases from mock:paraphraser kept" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    aug = manifest["augment"]
    # 12 attempts per mapping: every fifth names no code (2), 8 sentences cycle (attempts 9 and 11 repeat 1 and 3),
    # 3 are kept and the rest are surplus.
    assert (aug["asked"], aug["kept"], aug["kept_per_mapping"]) == (24, 6, {"m00": 3, "m01": 3})
    assert {k: v for k, v in aug["rejected"].items() if v} == {"no_code": 4, "near_duplicate": 4, "surplus": 10}
    train = [json.loads(line) for line in (tmp_path / "a" / "jsonl" / "train.jsonl").read_text().splitlines()]
    added = [d for d in train if d["template_id"] == "augment"]
    assert len(added) == 6 and all(d["kind"] == "definition" and d["code"] in d["text"] for d in added)
    questions = [json.loads(line)["question"] for line in (tmp_path / "a" / "jsonl" / "eval.jsonl").read_text().splitlines()]
    assert not any(q.lower() in d["text"].lower() for q in questions for d in added)
    assert calls == [24]  # one call for every request of the track
    assert main(["gen", "--config", str(path), "--out", str(tmp_path / "b")]) == 0
    assert calls == [24]  # the second gen read the cache, and wrote the same corpus
    again = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert again["content_sha256"] == manifest["content_sha256"] and again["augment"] == aug


def test_a_track_without_augment_is_unchanged_by_the_feature(tmp_path):
    plain = prepare(load_config(TrackConfig, _track(tmp_path, "")))
    assert plain.manifest.augment is None
    assert not [d for d in plain.corpus.train if d.template_id == "augment"]


def test_validate_checks_an_augment_track_without_running_its_model(tmp_path, capsys):
    assert main(["validate", "--track", str(_track(tmp_path))]) == 0
    assert "augment        not run (validate only)" in capsys.readouterr().out
    assert not (tmp_path / "home" / "augment").exists()


def test_generate_runs_the_augment_model_itself_with_nothing_handed_down(tmp_path):
    """data_gen gets its paraphraser from the model layer: any caller of `generate` (the CLI, the leaderboard
    worker, the validity study) augments the same way, the same corpus as `stegobench gen` writes."""
    result = generate(load_config(TrackConfig, _track(tmp_path)), tmp_path / "out")
    assert (result.manifest.augment["asked"], result.manifest.augment["kept"]) == (24, 6)
    assert main(["gen", "--config", str(_track(tmp_path)), "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    assert cli["content_sha256"] == result.manifest.content_sha256


def test_the_causal_lm_paraphraser_decodes_as_the_hf_backend_does(tmp_path):
    """One model layer: the augment model's sampled completions equal eval's hf backend's on the same prompts."""
    from stegobench.core.causal_lm import Sampling
    from stegobench.data_gen.augment import CausalLMParaphraser, paraphraser_for
    from stegobench.data_gen.track import AugmentConfig
    from stegobench.eval.backends import get_backend

    cfg = AugmentConfig(model="tiny-llama", backend="hf")
    paraphraser = paraphraser_for(cfg)
    assert isinstance(paraphraser, CausalLMParaphraser) and paraphraser.identity()["name"] == "tiny-llama"
    texts = ["Write one sentence about a cat.", "Say what a car is."]
    hf = get_backend("hf", "tiny-llama")
    expected = hf.generate([hf.chat_prompt(t) for t in texts], Sampling(max_tokens=6, temperature=0.8, seed=3))
    assert paraphraser.complete(texts, temperature=0.8, max_tokens=6, seed=3) == expected


@pytest.mark.parametrize("body, expected", [
    ("augment: {model: 'mock:paraphraser', n_per_mapping: 0}\n", "augment.n_per_mapping: expected at least 1"),
    ("augment: {model: 'mock:paraphraser', n_per_mapping: 5, candidates_per_mapping: 2}\n",
     "augment.candidates_per_mapping: 2 is fewer than n_per_mapping (5)"),
    ("augment: {model: 'mock:paraphraser', temperature: 0}\n", "augment.temperature: expected a number in (0, 2]"),
    ("augment: {model: 'mock:paraphraser', backend: openai}\n", "augment.backend"),
    ("augment: {n_per_mapping: 3}\n", "missing required key 'augment.model'"),
    ("augment: {model: 'mock:paraphraser', backend: vllm}\n", "augment.backend"),
    ("augment: {model: 'mock:paraphraser'}\n",
     "augment.model: 'mock:paraphraser' with backend 'hf': the scripted test model 'mock:paraphraser' runs on "
     "backend 'mock'"),
    ("augment: {model: tiny-llama, backend: mock}\n", "augment.model: 'tiny-llama' with backend 'mock'"),
])
def test_a_bad_augment_config_is_refused_by_key(tmp_path, body, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(TrackConfig, _track(tmp_path, body))
    assert expected in str(exc.value), str(exc.value)
