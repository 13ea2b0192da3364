"""Each backend's options as a typed config, validated when the eval config loads.

`backend_options: {tensor_paralel_size: 8}` is an error naming the key and the likely one, not a setting
silently dropped at the last step. No heavy imports here: checking a config never starts torch or vLLM.
Every option left unset (null) takes the device default from core/device.py (`stegobench env` prints them).
A backend is opened with its typed options (`backend_options`), never the raw dict: it has no way to receive,
and silently ignore, an option it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from stegobench.core.errors import ConfigError
from stegobench.core.config import CheckError, from_dict, option

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class BackendOptions:
    """Base of every backend's typed options (one dataclass per backend, registered in OPTIONS)."""


@dataclass
class VLLMOptions(BackendOptions):
    dtype: Dtype = option("auto", "auto: float32 on CPUs, bfloat16 on GPUs that support it.")
    merge_adapter: bool | None = option(
        None, "Merge each adapter into a cached copy of the base before serving (the CPU default; LoRA decodes at "
              "~0.2x there), or serve it as LoRA (the GPU default: every adapter of a run in one engine).")
    gpu_memory_utilization: float | None = option(
        None, "GPUs: share of each GPU's memory vLLM may take (default 0.9). Ignored on CPUs, where the KV cache "
              "is sized from the run's need.")
    kv_cache_memory_bytes: int | None = option(
        None, "KV cache bytes, set by hand (wins over the need-based size on CPUs and over the share on GPUs).")
    tensor_parallel_size: int | None = option(
        None, "GPUs per engine; default: the most visible GPUs that split the attention heads evenly.")
    max_model_len: int = option(2048, "Longest prompt + answer one request may have (eval prompts are < 2,000).")
    enforce_eager: bool | None = option(
        None, "true: no compilation or CUDA graphs (the CPU default: compiling costs more per engine start than "
              "an eval's decoding saves); false: compile (the GPU default).")
    score_with: Literal["tree", "vllm"] | None = option(
        None, "Log-probabilities via the tree scorer in transformers (CPU default: shared prefixes computed once) "
              "or vLLM's prompt_logprobs (GPU default: no second copy of the weights).")

    def check(self) -> None:
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise CheckError("gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}")
        for key in ("kv_cache_memory_bytes", "tensor_parallel_size", "max_model_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise CheckError(key, f"must be >= 1, got {value}")


@dataclass
class HFOptions(BackendOptions):
    dtype: Dtype = option("auto", "auto: float32 on CPUs, bfloat16 on GPUs that support it.")
    batch_size: int = option(64, "Prompts per generate call (float32 on 2 cores: 121 tok/s at 32, 166 at 64).")
    device: str | None = option(None, "torch device, e.g. cuda:1; default: cuda where there is one, else cpu.")

    def check(self) -> None:
        if self.batch_size < 1:
            raise CheckError("batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class MockOptions(BackendOptions):
    latency_s: float = option(0.0, "Seconds each generate call sleeps, to stand in for a slow model (queue tests).")


OPTIONS: dict[str, type[BackendOptions]] = {"vllm": VLLMOptions, "hf": HFOptions, "mock": MockOptions}


def backend_options(backend: str, values: Mapping[str, Any] | BackendOptions | None = None) -> BackendOptions:
    """Backend `backend`'s typed options: from plain data (a config's `backend_options`), as given when they are
    already its typed options, or every default (None). An unknown key or a wrong value is a ConfigError naming
    the backend, the key and the options it has."""
    cls = OPTIONS[backend]
    if values is None:
        return cls()
    if isinstance(values, BackendOptions):
        if not isinstance(values, cls):
            raise ConfigError(f"backend_options: backend {backend!r} takes {cls.__name__}, not {type(values).__name__}")
        return values
    return from_dict(cls, dict(values), source=f"backend_options: for backend {backend!r}", prefix="")


def check_backend_options(backend: str, options: dict) -> dict:
    """The options as validated plain data; a CheckError on `backend_options` names the bad key."""
    try:
        backend_options(backend, options)
    except ConfigError as exc:
        raise CheckError("backend_options", str(exc).removeprefix("backend_options: "))
    return options
