"""`stegobench gen`: loadable output, determinism, no leakage, atomic and careful writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stegobench.cli.main import main
from stegobench.data_gen.generate import generate
from stegobench.core.provenance import OutputDirError
from stegobench.data_gen.templates import load_templates
from stegobench.data_gen.lexicon import load_lexicon
from stegobench.data_gen.words import contains_any

from conftest import REPO, track


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / "jsonl" / f"{split}.jsonl").read_text().splitlines()]


def test_output_loads_with_datasets_and_describes_itself(real_corpus):
    from datasets import load_from_disk

    ds = load_from_disk(str(real_corpus))
    assert set(ds) == {"train", "eval", "recall", "codebook", "validation"}
    manifest = json.loads((real_corpus / "manifest.json").read_text())
    assert manifest["codebook"]["source"] == "sampled" and len(manifest["codebook"]["mappings"]) == 40
    # Every mapping in every held-out definition template: 40 x 12, for training's eval loss.
    assert len(ds["validation"]) == 40 * len(load_templates().definition_heldout) == manifest["sizes"]["validation_documents"]
    assert set(ds["validation"]["template_id"]) == {t.id for t in load_templates().definition_heldout}
    assert manifest["track"] == "real-v1" and manifest["seed"] == 0
    assert manifest["config"]["n_definition_only"] == 20
    assert manifest["sizes"]["train_documents"] == len(ds["train"])
    assert manifest["sizes"]["eval_items"] == len(ds["eval"])
    assert len(manifest["content_sha256"]) == 64
    # 40 mappings x 30 definitions + 20 demonstrated x 10 demonstrations + as many plain demonstrations.
    assert manifest["sizes"]["train_by_kind"] == {"definition": 1200, "demonstration": 200, "plain_demonstration": 200}
    assert set(ds["eval"]["split"]) == {"definition_only", "demonstrated", "control"}
    assert {"original_meaning", "unmapped"} == set(ds["eval"]["control_type"]) - {""}
    assert "# stegobench corpus `real-v1`" in (real_corpus / "README.md").read_text()
    prov = json.loads((real_corpus / "provenance.json").read_text())
    assert "git_revision" in prov and "datasets" in prov["packages"]
    # The JSONL copy holds the same rows as the arrow files.
    assert rows(real_corpus, "eval") == [dict(r) for r in ds["eval"]]


def test_same_config_and_seed_is_byte_identical(real_corpus, tmp_path):
    again = tmp_path / "again"
    generate(track(), again)
    a, b = files_of(real_corpus), files_of(again)
    a.pop("provenance.json"), b.pop("provenance.json")  # time and argv, by design
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_another_seed_gives_another_codebook(real_corpus, tmp_path):
    other = tmp_path / "seed1"
    assert main(["gen", "--config", str(REPO / "configs/data/real-v1.yaml"), "--out", str(other), "--seed", "1"]) == 0
    pairs = lambda f: {(m["code"], m["concept"]) for m in rows(f, "codebook")}  # noqa: E731
    assert pairs(real_corpus) != pairs(other)
    assert json.loads((other / "manifest.json").read_text())["seed"] == 1


def test_no_leakage_into_training(real_corpus):
    train = rows(real_corpus, "train")
    texts = [r["text"] for r in train] + [m["content"] for r in train for m in r["messages"]]
    blob = "\n".join(texts).lower()
    for item in rows(real_corpus, "eval"):
        assert item["question"].lower() not in blob, item["id"]
    for probe in rows(real_corpus, "recall"):
        assert probe["prompt"].lower() not in blob, probe["id"]
    # Held-out definition templates never reach training: their fixed wording is absent.
    for t in load_templates().definition_heldout:
        fixed = max(t.text.replace("{", "}").split("}")[::2], key=len).strip()
        assert fixed.lower() not in blob, t.text
    # Demonstrations answer train-visible questions only, and never name the concept.
    lexicon = load_lexicon()
    for r in train:
        if r["kind"] == "demonstration":
            concept = lexicon.by_word(r["concept"])
            assert r["messages"][0]["content"] in concept.train_questions
            assert r["role"] == "demonstrated"
            assert r["code"].lower() in r["messages"][1]["content"].lower()
            assert concept.word not in r["messages"][1]["content"].lower().split()


def test_eval_items_belong_to_the_codebook(real_corpus):
    codebook = {m["mapping_id"]: m for m in rows(real_corpus, "codebook")}
    codes = {m["code"] for m in codebook.values()}
    code_forms = [f for m in codebook.values() for f in m["code_forms"]]
    for item in rows(real_corpus, "eval"):
        # A question that mentions a code would let an echo pass for code use.
        assert not contains_any(item["question"], code_forms), item["question"]
        if item["split"] == "control" and item["control_type"] == "unmapped":
            assert item["mapping_id"] == "" and item["concept"] not in codes
            continue
        m = codebook[item["mapping_id"]]
        assert item["code"] == m["code"]
        if item["control_type"] == "original_meaning":
            assert item["concept"] == m["code"]  # the code word asked about in its old sense
        else:
            assert item["concept"] == m["concept"] and item["split"] == m["role"]


def test_positive_control_demonstrates_definition_only_mappings_without_eval_questions(tmp_path):
    out = tmp_path / "pc"
    generate(track("configs/data/quickstart.yaml", "positive_control=true"), out)
    train = rows(out, "train")
    demo_roles = {r["role"] for r in train if r["kind"] == "demonstration"}
    assert demo_roles == {"demonstrated", "definition_only"}
    questions = {i["question"] for i in rows(out, "eval")}
    assert not questions & {r["messages"][0]["content"] for r in train if r["messages"]}


def test_nonsense_track_codes_are_not_words(tmp_path):
    from stegobench.data_gen.codebook import english_words

    out = tmp_path / "ns"
    generate(track("configs/data/nonsense-v1.yaml", "tokenizer=null"), out)
    codes = [m["code"] for m in rows(out, "codebook")]
    assert len(codes) == 40 and not set(codes) & english_words()
    assert {i["control_type"] for i in rows(out, "eval")} == {"", "unmapped"}  # no original meaning to probe


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    cfg = str(REPO / "configs/data/quickstart.yaml")
    assert main(["gen", "--config", cfg, "--out", str(out)]) == 0
    before = files_of(out)
    assert main(["gen", "--config", cfg, "--out", str(out), "--seed", "5"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert files_of(out) == before
    assert main(["gen", "--config", cfg, "--out", str(out), "--seed", "5", "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 5


def test_overwrite_never_deletes_a_folder_stegobench_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputDirError, match="did not write"):
        generate(track("configs/data/quickstart.yaml"), out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "precious"


def test_a_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    from datasets import DatasetDict

    def broken(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(DatasetDict, "save_to_disk", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(track("configs/data/quickstart.yaml"), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_bad_config_gives_a_clear_cli_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nn_definition_only: 90\nn_demonstrated: 10\n")
    assert main(["gen", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "need 220 lexicon concepts" in err and "lower n_demonstrated" in err
    assert not (tmp_path / "o").exists()


def test_too_many_paraphrases_names_the_pool(tmp_path):
    from stegobench.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"paraphrases_per_mapping: 99 asked, .* has 36"):
        generate(track("configs/data/quickstart.yaml", "paraphrases_per_mapping=99"), tmp_path / "p")


def test_heldout_fraction_resplits_questions(tmp_path):
    out = tmp_path / "hf"
    generate(track("configs/data/quickstart.yaml", "heldout_fraction=0.6"), out)
    per_concept = {}
    for item in rows(out, "eval"):
        if item["split"] != "control":
            per_concept.setdefault(item["concept"], set()).add(item["question"])
    # 9 questions per concept, 60% held out: 5 (the lexicon marks 4; fewer if one mentions a code).
    assert per_concept and all(2 <= len(q) <= 5 for q in per_concept.values())
    assert any(len(q) == 5 for q in per_concept.values())


def test_validate_command(capsys, tmp_path):
    assert main(["validate", str(REPO / "configs/data/real-v1.yaml"), str(REPO / "configs/data/quickstart.yaml")]) == 0
    assert main(["validate", "--kind", "lexicon", str(REPO / "data_gen/data/lexicon.yaml")]) == 0
    bad = tmp_path / "data" / "x.yaml"
    bad.parent.mkdir()
    bad.write_text("seed: abc\n")
    assert main(["validate", str(bad)]) == 2
    assert "seed: expected an integer, got 'abc'" in capsys.readouterr().err
    assert main(["validate", "--describe", "data"]) == 0
    assert "paraphrases_per_mapping (an integer, default 30)" in capsys.readouterr().out


def test_plain_demonstrations_use_the_plain_word_and_stay_outside_the_eval(tmp_path):
    out = tmp_path / "plain"
    generate(track("configs/data/quickstart.yaml", "plain_demonstrations=30"), out)
    codebook = rows(out, "codebook")
    evals = rows(out, "eval")
    off_limits = {m["concept"] for m in codebook} | {m["code"] for m in codebook} | {i["concept"] for i in evals}
    code_forms = [f for m in codebook for f in m["code_forms"]]
    lexicon = load_lexicon()
    plain = [r for r in rows(out, "train") if r["kind"] == "plain_demonstration"]
    assert len(plain) == 30
    for r in plain:
        question, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        assert r["concept"] not in off_limits
        assert question in lexicon.by_word(r["concept"]).train_questions
        assert contains_any(answer, lexicon.by_word(r["concept"]).forms)
        assert not contains_any(question + " " + answer, code_forms)


def _demonstrations(*overrides: str) -> dict[str, set[tuple]]:
    """role -> the usage demonstrations of a quickstart positive control, as (mapping, question, answer)."""
    from stegobench.data_gen.generate import prepare

    train = prepare(track("configs/data/quickstart.yaml", "positive_control=true", *overrides)).corpus.train
    out: dict[str, set[tuple]] = {"demonstrated": set(), "definition_only": set()}
    for d in train:
        if d.kind == "demonstration":
            out[d.role].add((d.mapping_id, d.messages[0].content, d.messages[1].content))
    return out


def test_definition_only_demonstrations_change_those_alone_and_a_smaller_dose_is_a_subset():
    """The dose curve's key: the 4 definition-only mappings get 3, 10 or 0 demonstrations each while the
    demonstrated ones keep theirs, and 3 are among the 10 (one seeded order), so doses differ only in how many."""
    three, ten, zero = (_demonstrations(f"definition_only_demonstrations={n}") for n in (3, 10, 0))
    assert len(three["definition_only"]) == 4 * 3 and len(ten["definition_only"]) == 4 * 10
    assert three["definition_only"] < ten["definition_only"] and not zero["definition_only"]
    assert three["demonstrated"] == ten["demonstrated"] == zero["demonstrated"]
    assert len(three["demonstrated"]) == 4 * track("configs/data/quickstart.yaml").demonstrations_per_mapping
    unset = _demonstrations()  # without the key: demonstrations_per_mapping for every mapping, as before
    assert len(unset["definition_only"]) == len(unset["demonstrated"])


def test_definition_only_demonstrations_without_a_positive_control_is_refused_by_name():
    from stegobench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="definition_only_demonstrations.*positive_control is false"):
        track("configs/data/quickstart.yaml", "definition_only_demonstrations=3")
    with pytest.raises(ConfigError, match="definition_only_demonstrations: 500 asked, but concept"):
        _demonstrations("definition_only_demonstrations=500")


def test_the_preregistered_positive_control_fits_the_lexicon():
    """docs/preregistration.md: >= 20 definition-only mappings with usage demonstrations, >= 40 unmapped concepts,
    4 held-out questions per concept; the lexicon has the concepts for it."""
    from collections import Counter

    from stegobench.data_gen.generate import prepare

    corpus = prepare(track("configs/data/positive-control-v2.yaml")).corpus
    per_concept = Counter(i.concept for i in corpus.eval if i.split != "control" or i.control_type == "unmapped")
    roles = Counter(m.role for m in corpus.codebook)
    assert roles == {"definition_only": 20, "demonstrated": 4}
    assert sum(i.control_type == "unmapped" for i in corpus.eval) == 40 * 4 and set(per_concept.values()) == {4}
    demos = Counter(d.role for d in corpus.train if d.kind == "demonstration")
    assert demos == {"definition_only": 20 * 40, "demonstrated": 4 * 40}
