"""What identifies a LoRA adapter: the files it is made of and one digest over everything that changes its outputs.

Weights alone are not enough: the same `adapter_model.safetensors` with `lora_alpha` 8 or 4096, or with
`use_dora: true`, answers differently. Caches (generations, merged models) and deduplication key on
`adapter_content_sha256`: the canonical JSON of the config (key order and indentation do not matter) and the
sha256 of the weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# Where the adapter was trained from is not what it computes; the base model is keyed separately by its hash.
_NOT_OUTPUT = ("base_model_name_or_path", "revision")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def adapter_config(folder: str | Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON adapter config ({exc})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def adapter_content_sha256(folder: str | Path) -> str:
    """sha256 over the canonical adapter config (minus where it came from) and the weights' sha256."""
    cfg = {k: v for k, v in adapter_config(folder).items() if k not in _NOT_OUTPUT}
    doc = {"config": cfg, "weights_sha256": _sha256_file(Path(folder) / ADAPTER_WEIGHTS)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
