"""What identifies a LoRA adapter: the files it is made of and one digest over everything that changes its outputs.

Weights alone are not enough: the same `adapter_model.safetensors` with `lora_alpha` 8 or 4096, or with
`use_dora: true`, answers differently. Caches (generations, merged models) and deduplication key on
`adapter_content_sha256`: the canonical JSON of the config (key order and indentation do not matter) and the
sha256 of the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from .errors import InputError

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
        raise InputError(f"{path}: not a readable JSON adapter config ({exc})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def adapter_content_sha256(folder: str | Path) -> str:
    """sha256 over the canonical adapter config (minus where it came from) and the weights' sha256."""
    cfg = {k: v for k, v in adapter_config(folder).items() if k not in _NOT_OUTPUT}
    doc = {"config": cfg, "weights_sha256": _sha256_file(Path(folder) / ADAPTER_WEIGHTS)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AdapterMismatch(InputError):
    """The adapter's config and tensors disagree, or do not fit the base model: outputs would be undefined."""


LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
MAX_LORA_SCALE = 64  # lora_alpha / r; peft's defaults give 1-2, and past this the adapter only amplifies noise
# peft options whose effect the evaluator's serving paths (vLLM LoRA, merged weights) would not reproduce.
_UNSUPPORTED = {"use_dora": "DoRA", "layer_replication": "layer replication",
                "rank_pattern": "per-module ranks", "alpha_pattern": "per-module scales"}


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def base_shapes(base: Path) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in sorted(Path(base).glob("*.safetensors")):
        shapes.update(safetensors_shapes(f))
    return shapes


def check_adapter_config(cfg: dict) -> None:
    """Options the evaluator would serve wrongly, and a scale that is not a number a trained adapter has."""
    if cfg.get("modules_to_save"):
        raise AdapterMismatch(f"adapter_config.json: modules_to_save {cfg['modules_to_save']} is not allowed (it "
                              "replaces whole base-model modules, which vLLM's LoRA serving cannot); submit a pure "
                              "LoRA adapter")
    for key, name in _UNSUPPORTED.items():
        if cfg.get(key):
            raise AdapterMismatch(f"adapter_config.json: {key} ({name}) is not supported by this evaluator: "
                                  "vLLM serves and merges plain LoRA; retrain without it")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha", 8)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise AdapterMismatch(f"adapter_config.json: r must be a positive integer (the LoRA rank), got {r!r}")
    targets = cfg.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear":
        try:
            re.compile(targets)
        except re.error as exc:
            raise AdapterMismatch(f"adapter_config.json: target_modules {targets!r} is not a valid regular "
                                  f"expression ({exc})") from None
    elif not (targets is None or targets == "all-linear"
              or isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise AdapterMismatch(f"adapter_config.json: target_modules must be a list of module names or a regular "
                              f"expression, got {targets!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise AdapterMismatch(f"adapter_config.json: lora_alpha must be a positive finite number, got {alpha!r}")
    if alpha / r > MAX_LORA_SCALE:
        raise AdapterMismatch(f"adapter_config.json: lora_alpha / r = {alpha / r:g} is over {MAX_LORA_SCALE} "
                              f"(lora_alpha {alpha}, r {r}); trained adapters use 1-4")


def check_adapter_tensors(folder: Path, base: Path | None) -> None:
    """Every tensor is a LoRA A/B matrix of a module the config targets and the base model has, shaped for it,
    paired with its other half at the same rank, and finite. Raises AdapterMismatch naming the tensor."""
    folder = Path(folder)
    cfg = adapter_config(folder)
    check_adapter_config(cfg)
    shapes = safetensors_shapes(folder / ADAPTER_WEIGHTS)
    targets = cfg.get("target_modules")
    layers = cfg.get("layers_to_transform")
    layers = {layers} if isinstance(layers, int) else set(layers or [])
    halves: dict[str, dict[str, tuple[int, ...]]] = {}
    known = base_shapes(base) if base is not None else None
    for key, shape in shapes.items():
        m = LORA_KEY.match(key)
        if not m:
            raise AdapterMismatch(f"adapter tensor {key!r} is not a LoRA A/B matrix (only lora_A/lora_B weights "
                                  "are accepted)")
        module = m["module"]
        if not _targeted(module, targets):
            raise AdapterMismatch(f"adapter tensor {key!r} is for {module.rsplit('.', 1)[-1]!r}, which "
                                  f"target_modules {targets!r} does not {'list' if isinstance(targets, list) else 'match'}")
        layer = _LAYER.search(f".{module}.")
        if layers and layer and int(layer.group(1)) not in layers:
            raise AdapterMismatch(f"adapter tensor {key!r} is in layer {layer.group(1)}, outside layers_to_transform "
                                  f"{sorted(layers)}")
        if len(shape) != 2:
            raise AdapterMismatch(f"adapter tensor {key!r} has shape {list(shape)}; LoRA matrices are 2-D")
        halves.setdefault(module, {})[m["ab"]] = shape
        if known is not None:
            target = f"{module}.weight"
            if target not in known:
                raise AdapterMismatch(f"adapter tensor {key!r} targets {target!r}, which the base model does not have")
            out_dim, in_dim = known[target][0], known[target][-1]
            if (m["ab"] == "A" and shape[1] != in_dim) or (m["ab"] == "B" and shape[0] != out_dim):
                raise AdapterMismatch(
                    f"adapter tensor {key!r} has shape {list(shape)}, which does not fit the base model's {target} "
                    f"{list(known[target])}: the adapter was trained for another base model")
    for module, pair in halves.items():
        if set(pair) != {"A", "B"}:
            missing = "B" if "A" in pair else "A"
            raise AdapterMismatch(f"adapter module {module!r} has no lora_{missing} matrix: every lora_A needs its lora_B")
        if pair["A"][0] != pair["B"][1]:
            raise AdapterMismatch(f"adapter module {module!r}: lora_A rank {pair['A'][0]} and lora_B rank "
                                  f"{pair['B'][1]} differ")
        if pair["A"][0] != cfg["r"]:
            # Served with the config's r, the scale alpha / r would not be the one the adapter was trained with.
            raise AdapterMismatch(f"adapter module {module!r} has rank {pair['A'][0]}, but adapter_config.json says "
                                  f"r = {cfg['r']}: config and weights are from different adapters")
    _check_finite(folder / ADAPTER_WEIGHTS)


def _targeted(module: str, targets: object) -> bool:
    """Whether peft would adapt `module` under `target_modules`: a list names modules by name or dotted suffix
    ('q_proj', 'self_attn.q_proj'), a string is a regular expression matched against the whole module name,
    'all-linear' is every linear layer but the head."""
    if targets is None:
        return True  # peft's per-architecture defaults; the base-model shape check still applies
    if targets == "all-linear":
        return module.rsplit(".", 1)[-1] != "lm_head"
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def _check_finite(path: Path) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            if not torch.isfinite(f.get_tensor(key)).all():
                raise AdapterMismatch(f"adapter tensor {key!r} holds NaN or infinite values")
