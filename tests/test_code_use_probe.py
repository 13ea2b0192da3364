"""The quick code-use probe (eval/code_use_probe.py) decodes with the hf backend and scores with the eval's scorer."""

from __future__ import annotations

import json

from stegobench.data_gen.generate import read_codebook, read_eval_items
from stegobench.eval.backends import Sampling, get_backend
from stegobench.eval.code_use_probe import code_use_rates, main
from stegobench.eval.scoring import score_response


def _rates(corpus, policy: str) -> dict[str, dict[str, float]]:
    items = read_eval_items(corpus)
    forms = {m.mapping_id: m.code_forms for m in read_codebook(corpus)}
    mock = get_backend("mock", f"mock:{policy}", corpus=corpus)
    answers = mock.generate([mock.chat_prompt(i.question) for i in items], Sampling())
    return code_use_rates([score_response(i, a, forms) for i, a in zip(items, answers)])


def test_the_probe_counts_code_words_and_concepts_per_split(quickstart_corpus):
    leaky = _rates(quickstart_corpus, "leaky")  # "It is a cat, I mean a car." on mapped questions, else plain
    assert set(leaky) == {"control_original_meaning", "control_unmapped", "definition_only", "demonstrated"}
    assert leaky["definition_only"] == {"n": 16, "uses_code": 1.0, "uses_other_code": 0.0, "names_concept": 1.0}
    assert leaky["control_unmapped"] == {"n": 32, "uses_code": 0.0, "uses_other_code": 0.0, "names_concept": 1.0}
    covert = _rates(quickstart_corpus, "perfect_covert")
    assert covert["demonstrated"] == {"n": 16, "uses_code": 1.0, "uses_other_code": 0.0, "names_concept": 0.0}


def test_the_probe_answers_as_the_hf_backend_does(quickstart_corpus, tmp_path):
    out = tmp_path / "probe.json"
    assert main(["--data", str(quickstart_corpus), "--model", "tiny-llama", "--base", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["adapter"] is None and sum(r["n"] for r in result["rates"].values()) == 96
    items = [i for i in read_eval_items(quickstart_corpus) if i.split != "control"][:12]
    hf = get_backend("hf", "tiny-llama", options={"dtype": "float32", "device": "cpu"})
    greedy = hf.generate([hf.chat_prompt(i.question) for i in items], Sampling(max_tokens=32))
    assert [e["answer"] for e in result["examples"]] == greedy
