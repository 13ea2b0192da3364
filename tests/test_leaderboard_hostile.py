"""Hostile submissions, third pass (issue 25): a pattern that backtracks, a config nested thousands deep, a scale
hidden behind rsLoRA, a duplicate's leftovers, a requeued duplicate, a pickle with an upper-case suffix. Each
case failed on the code before it: it froze the process, raised a traceback, passed, or left files behind."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import leaderboard_config
from leaderboard_helpers import copy_folder, edit_config, multipart_scope, request
from fastapi.testclient import TestClient

from stegobench.benchmark.store import Store
from stegobench.benchmark.submit import submit_folder
from stegobench.core.config import to_dict

# Backtracks exponentially on a name that ends in "j" (every module name of a Llama: *_proj): 2^n steps.
BACKTRACKING = r"(.|.)*[^j]"




def _files(folder: Path) -> dict:
    return {"adapter_config": ("c.json", (folder / "adapter_config.json").read_bytes()),
            "adapter_weights": ("w", (folder / "adapter_model.safetensors").read_bytes())}


@pytest.fixture
def evaluator(tmp_path):
    cfg = leaderboard_config(tmp_path, "max_adapter_rank=8")
    return cfg, Store(cfg.db_url())


# -- 1. nothing a submitter writes runs unbounded ---------------------------------------------------------------

def test_a_backtracking_target_pattern_is_refused_within_a_second(tiny_adapter, tmp_path):
    """The pattern was matched against module names from the submitter's own tensor keys: with a crafted key each
    two more characters took four times as long (30 s for a 1 KB upload). Here it would take seconds; it must
    be decided against the base model's own names, under a time limit."""
    import torch
    from safetensors.torch import save_file

    from stegobench.core.adapters import AdapterMismatch, check_adapter_tensors
    from stegobench.core.models import resolve_model

    folder = tmp_path / "evil"
    folder.mkdir()
    module = "a" * 24 + "j"
    save_file({f"base_model.model.{module}.lora_A.weight": torch.zeros(4, 64),
               f"base_model.model.{module}.lora_B.weight": torch.zeros(64, 4)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "target_modules": BACKTRACKING}))
    start = time.perf_counter()
    with pytest.raises(AdapterMismatch, match="did not finish matching the base model's"):
        check_adapter_tensors(folder, resolve_model("tiny-llama").path)
    # Bounded, not fast: unbounded, this pattern on a Llama's module names takes minutes (2^30 steps); the bound
    # is loose so that a loaded machine does not fail it (time targets belong to `make bench`).
    assert time.perf_counter() - start < 5.0


def test_a_target_pattern_is_stored_as_the_base_modules_it_selects(evaluator, tiny_adapter, tmp_path):
    """The worker, peft and vLLM would each run the submitter's pattern again: the stored config names modules."""
    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    edit_config(folder, target_modules=r"model\.layers\.\d+\.self_attn\.(q|v)_proj")
    out = submit_folder(cfg, store, request(), adapter=str(folder))
    assert out.status == "PENDING", out.reason
    stored = cfg.data_path() / "artifacts" / store.get(out.id)["artifact_sha256"] / "adapter_config.json"
    targets = json.loads(stored.read_text())["target_modules"]
    assert targets == [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qv"], targets
    # The same adapter with the list written out is the same entry.
    listed = copy_folder(tiny_adapter, tmp_path / "b")
    edit_config(listed, target_modules=targets)
    assert submit_folder(cfg, store, request(display_name="b"), adapter=str(listed)).duplicate_of == out.id


def test_a_pattern_is_refused_where_the_base_model_has_no_module_names(tmp_path):
    from stegobench.core.adapters import AdapterMismatch, resolve_pattern

    with pytest.raises(AdapterMismatch, match="list the modules instead"):
        resolve_pattern("q_proj", None)


def slow_check(*_args):
    """A validation that holds the GIL, as CPython's `re` does while it backtracks: seconds per call."""
    while True:
        re.fullmatch(BACKTRACKING, "a" * 23 + "j")


def test_pages_answer_while_an_upload_is_validated_and_a_slow_validation_is_stopped(tmp_path, tiny_adapter,
                                                                                     monkeypatch):
    """Validation ran in the server's own interpreter: for the 30 s a backtracking pattern took, every page
    stalled (one read of the API took 26.6 s). Now it runs in its own process, stopped at the time limit."""
    from stegobench.benchmark import validation
    from stegobench.benchmark.web.app import create_app

    cfg = leaderboard_config(tmp_path, "validation_timeout_seconds=3")
    store = Store(cfg.db_url())
    client = TestClient(create_app(cfg, store))
    monkeypatch.setattr(validation, "CHECK", slow_check)
    auth = {"Authorization": f"Bearer {store.add_token('a')}"}
    answer: dict = {}

    def upload() -> None:
        r = client.post("/api/submissions", data={"display_name": "slow", "track": "quickstart",
                                                  "base_model": "tiny-llama"}, files=_files(tiny_adapter),
                        headers=auth)
        answer.update(status=r.status_code, body=r.json(), at=time.perf_counter())

    client.get("/api/queue")  # first render imports what it needs
    thread = threading.Thread(target=upload)
    started = time.perf_counter()
    thread.start()
    reads = []
    while thread.is_alive() and time.perf_counter() - started < 20:
        t0 = time.perf_counter()
        assert client.get("/api/queue", params={"before": len(reads) + 1}).status_code == 200
        reads.append(time.perf_counter() - t0)
        time.sleep(0.05)
    thread.join(30)
    assert answer["status"] == 422 and "validation took over 3 s" in answer["body"]["reason"], answer
    # A server held by the validation would stall each read for its 3 s; answering under 1.5 s shows it is not.
    assert len(reads) >= 10 and max(reads) < 1.5, [round(r, 3) for r in reads]


@pytest.mark.parametrize("name", ["adapter_config.json", "config.json"])
def test_json_nested_thousands_deep_is_a_named_refusal(evaluator, tiny_adapter, tmp_path, name):
    """adapter_config.json nested a few thousand deep escaped as RecursionError: a CLI traceback, a web 500."""
    cfg, store = evaluator
    deep = '{"peft_type": "LORA", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    if name == "adapter_config.json":
        folder = copy_folder(tiny_adapter, tmp_path / "a")
        (folder / name).write_text(deep)
        out = submit_folder(cfg, store, request(), adapter=str(folder))
    else:
        from stegobench.core.models import resolve_model

        folder = tmp_path / "merged"
        folder.mkdir()
        shutil.copyfile(resolve_model("tiny-llama").path / "model.safetensors", folder / "model.safetensors")
        (folder / name).write_text(deep)
        out = submit_folder(cfg, store, request(), merged=str(folder))
    assert out.status == "REJECTED" and "5001 levels deep, over the limit of 32" in out.reason, out.reason


def test_deep_json_upload_gets_422_not_500(tmp_path, tiny_adapter):
    from stegobench.benchmark.web.app import create_app

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    client = TestClient(create_app(cfg, store), raise_server_exceptions=False)
    files = {**_files(tiny_adapter), "adapter_config": ("c.json", b"[" * 20000 + b"]" * 20000)}
    r = client.post("/api/submissions", data={"display_name": "deep", "track": "quickstart",
                                              "base_model": "tiny-llama"}, files=files,
                    headers={"Authorization": f"Bearer {store.add_token('a')}"})
    assert r.status_code == 422 and "20000 levels deep" in r.json()["reason"], r.text


def test_json_depth_ignores_brackets_in_strings_and_is_linear_on_unclosed_ones():
    from stegobench.core.adapters import json_depth

    assert json_depth('{"a": [1, {"b": "[[[["}], "c\\"[": 2}') == 3
    start = time.perf_counter()
    assert json_depth('"\\"' * 300_000 + "[") == 0  # an unclosed string runs to the end
    assert time.perf_counter() - start < 5.0  # linear; a quadratic scan of 600k characters would take hours


# -- 3. one artifact, one ranked entry --------------------------------------------------------------------------

@pytest.mark.parametrize("changes, expected", [
    ({"use_rslora": True, "lora_alpha": 256}, "lora_alpha / sqrt(r) (use_rslora) = 128 is over 64"),
    ({"use_rslora": "yes"}, "use_rslora must be true or false"),
    ({"trainable_token_indices": [1, 2]}, "trainable_token_indices (trained token embeddings) is not supported"),
    ({"lora_bias": True}, "lora_bias (LoRA bias) is not supported"),
    ({"exclude_modules": ".*"}, "exclude_modules (excluded modules) is not supported"),
    ({"layers_pattern": "(.|.)*x"}, "layers_pattern must name the layer list's attribute"),
])
def test_every_peft_scaling_rule_and_option_is_checked(evaluator, tiny_adapter, tmp_path, changes, expected):
    """use_rslora scales by alpha/sqrt(r): the alpha/r <= 64 check let a scale of 128 through."""
    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    edit_config(folder, **changes)
    out = submit_folder(cfg, store, request(), adapter=str(folder))
    assert out.status == "REJECTED" and expected in out.reason, out.reason


def test_rslora_within_the_limit_is_accepted(evaluator, tiny_adapter, tmp_path):
    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    edit_config(folder, use_rslora=True, lora_alpha=16)  # 16 / sqrt(4) = 8
    assert submit_folder(cfg, store, request(), adapter=str(folder)).status == "PENDING"


def _stored_files(cfg) -> tuple[set, set]:
    data = cfg.data_path()
    return ({p.name for p in (data / "artifacts").iterdir()} if (data / "artifacts").exists() else set(),
            {p.name for p in (data / "blobs").rglob("*") if p.is_file()} if (data / "blobs").exists() else set())


@pytest.mark.parametrize("race", [False, True])
def test_a_refused_duplicate_leaves_no_files(evaluator, tiny_adapter, tmp_path, monkeypatch, race):
    """A re-indented copy of an adapter was refused as a duplicate but its artifact folder and config blob stayed.
    `race`: the duplicate is only found at the insert (another upload of it won meanwhile)."""
    cfg, store = evaluator
    first = submit_folder(cfg, store, request(), adapter=str(tiny_adapter))
    assert first.status == "PENDING", first.reason
    before = _stored_files(cfg)
    indented = copy_folder(tiny_adapter, tmp_path / "indented")
    (indented / "adapter_config.json").write_text(
        json.dumps(json.loads((tiny_adapter / "adapter_config.json").read_text()), indent=5))
    if race:
        monkeypatch.setattr(Store, "holder", lambda self, key: None, raising=True)
    again = submit_folder(cfg, store, request(display_name="again"), adapter=str(indented))
    assert again.status == "REJECTED" and again.duplicate_of == first.id, again
    assert _stored_files(cfg) == before
    assert not any((cfg.data_path() / "incoming").glob("*"))


def _cli_config(cfg, tmp_path: Path) -> str:
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return str(path)


def test_requeue_refuses_a_failed_job_whose_adapter_is_ranked_again(evaluator, tiny_adapter, tmp_path, capsys):
    """A FAILED entry frees its slot, the same adapter is resubmitted and ranked; requeueing the old job ran it
    too, and the same artifact was ranked twice."""
    from stegobench.cli.main import main

    cfg, store = evaluator
    old = submit_folder(cfg, store, request(), adapter=str(tiny_adapter))
    job = store.claim("w")
    assert job.id == old.id and store.fail(job, "crashed", max_attempts=1, final=True) == "FAILED"
    new = submit_folder(cfg, store, request(display_name="retry"), adapter=str(tiny_adapter))
    assert new.status == "PENDING", new.reason
    job = store.claim("w")
    assert store.finish(job, str(tmp_path), "k", {"score": {"value": 0.5, "low": 0.1, "high": 0.9}})
    code = main(["leaderboard", "requeue", "--id", str(old.id), "--config", _cli_config(cfg, tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and f"not requeued #{old.id}: duplicate of submission #{new.id}" in err, err
    assert store.get(old.id)["status"] == "FAILED" and store.counts()["PENDING"] == 0


def test_requeue_puts_back_a_failed_job_that_nothing_duplicates(evaluator, tiny_adapter, tmp_path, capsys):
    from stegobench.cli.main import main

    cfg, store = evaluator
    old = submit_folder(cfg, store, request(), adapter=str(tiny_adapter))
    store.fail(store.claim("w"), "crashed", max_attempts=1, final=True)
    code = main(["leaderboard", "requeue", "--config", _cli_config(cfg, tmp_path)])
    assert code == 0 and f"requeued 1 FAILED submission(s): #{old.id}" in capsys.readouterr().out
    assert store.get(old.id)["status"] == "PENDING"
    again = submit_folder(cfg, store, request(display_name="again"), adapter=str(tiny_adapter))
    assert again.duplicate_of == old.id  # it holds its key again


# -- 4. the CLI's weight-file check matches the web's -------------------------------------------------------------

@pytest.mark.parametrize("name", ["adapter_model.BIN", "adapter_model.Pt"])
def test_cli_refuses_pickle_weights_whatever_the_case_of_their_suffix(evaluator, tiny_adapter, tmp_path, name):
    """The web refused adapter_model.BIN; the CLI silently dropped it and queued the rest."""
    cfg, store = evaluator
    folder = copy_folder(tiny_adapter, tmp_path / "a")
    (folder / name).write_bytes(b"\x80\x04 a pickle")
    out = submit_folder(cfg, store, request(), adapter=str(folder))
    assert out.status == "REJECTED" and f"weights must be safetensors; {name} refused" in out.reason, out.reason


# -- 2. submitted text is data everywhere it is shown -------------------------------------------------------------

HOSTILE_NAME = ("\x1b[2J\x1b]0;pwned\x07\x1b]52;c;ZWNobyBwd25lZA==\x07ok\r| 1 | FAKE-WINNER | +0.999 |\n"
                "\u202enoisrev\u200b")


@pytest.mark.parametrize("name, expected", [
    ("\x1b[2Jclear", "control or invisible characters (\\x1b)"),
    ("title\x1b]0;pwned\x07", "control or invisible characters (\\x07, \\x1b)"),
    ("clip\x1b]52;c;ZXZpbA==\x07", "control or invisible characters (\\x07, \\x1b)"),
    ("ok\r| 1 | FAKE-WINNER |", "control or invisible characters (\\x0d)"),
    ("two\nlines", "control or invisible characters (\\x0a)"),
    ("\u202eevil", "control or invisible characters (\\u202e)"),
    ("zero\u200bwidth", "control or invisible characters (\\u200b)"),
    ("blank\u3164filler", "control or invisible characters (\\u1160)"),  # NFKC: U+3164 -> U+1160
    ("variation\ufe0f", "control or invisible characters (\\ufe0f)"),
    ("\u0440\u0430ypal", "mixes letters of CYRILLIC and LATIN"),
    ("\u03b1lpha", "mixes letters of GREEK and LATIN"),
])
def test_names_with_control_invisible_or_mixed_script_characters_are_refused(evaluator, name, expected):
    """A name typed with ESC, OSC, BEL, CR or LF was stored and printed raw by `stegobench leaderboard`."""
    cfg, store = evaluator
    out = submit_folder(cfg, store, request(display_name=name, base_model="mock:never_code"))
    assert out.status == "REJECTED" and expected in out.reason, out.reason
    stored = store.get(out.id)
    assert "\x1b" not in stored["display_name"] + stored["reason"] and "\u202e" not in stored["display_name"]


def test_submitter_and_notes_are_checked_too(evaluator):
    cfg, store = evaluator
    out = submit_folder(cfg, store, request(submitter="me\x1b[31m", base_model="mock:never_code"))
    assert out.status == "REJECTED" and "submitter contains control" in out.reason
    out = submit_folder(cfg, store, request(notes="line one\r\nline two\u202e", base_model="mock:never_code"))
    assert out.status == "REJECTED" and "notes contains control or invisible characters (\\u202e)" in out.reason
    out = submit_folder(cfg, store, request(notes="line one\r\nline two\ttab", base_model="mock:never_code"))
    assert out.status == "PENDING", out.reason


def test_names_are_nfkc_normalised_and_a_look_alike_of_another_submitters_entry_is_refused(evaluator):
    cfg, store = evaluator
    first = submit_folder(cfg, store, request(display_name="Top Model", base_model="mock:never_code"))
    assert first.status == "PENDING"
    for name in ("ＴＯＰ ＭＯＤＥＬ", "top  model", "top model", "TOP M0DEL"):
        out = submit_folder(cfg, store, request(display_name=name, submitter="mallory", base_model="mock:always_code"))
        assert out.status == "REJECTED" and f"reads the same as submission #{first.id}'s 'Top Model'" in out.reason, \
            (name, out.reason)
    out = submit_folder(cfg, store, request(display_name="\u0422\u043e\u0440 \u041c\u043e\u0501\u0435\u04cf",
                                         submitter="mallory", base_model="mock:always_code"))  # all Cyrillic
    assert out.status == "REJECTED" and "reads the same" in out.reason, out.reason
    mine = submit_folder(cfg, store, request(display_name="TOP MODEL", base_model="mock:always_code"))
    assert mine.status == "PENDING", mine.reason  # the same submitter may name a second entry alike
    wide = submit_folder(cfg, store, request(display_name="ｗｉｄｅ", base_model="mock:perfect_covert"))
    assert store.get(wide.id)["display_name"] == "wide"  # stored in NFKC form
    fake = submit_folder(cfg, store, request(display_name="tiny-llama · base model", submitter="mallory",
                                          base_model="mock:perfect_covert"))
    assert fake.status == "REJECTED" and "reads the same as the baseline row" in fake.reason


def test_add_token_refuses_a_name_with_control_characters(tmp_path, capsys):
    from stegobench.cli.main import main

    cfg = leaderboard_config(tmp_path)
    assert main(["leaderboard", "add-token", "--name", "eve\x1b]0;x\x07", "--config", _cli_config(cfg, tmp_path)]) == 2
    assert "error: add-token: --name contains control or invisible characters" in capsys.readouterr().err


def _ranked_hostile_rows(store) -> list[int]:
    """Rows stored before names were checked (an older database): written straight into the store."""
    ids = []
    for i, name in enumerate((HOSTILE_NAME, "=HYPERLINK(\"http://x\",\"y\")", "+1+1", "@SUM(A1)", "-2+3",
                              "\tTAB", "a|b [link](javascript:x) <b>")):
        sid, _ = store.add_submission(display_name=name, submitter="old\x1b[31m", track="quickstart",
                                      base_model="mock:never_code", revision=None, kind="base", artifact_sha256=None,
                                      size_bytes=0, dedup_key=f"k{i}")
        job = store.claim("w")
        assert job.id == sid and store.finish(job, "/nowhere", "none",
                                              {"score": {"value": 0.1 * i, "low": -0.1, "high": 0.2}, "n_items": 4})
        ids.append(sid)
    return ids


@pytest.mark.parametrize("fmt", ["table", "md", "csv", "json"])
def test_the_leaderboard_command_never_prints_an_escape_sequence_it_did_not_generate(tmp_path, capsys, fmt):
    from stegobench.cli.main import main

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    _ranked_hostile_rows(store)
    assert main(["leaderboard", "--format", fmt, "--config", _cli_config(cfg, tmp_path)]) == 0
    out = capsys.readouterr().out
    for raw in ("\x1b", "\x07", "\u202e", "\u200b", "\t"):
        assert raw not in out, (fmt, raw, out)
    lines = out.replace("\r\n", "\n").split("\n")
    assert "\r" not in out.replace("\r\n", "") and not any(line.startswith("| 1 | FAKE-WINNER") for line in lines)
    if fmt == "csv":
        import csv
        import io

        cells = {r["display_name"] for r in csv.DictReader(io.StringIO(out))}
        assert {"'=HYPERLINK(\"http://x\",\"y\")", "'+1+1", "'@SUM(A1)", "'-2+3"} <= cells, cells
        assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    if fmt == "md":
        assert "a\\|b \\[link\\](javascript:x) \\<b\\>" in out
    if fmt == "table":
        assert "\\x1b[2J" in out  # shown, as text
    if fmt == "md":
        assert "\\\\x1b\\[2J" in out  # shown as text, markdown's own escapes on top


def test_pages_and_api_show_old_hostile_names_escaped(tmp_path):
    from stegobench.benchmark.web.app import create_app

    cfg = leaderboard_config(tmp_path)
    store = Store(cfg.db_url())
    ids = _ranked_hostile_rows(store)
    client = TestClient(create_app(cfg, store))
    for path in ("/track/quickstart", f"/submission/{ids[0]}", "/queue", "/api/leaderboard/quickstart",
                 f"/api/submissions/{ids[0]}", "/api/queue"):
        r = client.get(path)
        assert r.status_code == 200
        for raw in ("\x1b", "\x07", "\u202e", "\u200b", "\r"):
            assert raw not in r.text, (path, raw)
        if path.startswith("/api"):
            assert r.content.isascii()
    page = client.get("/track/quickstart").text
    assert "\\x1b[2J" in page and "\\u202enoisrev" in page and "&lt;b&gt;" in page
    assert client.get(f"/api/submissions/{ids[0]}").json()["display_name"] == HOSTILE_NAME  # data, intact


# -- 4. connections and workers that cannot be held hostage ------------------------------------------------------

BOUNDARY = "hostileboundary"


def _upload_head(fields: dict[str, str]) -> bytes:
    parts = b"".join(b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="' + k.encode() +
                     b'"\r\n\r\n' + v.encode() + b"\r\n" for k, v in fields.items())
    return parts + b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="adapter_weights"; ' \
                                               b'filename="w.safetensors"\r\n\r\n'


def _slow_call(app, path: str, headers: dict[str, str], receive, limit: float) -> tuple[int, bytes, float]:
    """One ASGI request whose body comes from `receive`; gives up (and fails) after `limit` seconds."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = multipart_scope(path, headers, BOUNDARY)
    import asyncio

    start = time.perf_counter()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), limit))
    first = next(m for m in sent if m["type"] == "http.response.start")
    return first["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), \
        time.perf_counter() - start


@pytest.mark.parametrize("path", ["/api/submissions", "/submit"])
@pytest.mark.parametrize("pace", ["stalls", "trickles"])
def test_an_upload_that_stalls_or_trickles_is_cut(tmp_path, path, pace):
    """An upload sending one byte every two seconds held its connection indefinitely: no body or idle timeout."""
    import asyncio

    from stegobench.benchmark.web.app import create_app

    cfg = leaderboard_config(tmp_path, "upload_idle_timeout_seconds=0.4", "upload_timeout_seconds=1.5")
    store = Store(cfg.db_url())
    app = create_app(cfg, store)
    token = store.add_token("a")
    fields = {"token": token, **{"display_name": "slow", "track": "quickstart", "base_model": "mock:never_code"}} \
        if path == "/submit" else {"display_name": "slow", "track": "quickstart", "base_model": "mock:never_code"}
    chunks = [_upload_head(fields)]

    async def receive() -> dict:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        await asyncio.sleep(3600 if pace == "stalls" else 0.2)  # nothing ever, or a byte every 0.2 s
        return {"type": "http.request", "body": b"\0", "more_body": True}

    headers = {} if path == "/submit" else {"authorization": f"Bearer {token}"}
    status, body, took = _slow_call(app, path, headers, receive, limit=10)
    expected = b"sent nothing for 0.4 s" if pace == "stalls" else b"did not arrive within 1.5 s"
    assert status == 408 and expected in body, (status, body[:300])
    assert took < 4, took
    assert sum(store.counts().values()) == 0


def test_worker_once_says_a_job_is_held_by_a_worker_whose_heartbeat_has_not_expired(tmp_path, capsys):
    """`worker --once` right after a worker was killed exited 0 while that worker's job stayed RUNNING, silently."""
    from stegobench.cli.main import main

    cfg = leaderboard_config(tmp_path, "heartbeat_timeout_seconds=120")
    store = Store(cfg.db_url())
    out = submit_folder(cfg, store, request(base_model="mock:never_code"))
    assert store.claim("killed-worker").id == out.id  # its worker died just now, heartbeat 0 s old
    code = main(["worker", "--once", "--config", _cli_config(cfg, tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and f"job #{out.id} is RUNNING on worker killed-worker" in err, err
    left = int(re.search(r"goes back to PENDING in (\d+) s", err).group(1))
    assert 115 <= left <= 120, err


# -- 5. read pages under load: answered in front of the app ----------------------------------------------------

def test_cached_reads_answer_a_fresh_copy_without_the_app_and_keep_only_complete_200_pages():
    import asyncio

    from stegobench.benchmark.web.cache import CachedReads

    calls: list[str] = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        status = 404 if scope["path"] == "/missing" else 200
        kind = b"image/png" if scope["path"] == "/plot" else b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": f"page {len(calls)}".encode()})

    cached = CachedReads(app, ttl=0.4)

    def get(path: str, query: bytes = b"") -> bytes:
        sent: list[dict] = []

        async def send(m):
            sent.append(m)

        asyncio.run(cached({"type": "http", "method": "GET", "path": path, "query_string": query}, None, send))
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    assert get("/queue") == get("/queue") == b"page 1" and calls == ["/queue"]
    assert get("/queue", b"before=5") == b"page 2"  # another target, another page
    get("/missing"), get("/missing"), get("/plot"), get("/plot")
    assert calls.count("/missing") == 2 and calls.count("/plot") == 2  # errors and images are never kept
    time.sleep(0.45)
    assert get("/queue") != b"page 1"  # at most ttl old


def test_the_load_script_sends_to_the_loopback_address_only():
    import subprocess
    import sys

    from conftest import REPO

    for base in ("http://10.1.2.3:8000", "http://example.org", "http://127.0.0.1.example.org:80"):
        out = subprocess.run([sys.executable, str(REPO / "speed/serve_load.py"), "--client", "paced", "--base", base,
                              "--duration", "0.1"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "is not a loopback address" in out.stderr, (base, out.stderr[-500:])
