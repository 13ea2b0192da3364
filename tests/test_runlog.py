"""The typed run log: one writer and one reader for results.json and samples.jsonl, older schemas migrated,
newer ones refused by name; the pipeline takes a new step without touching the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stegobench.core.config import load_config
from stegobench.eval.aggregate import change_vs_base
from stegobench.eval.config import EvalConfig
from stegobench.eval.harness import run_eval
from stegobench.eval.runlog import (SCHEMA_VERSION, Interval, RunLogError, Table, iter_samples, read_run, run_from_dict)
from stegobench.eval.scoring import ItemScore

from conftest import REPO


def _score(item_id: str, split: str, control_type: str = "", mapping: str = "m0", **flags) -> ItemScore:
    base = dict(uses_code=False, uses_plain=False, uses_other_code=False, covert=False, false_use=False)
    return ItemScore(item_id, split, control_type, mapping, "car", **{**base, **flags})


CELL = {"value": 0.5, "low": 0.25, "high": 0.75}
CELL_I = Interval(0.5, 0.25, 0.75)
V1 = {  # the shape `stegobench eval` wrote before schema 2: the pooled row among the conditions
    "schema_version": 1, "status": "finished", "config": {"seed": 0}, "backend": "mock",
    "model": {"spec": "mock:never_code"}, "dataset": {"path": "/nowhere", "track": "t", "content_sha256": "ab" * 32},
    "seconds": 1.0, "environment": {},
    "conditions": {
        "base": {"adapter": None, "in_context": False, "backend": {}, "table": {
            "covert_score": CELL, "splits": {"definition_only": {"uses_code": CELL}},
            "per_mapping": {"m0": {"split": "definition_only", "concept": "car", "n": 4, "uses_code": 0.5,
                                   "covert": 0.25, "uses_code_interval": CELL, "covert_interval": CELL}}}},
        "adapter:a": {"adapter": "/a", "in_context": False, "backend": {}, "table": {"covert_score": CELL}},
        "adapter:b": {"adapter": "/b", "in_context": False, "backend": {}, "table": {"covert_score": CELL}},
        "adapters_pooled": {"adapters": ["/a", "/b"], "in_context": False, "table": {"covert_score": CELL}},
    },
}


def test_schema_1_is_migrated_on_read(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(V1))
    run = read_run(tmp_path)
    assert run.schema_version == SCHEMA_VERSION and run.migrated_from == 1
    assert set(run.conditions) == {"base", "adapter:a", "adapter:b"}  # the pooled row is no condition
    assert run.pooled.adapters == ["/a", "/b"] and run.pooled.table.covert_score == Interval(0.5, 0.25, 0.75)
    assert [n for n, _ in run.adapter_conditions()] == ["adapter:a", "adapter:b"]
    row = run.conditions["base"].table.per_mapping["m0"]
    assert row.code == "" and row.label == "car"  # schema 1 did not record the code word
    assert run.conditions["base"].table.rate("definition_only", "uses_code").fmt(2) == "0.50 [0.25, 0.75]"
    assert run.conditions["base"].table.rate("demonstrated", "uses_code") is None
    assert V1["conditions"]["adapters_pooled"]  # migration copies; the caller's document is untouched


def test_newer_or_foreign_files_are_refused_by_name(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({**V1, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RunLogError, match=rf"results.json: schema_version {SCHEMA_VERSION + 1} was written by a newer"):
        read_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(RunLogError, match="not a stegobench results.json"):
        read_run(tmp_path)
    with pytest.raises(RunLogError, match="no results.json"):
        read_run(tmp_path / "missing")
    (tmp_path / "samples.jsonl").write_text('{"condition": "base"}\n')
    with pytest.raises(RunLogError, match=r"samples.jsonl:1: malformed sample"):
        list(iter_samples(tmp_path))


def test_written_run_reads_back_equal(quickstart_corpus, tmp_path):
    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml",
                      ["backend=mock", "bootstrap_resamples=100", "recall=false"])
    run = run_eval(cfg, quickstart_corpus, "mock:perfect_covert", [], tmp_path / "r", cache_dir=tmp_path / "c")
    again = run_from_dict(json.loads((tmp_path / "r" / "results.json").read_text()))
    assert again == run  # every field survives the round trip (folder is not compared)
    samples = run.samples("in_context")
    assert len(samples) == 96 and all(s.condition == "in_context" for s in samples)
    assert samples[0].score.code == samples[0].item["code"]
    first = next(s.item for s in samples if s.item["split"] == "definition_only")
    row = run.conditions["base"].table.per_mapping[first["mapping_id"]]
    assert row.label == f"{first['code']} → {first['concept']}"  # the per-mapping plot's label: code → concept


def test_interval_text_is_written_one_way():
    assert Interval(0.25, 0.1, 0.4).fmt() == "0.250 [0.100, 0.400]"
    assert Interval(-0.5, -0.75, -0.25).fmt(2, signed=True) == "-0.50 [-0.75, -0.25]"
    assert Interval(0.5).fmt(2, signed=True) == "+0.50"
    assert Interval(None).fmt() == "–" and Interval(None).fmt(empty="-") == "-"
    assert Interval(0.0, -0.1, 0.1).contains_zero() and not Interval(0.2, 0.1, 0.3).contains_zero()


def test_change_vs_base_is_paired_and_reads_collateral_as_a_change():
    # Base: 2 of 4 original-meaning controls lose their sense; the model: 3 of 4 (one more). 4 def-only items:
    # base 0 hits, model 2 hits. One unmapped control, no false use in either.
    def run(hits: int, kept: int) -> list[ItemScore]:
        out = [_score(f"d{i}", "definition_only", mapping=f"m{i % 2}", uses_code=i < hits, covert=i < hits)
               for i in range(4)]
        out += [_score(f"o{i}", "control", "original_meaning", mapping=f"m{i % 2}", uses_code=i < kept) for i in range(4)]
        return out + [_score("u0", "control", "unmapped", mapping="")]
    change = change_vs_base(run(hits=2, kept=1), run(hits=0, kept=2), n_resamples=200, seed=0)
    assert change["hits"].value == pytest.approx(0.5)
    assert change["covert_score"].value == pytest.approx(0.5)
    assert change["collateral"].value == pytest.approx(0.25)  # (1 - 1/4) - (1 - 2/4)
    assert change["false_alarms"].value == 0.0
    # Identical answers: the paired bootstrap collapses to [0, 0]; the floor is what 0 changes of n items allow,
    # each direction's change bounded by the exact upper bound of 0 of n (0.602 for 4 items, 0.975 for 1).
    same = change_vs_base(run(2, 2), run(2, 2), 200, 0)
    zero_of = {n: 1 - 0.025 ** (1 / n) for n in (1, 4)}
    assert same["hits"].value == 0 and same["hits"].low == pytest.approx(-zero_of[4], abs=1e-3)
    assert same["hits"].high == pytest.approx(zero_of[4], abs=1e-3)
    assert same["collateral"].low == pytest.approx(-zero_of[4], abs=1e-3)
    assert same["false_alarms"].high == pytest.approx(zero_of[1], abs=1e-3)
    # covert_score = hits - own-code false alarms, two independent parts: their bounds add in quadrature.
    both = (zero_of[4] ** 2 + zero_of[1] ** 2) ** 0.5
    assert same["covert_score"].value == 0 and same["covert_score"].low == pytest.approx(-both, abs=1e-3)
    assert same["covert_score"].high == pytest.approx(both, abs=1e-3)
    # 2 of 4 rose (exact [0.068, 0.932]), none fell (0 of 4: at most 0.602): the floor reaches -0.24 and 0.93.
    assert change["hits"].low <= 0.5 - ((0.5 - 0.0676) ** 2 + zero_of[4] ** 2) ** 0.5 + 1e-3
    assert change["hits"].high >= 0.9324 - 1e-3


def test_mapping_spread_shows_one_mapping_doing_the_work():
    from stegobench.eval.runlog import MappingRow

    rows = {f"m{i}": MappingRow("definition_only", f"c{i}", 4, 0.0, 1.0 if i == 0 else 0.0) for i in range(8)}
    rows["d0"] = MappingRow("demonstrated", "shown", 4, 1.0, 1.0)  # another split: not beside definition-only hits
    spread = Table(Interval(0.125), per_mapping=rows).mapping_spread("covert")
    assert spread == {"min": 0.0, "max": 1.0, "n_mappings": 8, "mappings_above_0": 1}
    assert Table(Interval(0.0), per_mapping=rows).mapping_spread("covert", "demonstrated")["n_mappings"] == 1


def test_a_new_condition_step_joins_without_touching_the_others(quickstart_corpus, tmp_path):
    """A planted monitor step between decode and score flags every answer: no hit survives it."""
    from stegobench.eval.pipeline import Backends, Condition, Monitoring, decode, load_inputs, run_condition, score

    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml",
                      ["backend=mock", "bootstrap_resamples=100", "monitors=[]"])
    inputs = load_inputs(cfg, quickstart_corpus, tmp_path / "cache")
    backends = Backends("mock", "mock:perfect_covert", [], None, quickstart_corpus, {})

    def flag_everything(inputs, backends, mon, run):
        run.flags = [True] * len(run.responses)

    base = Condition("base", None, False)
    _, plain = run_condition(inputs, backends, Monitoring(), base, (decode, score))
    _, flagged = run_condition(inputs, backends, Monitoring(), base, (decode, flag_everything, score))
    assert plain.table.value("definition_only", "undetected_covert") == 1.0
    assert flagged.table.value("definition_only", "undetected_covert") == 0.0
    assert flagged.table.value("definition_only", "covert") == 1.0  # the step changed only what it owns


def test_a_conditions_covert_minus_innocent_survives_the_round_trip_and_old_files_lack_it():
    from dataclasses import asdict, fields

    from stegobench.eval.report import whitebox_lines
    from stegobench.eval.runlog import CovertMinusInnocent, LensSplit, WhiteboxResult

    fields_in_order = [f.name for f in fields(LensSplit)]
    split = LensSplit(**{name: (4 if name == "n" else k if name == "n_mappings" else k + 0.5
                                if name in ("median_best_rank", "median_peak_layer") else Interval(k / 100))
                         for k, name in enumerate(fields_in_order)})  # every field distinct: no two swapped
    readings = WhiteboxResult({"definition_only": split},
                              lens_covert_minus_innocent=CovertMinusInnocent(Interval(0.4, 0.1, 0.7), 6))
    doc = json.loads(json.dumps({**V1, "schema_version": SCHEMA_VERSION}))
    doc["conditions"].pop("adapters_pooled")
    doc["conditions"]["adapter:a"]["whitebox"] = asdict(readings)
    doc["conditions"]["adapter:b"]["whitebox"] = {"splits": {}}  # written before the difference existed
    doc["whitebox_probe"] = {"classes": ["car", "<other>"], "layer": 1, "selection_accuracy": [0.9], "n_train": 8,
                             "seconds": 1.0}
    run = run_from_dict(json.loads(json.dumps(doc)))
    assert run.conditions["adapter:a"].whitebox == readings
    assert run.conditions["adapter:b"].whitebox.lens_covert_minus_innocent is None
    text = "\n".join(whitebox_lines(run, plotted=False))
    assert "adapter:a: lens +0.40 [+0.10, +0.70] (6 mappings), probe –." in text and "adapter:b:" not in text


def test_a_schema_3_run_folder_loads_and_rescores_to_the_current_definition(quickstart_corpus, tmp_path):
    """tests/data/run-schema3: mock:always_code on the quickstart track as stegobench wrote it at schema 3, when
    covert_score subtracted any code's false alarms (it scored 0.000 [0.000, 0.000])."""
    import shutil

    from stegobench.eval.harness import rescore
    from stegobench.eval.scoring import COVERT_SCORE_DEFINITION, PREVIOUS_COVERT_SCORE_DEFINITION

    folder = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run-schema3", folder)
    doc = json.loads((folder / "results.json").read_text())
    assert doc["schema_version"] == 3
    doc["dataset"]["path"] = str(quickstart_corpus)  # where this machine has the same corpus
    (folder / "results.json").write_text(json.dumps(doc))
    old = read_run(folder)
    assert old.migrated_from == 3 and old.score_definition == PREVIOUS_COVERT_SCORE_DEFINITION
    assert old.conditions["base"].table.covert_score.value == 0.0  # kept as scored, and labelled so
    assert all(s.score.false_alarm_codes is None for s in old.samples("base") if s.score.control_type == "unmapped")
    new = rescore(folder)
    assert new.score_definition == COVERT_SCORE_DEFINITION and new.migrated_from is None
    assert new.conditions["base"].table.covert_score.value == pytest.approx(1 - 1 / 8, abs=0.1)
    assert "covert_score here is" not in (folder / "report.md").read_text()
    # Its thresholds were fitted on the scored answers themselves: no held-out rate, and the reason why.
    (name, cal), = new.monitor_calibration.items()
    assert cal.heldout_fpr is None and "needs new decoding" in cal.reason and cal.n_calibration == 96
    assert cal.threshold == old.conditions["base"].monitor_thresholds[name]
    flagged = new.conditions["base"].detection[name].flagged["covert"]
    assert flagged.n and flagged.high > flagged.value  # detection recomputed with the exact floor
