"""The web app and the ranking: tokens, rate limits, escaping, ordering and intervals on stored results."""

from __future__ import annotations

import json

import pytest
from conftest import leaderboard_config
from fastapi.testclient import TestClient

from stegobench.benchmark.ranking import leaderboard_rows, rank_rows, render
from stegobench.benchmark.store import Store
from stegobench.benchmark.web.app import create_app
from stegobench.eval.scoring import ItemScore, covert_score
from stegobench.eval.stats import bootstrap_paired_difference


@pytest.fixture
def app(tmp_path, tiny_adapter):
    cfg = leaderboard_config(tmp_path, "submissions_per_hour=2")
    store = Store(cfg.db_url())
    return TestClient(create_app(cfg, store)), store, cfg


def _files(adapter):
    return {"adapter_config": ("whatever.json", (adapter / "adapter_config.json").read_bytes()),
            "adapter_weights": ("../../x", (adapter / "adapter_model.safetensors").read_bytes())}


FORM = {"display_name": "<script>alert('x')</script>", "track": "quickstart", "base_model": "tiny-llama"}


def test_api_refuses_missing_and_wrong_tokens(app, tiny_adapter):
    client, store, _ = app
    assert client.post("/api/submissions", data=FORM, files=_files(tiny_adapter)).status_code == 401
    r = client.post("/api/submissions", data=FORM, files=_files(tiny_adapter), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert store.counts()["PENDING"] == store.counts()["REJECTED"] == 0  # nothing stored


def test_api_accepts_a_good_adapter_then_rate_limits(app, tiny_adapter):
    client, store, _ = app
    auth = {"Authorization": f"Bearer {store.add_token('alice')}"}
    r = client.post("/api/submissions", data=FORM, files=_files(tiny_adapter), headers=auth)
    assert r.status_code == 201 and r.json()["status"] == "PENDING", r.json()
    assert store.get(r.json()["id"])["submitter"] == "alice"  # the token names the submitter
    r = client.post("/api/submissions", data={**FORM, "track": "nope"}, files=_files(tiny_adapter), headers=auth)
    assert r.status_code == 422 and "unknown track" in r.json()["reason"]
    r = client.post("/api/submissions", data=FORM, files=_files(tiny_adapter), headers=auth)
    assert r.status_code == 429 and r.headers["Retry-After"]


def test_pages_escape_user_text(app, tiny_adapter):
    client, store, _ = app
    auth = {"Authorization": f"Bearer {store.add_token('<b>bob</b>')}"}
    sid = client.post("/api/submissions", data=FORM, files=_files(tiny_adapter), headers=auth).json()["id"]
    for url in ("/queue", f"/submission/{sid}"):
        html = client.get(url).text
        assert "<script>alert" not in html and "&lt;script&gt;alert" in html
        assert "<b>bob</b>" not in html
    assert client.get("/openapi.json").json()["paths"]["/api/submissions"]


def test_plot_route_serves_only_named_report_images(app):
    client, _, _ = app
    assert client.get("/submission/1/plot/..%2F..%2Fleaderboard.db").status_code == 404
    assert client.get("/track/..%2F..%2Fx").status_code == 404


def _score(item: str, mapping: str, split: str, covert: bool = False, false_use: bool = False) -> ItemScore:
    control = "unmapped" if split == "control" else ""
    return ItemScore(item, split, control, mapping, "car", covert, False, False, covert, false_use,
                     false_alarm_codes=("m0",) if false_use else ())


def test_paired_difference_matches_hand_computed_values():
    # 4 definition-only mappings x 2 items and 4 unmapped controls. The model hits mapping m0 and m1 on every
    # item (hits 0.5) and says m0's code on 1 control (m0's false alarms 0.25, the others' 0): covert_score
    # 0.5 - 0.25 x 2/8 = 0.4375. The base does nothing: 0.
    treated = [_score(f"m{m}-q{q}", f"m{m}", "definition_only", covert=m < 2) for m in range(4) for q in range(2)]
    treated += [_score(f"c{c}", "", "control", false_use=c == 0) for c in range(4)]
    base = [_score(s.item_id, s.mapping_id, s.split) for s in treated]
    point, low, high = bootstrap_paired_difference(treated, base, covert_score, 500, 0)
    assert point == pytest.approx(0.4375) and covert_score(treated) == pytest.approx(0.4375)
    assert -1.0 <= low < point < high <= 1.0
    # The base equal to the model: the difference is exactly 0 in every replicate.
    assert bootstrap_paired_difference(treated, treated, covert_score, 200, 0) == (0.0, 0.0, 0.0)


def test_ties_share_a_rank_and_are_listed_by_lower_bound_then_name():
    """A tie used to be broken by submission time, so an adapter scoring +0.000 ranked #1 above the base model at
    the same score. Equal scores now share a rank; they are listed by the interval's lower bound, then by name."""
    rows = [
        {"id": 1, "display_name": "c", "score": {"value": 0.2, "low": 0.0, "high": 0.4}, "created_at": 3.0},
        {"id": 2, "display_name": "b", "score": {"value": 0.2, "low": 0.1, "high": 0.3}, "created_at": 5.0},
        {"id": 3, "display_name": "a", "score": {"value": 0.2, "low": 0.1, "high": 0.3}, "created_at": 9.0},  # later
        {"id": 4, "display_name": "z", "score": {"value": 0.5, "low": -0.1, "high": 0.9}, "created_at": 9.0},
        {"id": 5, "display_name": "y", "score": {"value": None, "low": None, "high": None}, "created_at": 1.0},
    ]
    ranked = rank_rows(rows)
    assert [r["id"] for r in ranked] == [4, 3, 2, 1, 5]
    assert [r["rank"] for r in ranked] == [1, 2, 2, 2, 5]


def test_leaderboard_rows_from_stored_results(db_url):
    store = Store(db_url)
    summaries = {"a": 0.1, "b": 0.3}
    for name, value in summaries.items():
        sid, _ = store.add_submission(display_name=name, submitter="s", track="quickstart", base_model="m",
                                      revision=None, kind="base", artifact_sha256=None, size_bytes=0, dedup_key=name)
        job = store.claim("w")
        assert store.finish(job, "/r", "base-key", {"score": {"value": value, "low": value - 0.1, "high": value + 0.1},
                                                     "hits": {"value": value, "low": 0.0, "high": 1.0}})
    store.put_baseline("base-key", "quickstart", "m", "/b", {"base": {"score": {"value": 0.0, "low": 0.0, "high": 0.0}}})
    rows = leaderboard_rows(store, "quickstart")
    assert [(r["display_name"], r["rank"]) for r in rows] == [("b", 1), ("a", 2), ("m · base model", 3)]
    assert rows[2]["baseline"] and not rows[0]["baseline"]
    table = render(rows, "table")
    assert "+0.300 [+0.200, +0.400]" in table and "0.300 [0.000, 1.000]" in table
    assert render(rows, "csv").splitlines()[1].startswith("1,")
    assert "| 1 | - | b |" in render(rows, "md")  # no run folder to read: no rank range


def test_public_pages_hide_server_paths_and_sql_and_odd_ids_are_404(app, tiny_adapter):
    """Ids past 64 bits were a 500; a worker's error with a server path or SQL was shown to anyone."""
    client, store, cfg = app
    auth = {"Authorization": f"Bearer {store.add_token('alice')}"}
    sid = client.post("/api/submissions", data=FORM, files=_files(tiny_adapter), headers=auth).json()["id"]
    job = store.claim("w")
    store.fail(job, "FileNotFoundError: [Errno 2] No such file: '/srv/stegobench/leaderboard/runs/7/results.json' "
                    "(sqlite3.OperationalError) database is locked [SQL: UPDATE submissions SET x=1]", max_attempts=1)
    for url in (f"/submission/{sid}", "/queue", f"/api/submissions/{sid}"):
        text = client.get(url).text
        assert "/srv/stegobench" not in text and "UPDATE submissions" not in text, url
        assert "&lt;server path&gt;" in text or "<server path>" in text, url
    for url in (f"/submission/{2**64}", f"/api/submissions/{2**70}", "/submission/0"):
        assert client.get(url).status_code == 404, url
    assert store.get(sid)["errors"][0]["error"].startswith("FileNotFoundError")  # the operator keeps the detail


def test_detail_page_survives_a_run_folder_without_samples(app, tmp_path):
    from stegobench.benchmark.web.evidence import run_detail

    _, _, cfg = app
    run = tmp_path / "run"
    run.mkdir()
    from stegobench.eval.runlog import ConditionResult, Interval, RunLog, Table, publish_run
    from conftest import NO_CORPUS

    publish_run(RunLog("finished", {}, "mock", {}, NO_CORPUS, {"base": ConditionResult(Table(Interval(0.0)))}), [], run,
                True)
    (run / "samples.jsonl").unlink()
    sub = {"track": "quickstart", "result": {"run_dir": str(run), "summary": {"condition": "base"}}}
    assert all(g["total"] == 0 and not g["samples"] for g in run_detail(sub, cfg)["groups"])
    (run / "results.json").write_text('{"conditions": {"base": {"table": {"splits": {}}}}}')  # not a run log
    assert run_detail(sub, cfg) == {"missing": True}
    assert run_detail({**sub, "result": {"run_dir": str(tmp_path / "gone"), "summary": {}}}, cfg) == {"missing": True}


def test_pages_show_a_rows_verdict(app):
    """The verdict stored with a row (eval/findings.py) shows as a label on the board and as its sentence on the
    detail page; a row stored before verdicts existed shows none."""
    from stegobench.eval.findings import Claim, judge

    client, store, _ = app
    few = judge(Claim.SCORE_VS_BASE, "adapter:x", [(f"m{i}", 1.0) for i in range(4)]).to_record()
    for name, summary in (("few", {"score_verdict": few}), ("old", {})):
        store.add_submission(display_name=name, submitter="s", track="quickstart", base_model="m", revision=None,
                             kind="base", artifact_sha256=None, size_bytes=0, dedup_key=name)
        store.finish(store.claim("w"), "/r", "base-key",
                     {"score": {"value": 1.0, "low": 1.0, "high": 1.0}, "condition": "adapter:x", **summary})
    board = client.get("/track/quickstart").text
    assert ">too few mappings (4)</td>" in board and '<td class="verdict" title=""></td>' in board
    detail = client.get("/submission/1").text
    assert "over 4 mappings: too few mappings for a verdict" in detail
    assert "too few mappings for a verdict" not in client.get("/submission/2").text


def _finished_board(tmp_path, corpus, store):
    """A track with a base model (mock:never_code), four entries of known behaviour and their rows stored as a
    worker stores them: perfect covert use, two coin-flip adapters (covert on about half of the questions, each
    its own coin; the mock with an adapter knows the definitions), and the base model's own answers submitted as
    an entry."""
    from dataclasses import replace

    from stegobench.benchmark.ranking import summarize_condition
    from stegobench.eval.backends.mock import write_scripted_adapter
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval
    from stegobench.core.config import load_config
    from conftest import REPO

    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["backend=mock", "bootstrap_resamples=200"])
    cache = tmp_path / "cache"
    base_dir = tmp_path / "base"
    base = run_eval(replace(cfg, in_context=False), corpus, "mock:never_code", [], base_dir, cache_dir=cache)
    store.put_baseline("base-key", "quickstart", "mock:never_code", str(base_dir),
                       {"base": summarize_condition(base, "base", None, 200, 0)})
    entries = [("perfect", "mock:perfect_covert", None), ("coin-a", "mock:coin_covert", 0),
               ("coin-b", "mock:coin_covert", 1), ("same as base", "mock:never_code", None)]
    for name, model, seed in entries:
        out = tmp_path / name
        adapters = [] if seed is None else [str(write_scripted_adapter(tmp_path / f"adapter-{seed}", seed))]
        run = run_eval(replace(cfg, in_context=False, base=seed is None), corpus, model, adapters, out,
                       cache_dir=cache, names=[name] if adapters else None)
        condition = run.adapter_conditions()[0][0] if adapters else "base"
        store.add_submission(display_name=name, submitter="s", track="quickstart", base_model="mock:never_code",
                             revision=None, kind="base", artifact_sha256=None, size_bytes=0, dedup_key=name)
        store.finish(store.claim("w"), str(out), "base-key", summarize_condition(run, condition, (base_dir, "base"), 200, 0))


def test_rank_ranges_and_the_not_distinguishable_mark(app, quickstart_corpus, tmp_path):
    """Rank ranges come from one bootstrap that draws the questions once for every row: the two coin-flip entries
    overlap (2-3 each); the base model's own answers submitted as an entry tie with the base model (both rank 4 in
    every replicate), are listed after it and marked not distinguishable from it; an entry whose recall does not
    beat the base model's is marked as showing no sign it learned the definitions. On the page too."""
    from stegobench.benchmark.ranking import Learned, VersusBase, leaderboard_rows

    client, store, _ = app
    _finished_board(tmp_path, quickstart_corpus, store)
    rows = {r["display_name"]: r for r in leaderboard_rows(store, "quickstart", n_resamples=300)}
    base = rows["mock:never_code · base model"]
    assert rows["perfect"]["rank"] == 1 and rows["perfect"]["rank_range"] == {"low": 1, "high": 1}
    assert rows["perfect"]["versus_base"] == VersusBase.ABOVE.value
    coins = rows["coin-a"], rows["coin-b"]
    assert {c["rank"] for c in coins} <= {2, 3}
    assert all(c["rank_range"]["low"] <= 2 and c["rank_range"]["high"] >= 3 for c in coins), coins  # overlap
    same = rows["same as base"]
    assert same["score"]["value"] == 0 and same["rank"] == base["rank"] == 4  # a tie shares the rank
    assert same["rank_range"] == base["rank_range"] == {"low": 4, "high": 4}
    assert same["versus_base"] == VersusBase.NOT_DISTINGUISHABLE.value
    assert base["versus_base"] == VersusBase.REFERENCE.value
    # The mock knows the definitions only with an adapter: the coins learned them, perfect covert use without
    # an adapter did not (a score that says nothing about the definitions), nor did the base's own answers.
    assert all(c["learned"] == Learned.SHOWN.value for c in coins)
    assert same["learned"] == rows["perfect"]["learned"] == Learned.NONE_SHOWN.value
    assert same["recall_vs_base"]["low"] <= 0 <= same["recall_vs_base"]["high"]
    board = client.get("/track/quickstart").text
    order = [board.index(f">{n}<") for n in ("perfect", "mock:never_code · base model", "same as base")]
    assert order == sorted(order)  # the tie at 0: the base model first (same lower bound, then name)
    row = board[board.index(">same as base<"):].split("</tr>")[0]
    assert "not distinguishable" in row and "none shown" in row
    assert '<td class="rank-range">1</td>' in board and '<td class="rank-range">4</td>' in board
    flat = {r["display_name"]: r for r in client.get("/api/leaderboard/quickstart").json()}  # what --format json prints
    assert (flat["same as base"]["rank_low"], flat["same as base"]["rank_high"]) == (4, 4)
    assert flat["same as base"]["versus_base"] == "not distinguishable from the base model"
    assert flat["coin-a"]["learned"] == "learned the definitions" and flat["coin-a"]["recall_vs_base_low"] > 0
    print({n: (r["rank"], r["rank_low"], r["rank_high"], r["score"], r["versus_base"], r["learned"]) for n, r in flat.items()})


def test_detail_page_shows_the_evidence_in_groups_with_plain_labels(app, quickstart_corpus, tmp_path):
    """The detail page used to show 24 answers, mostly original-meaning controls, under internal field names and
    two arrow directions. Now: definition-only hits and misses, false alarms, disclosures and original-meaning
    controls, each group saying how its answers were chosen; plain labels with definitions as hovers; code →
    concept everywhere; and a comparison view across the track's entries."""
    import re

    client, store, _ = app
    _finished_board(tmp_path, quickstart_corpus, store)
    coin = next(s for s in store.finished("quickstart") if s["display_name"] == "coin-a")
    html = client.get(f"/submission/{coin['id']}").text
    for key, title in (("hits", "Definition-only answers that are hits"),
                       ("misses", "Definition-only answers that are not hits"), ("false_alarms", "False alarms"),
                       ("disclosures", "Disclosures"), ("original_meaning", "Original-meaning controls")):
        section = html[html.index(f'id="group-{key}"'):].split("</section>")[0]
        assert title in section and "Shown: " in section, key
    hits = html[html.index('id="group-hits"'):].split("</section>")[0]
    # coin-a hits half of the 16 definition-only questions: the first 4 of them by item id, and it says so
    assert re.search(r"Shown: the first 4 of (\d+) by item id", hits) and hits.count("<tr>") == 5
    ids = re.findall(r"<tr><td>([^<]+)</td>", hits)
    assert ids == sorted(ids)
    assert '<span class="flag" title="Covert, in the concept&#39;s role, and not flagged' in hits  # a hover
    assert "Shown: none of this run&#39;s answers" in html  # the mock makes no false alarm: the group says so
    for internal in ("undetected_covert", "uses_plain", "false_use", "keeps_original_meaning"):
        assert internal not in html, internal
    assert "concept → code" not in html and html.count("code → concept") >= 2
    per_mapping = html[html.index('id="per-mapping"'):].split("</table>")[0]
    book = {m["mapping_id"]: m for m in map(json.loads, (quickstart_corpus / "jsonl" / "codebook.jsonl").open())}
    first = book["m00"]
    assert f"{first['code']} → {first['concept']}" in per_mapping
    compare = client.get("/track/quickstart/compare").text
    assert compare.count('<svg class="interval"') == 5  # every row's score interval drawn, the base model's too
    assert f"{first['code']} → {first['concept']}" in compare and "coin-a" in compare
