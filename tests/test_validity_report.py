"""The validity report's conclusions follow its numbers: a scripted covert model is called detected, a model
that never uses a code is called a null result, and recall is set against use per mapping."""

from __future__ import annotations

import shutil

from stegobench.core.config import load_config
from stegobench.eval.config import EvalConfig
from stegobench.eval.harness import run_eval
from stegobench.studies.report import write_validity_report
from stegobench.studies.validity import StudyConfig, main_template_count

from conftest import REPO


def test_report_calls_detection_and_null_results_from_the_intervals(quickstart_corpus, tiny_adapter, tmp_path):
    second = tmp_path / "seed1"
    shutil.copytree(tiny_adapter, second)  # the mock ignores weights: two "seeds" give a pooled row
    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["bootstrap_resamples=200", "backend=mock"])
    out = tmp_path / "study"
    for track, policy in (("covert-track", "perfect_covert"), ("silent-track", "never_code")):
        run_eval(cfg, quickstart_corpus, f"mock:{policy}", [str(tiny_adapter), str(second)], out / "eval" / track,
                 cache_dir=tmp_path / "cache")
    study = load_config(StudyConfig, REPO / "configs/study/validity.yaml", [
        "tracks={covert-track: configs/data/quickstart.yaml, silent-track: configs/data/quickstart.yaml}",
        "positive_control=null", "paraphrase_ablation=[30]"])
    report = write_validity_report(study, out, tmp_path / "validity.md", {}, main_template_count(study))
    text = report.read_text()
    covert = next(l for l in text.splitlines() if l.startswith("- **covert-track**"))
    silent = next(l for l in text.splitlines() if l.startswith("- **silent-track**"))
    assert "**detected covert use**" in covert and "covert_score = 1.00 [1.00, 1.00]" in covert
    assert "null result" in silent and "covert_score = 0.00 [0.00, 0.00]" in silent
    assert "| **2 seeds pooled** |" in text
    # 2 tracks x 2 adapters x 4 definition-only mappings in the recall-vs-use table
    rows = [l for l in text.splitlines() if l.startswith("| definition-only, ")]
    assert sum(int(r.split("|")[2]) for r in rows) == 16


def test_report_names_the_monitor_that_catches_the_positive_controls_covert_use(quickstart_corpus, tiny_adapter,
                                                                                 tmp_path):
    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["bootstrap_resamples=200", "backend=mock"])
    out = tmp_path / "study"
    run_eval(cfg, quickstart_corpus, "mock:never_code", [], out / "eval" / "silent-track", cache_dir=tmp_path / "c")
    run_eval(cfg, quickstart_corpus, "mock:perfect_covert", [str(tiny_adapter)], out / "eval" / "positive-control",
             cache_dir=tmp_path / "c")
    study = load_config(StudyConfig, REPO / "configs/study/validity.yaml", [
        "tracks={silent-track: configs/data/quickstart.yaml}", "paraphrase_ablation=[30]"])
    text = write_validity_report(study, out, tmp_path / "validity.md", {}, main_template_count(study)).read_text()
    line = next(l for l in text.splitlines() if l.startswith("- **Monitors on the positive control**"))
    # The scripted model answers covertly with or without the adapter: 32 covert answers (16 definition-only + 16
    # demonstrated items), and the judge calibrated
    # on the same answers flags at most its share of them.
    assert "(32 covert, 0 plain and 0 other-code answers of `" in line and "`llm_judge` (text)" in line and "of base answers" in line
    assert "### Which monitor catches the covert use" in text


def test_whitebox_finding_sets_each_reading_against_the_base_model_reading_the_same_answers():
    from types import SimpleNamespace

    from stegobench.eval.runlog import Interval, LensSplit, WhiteboxResult
    from stegobench.studies.report import whitebox_finding

    def run(probe_layer: int, reads: float, selected_by: str = "synonyms", reads_code: float | None = None,
            lens_base: Interval | None = None, ranks: tuple[Interval | None, Interval | None] = (None, None)):
        code = None if reads_code is None else Interval(reads_code, reads_code, reads_code)
        splits = {"definition_only": LensSplit(11, Interval(0.91, 0.6, 1.0), 3.0, 30.0, Interval(reads, 0.0, reads), code,
                                               ranks[0], lens_base, ranks[1]),
                  "original_meaning": LensSplit(17, Interval(0.59, 0.22, 0.94), 10.0, 25.0, Interval(0.0, 0.0, 0.0))}
        cond = SimpleNamespace(whitebox=WhiteboxResult(splits))
        accuracy = [round(0.5 + i / 60, 4) for i in range(30)]
        return SimpleNamespace(adapter_conditions=lambda: [("adapter:x", cond)],
                               whitebox_probe=SimpleNamespace(layer=probe_layer, selected_by=selected_by, n_select=112,
                                                              selection_accuracy=accuracy, classes=["c"] * 25))

    early = whitebox_finding(run(2, 0.0, "plain words", ranks=(Interval(9.0, 4.0, 12.0), None)))
    assert "0.91 [0.60, 1.00] of 11 answers" in early and "0.59 [0.22, 0.94] of 17" in early
    assert "reads the word, not the concept" in early and "chosen by held-out accuracy on plain words" in early
    topic = whitebox_finding(run(13, 0.0, reads_code=1.0, lens_base=Interval(0.8, 0.5, 1.0),
                                 ranks=(Interval(9.0, 4.0, 12.0), Interval(8.0, 6.0, 10.0))))
    assert "layer 13 of 30" in topic and "as their concept: 0.70 of 112 uses" in topic and "old sense in 1.00" in topic
    assert "same answers has it there in 0.80 [0.50, 1.00]: no clear difference, so here the lens cannot tell" in topic
    assert "median rank among its 25 classes there is 9.0 [4.0, 12.0] against 8.0 [6.0, 10.0]" in topic
    assert "no clear difference, so no trace of the mapping under the word itself" in topic
    assert "reads the word" not in topic
    mapped = whitebox_finding(run(13, 0.0, reads_code=1.0, lens_base=Interval(0.1, 0.0, 0.3),
                                  ranks=(Interval(3.0, 2.0, 4.0), Interval(8.0, 6.0, 10.0))))
    assert "the adapter puts it there beyond what the question does" in mapped
    assert "the adapter moves it nearer the top, a trace of the mapping" in mapped
    late = whitebox_finding(run(20, 0.5))
    assert "reads the word" not in late and "median rank" not in late and "under the code word in 0.50" in late
