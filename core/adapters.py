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
from typing import TypeGuard

from .errors import InputError
from .provenance import sha256_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
# The base model an adapter was trained on, as `stegobench train` records it in adapter_config.json: its portable
# name (`base_model_name_or_path`) and the sha256 of its weights files, which tell two conversions apart.
BASE_MODEL_KEY = "stegobench_base_model"
# Where the adapter was trained from is not what it computes; the base model is keyed separately by its hash.
_NOT_OUTPUT = ("base_model_name_or_path", "revision", BASE_MODEL_KEY)


# Bounds on a JSON file someone else wrote, checked before the parser runs: json.loads recurses once per level
# (a few thousand levels raise RecursionError), and a peft or transformers config is a few KiB, 3-4 levels deep.
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
# One string literal, or an unclosed one up to the end: every attempt succeeds where it starts, so one pass is
# linear (a pattern that failed on an unclosed string would rescan the rest from every later quote).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count), without parsing it."""
    depth = deepest = 0
    for c in _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text)):
        depth += 1 if c in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def read_json_bounded(path: str | Path, what: str | None = None, max_bytes: int = MAX_JSON_BYTES,
                      max_depth: int = MAX_JSON_DEPTH):
    """Parse a JSON file of untrusted origin: at most `max_bytes` and `max_depth` levels, checked before parsing, so
    a hostile file is refused by name instead of raising RecursionError or MemoryError from inside the parser."""
    path = Path(path)
    what = what or path.name
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{what}: cannot be read ({exc.strerror})") from None
    if len(raw) > max_bytes:
        raise InputError(f"{what} is over {max_bytes // 1024} KiB; a config file is a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise InputError(f"{what} nests arrays/objects {depth} levels deep, over the limit of {max_depth}; a config "
                         "file is a few levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc})") from None


def adapter_config(folder: str | Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG
    try:
        cfg = read_json_bounded(path)
    except InputError as exc:
        raise InputError(f"{path}: not a readable JSON adapter config ({exc})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def record_base_model(folder: str | Path, name: str, weights_sha256: dict[str, str]) -> None:
    """Make a freshly saved adapter portable: peft writes the absolute path of the folder the base model was
    loaded from (inside one machine's $STEGOBENCH_HOME); the adapter instead names the base model as the user did
    (a builtin name such as `smollm2-135m-instruct`, or their own folder or hub id) and records its weights' sha256
    under BASE_MODEL_KEY, so a reader can check that the weights it loads are the ones trained on."""
    path = Path(folder) / ADAPTER_CONFIG
    cfg = adapter_config(folder)
    cfg["base_model_name_or_path"] = name
    cfg[BASE_MODEL_KEY] = {"name": name, "weights_sha256": dict(sorted(weights_sha256.items()))}
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_peft(model, folder: str | Path):
    """PeftModel.from_pretrained(model, folder), quiet about BASE_MODEL_KEY: peft warns of any key it does not
    know as if the adapter came from a newer peft, and this one is stegobench's record, not a peft option."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=rf"Unexpected keyword arguments \['{BASE_MODEL_KEY}'\]")
        return PeftModel.from_pretrained(model, str(folder))


def adapter_content_sha256(folder: str | Path) -> str:
    """sha256 over the canonical adapter config (minus where it came from) and the weights' sha256. A list of
    target modules counts as the set it is: peft keeps it as a set and writes it in the saving process's hash
    order, so the same training saved twice, or a resubmission with the names reordered, is the same adapter."""
    cfg = {k: v for k, v in adapter_config(folder).items() if k not in _NOT_OUTPUT}
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(map(str, cfg["target_modules"]))
    doc = {"config": cfg, "weights_sha256": sha256_file(Path(folder) / ADAPTER_WEIGHTS)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AdapterMismatch(InputError):
    """The adapter's config and tensors disagree, or do not fit the base model: outputs would be undefined."""


LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
MAX_LORA_SCALE = 64  # lora_scale(); peft's defaults give 1-2, and past this the adapter only amplifies noise
# peft options whose effect the evaluator's serving paths (vLLM LoRA, merged weights) would not reproduce, or
# that change which modules are touched in ways the checks below do not model (peft 0.21's LoraConfig; their
# defaults are falsy, so a plain adapter never sets them).
_UNSUPPORTED = {"use_dora": "DoRA", "layer_replication": "layer replication",
                "rank_pattern": "per-module ranks", "alpha_pattern": "per-module scales",
                "trainable_token_indices": "trained token embeddings", "target_parameters": "LoRA on parameters",
                "lora_bias": "LoRA bias", "use_qalora": "QA-LoRA", "use_bdlora": "block-diagonal LoRA",
                "alora_invocation_tokens": "activated LoRA", "exclude_modules": "excluded modules"}
# peft splices layers_pattern into a regular expression: only a plain attribute name ("layers", "h") is accepted.
_LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_PATTERN_CHARS = 1000
PATTERN_SECONDS = 0.5  # to match a target_modules pattern against every module of the base model


def lora_scale(cfg: dict) -> tuple[float, str]:
    """The factor peft multiplies lora_B @ lora_A by, and how it is computed (peft tuners/lora/layer.py:
    update_layer): lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA."""
    r, alpha = cfg["r"], cfg.get("lora_alpha", 8)
    if cfg.get("use_rslora"):
        return alpha / math.sqrt(r), "lora_alpha / sqrt(r) (use_rslora)"
    return alpha / r, "lora_alpha / r"


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
        if len(targets) > MAX_PATTERN_CHARS:
            raise AdapterMismatch(f"adapter_config.json: target_modules is a pattern of {len(targets)} characters, "
                                  f"over {MAX_PATTERN_CHARS}; list the modules instead, e.g. [\"q_proj\", \"v_proj\"]")
        try:
            re.compile(targets)
        except (re.error, RecursionError, OverflowError) as exc:
            raise AdapterMismatch(f"adapter_config.json: target_modules {targets!r} is not a valid regular "
                                  f"expression ({exc})") from None
    elif not (targets is None or targets == "all-linear"
              or isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise AdapterMismatch(f"adapter_config.json: target_modules must be a list of module names or a regular "
                              f"expression, got {targets!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise AdapterMismatch(f"adapter_config.json: lora_alpha must be a positive finite number, got {alpha!r}")
    pattern = cfg.get("layers_pattern")
    names = [pattern] if isinstance(pattern, str) else pattern or []
    if not isinstance(names, list) or not all(isinstance(n, str) and _LAYER_NAME.fullmatch(n) for n in names):
        raise AdapterMismatch(f"adapter_config.json: layers_pattern must name the layer list's attribute (e.g. "
                              f"\"layers\"), got {str(pattern)[:80]!r}")
    if not isinstance(cfg.get("use_rslora", False), bool):
        raise AdapterMismatch(f"adapter_config.json: use_rslora must be true or false, got {cfg['use_rslora']!r}")
    scale, rule = lora_scale(cfg)
    if scale > MAX_LORA_SCALE:
        raise AdapterMismatch(f"adapter_config.json: {rule} = {scale:g} is over {MAX_LORA_SCALE} (lora_alpha "
                              f"{cfg.get('lora_alpha', 8)}, r {cfg['r']}); trained adapters use 1-4")


def check_adapter_tensors(folder: Path, base: Path | None) -> None:
    """Every tensor is a LoRA A/B matrix of a module the config targets and the base model has, shaped for it,
    paired with its other half at the same rank, and finite. Raises AdapterMismatch naming the tensor."""
    folder = Path(folder)
    cfg = adapter_config(folder)
    check_adapter_config(cfg)
    shapes = safetensors_shapes(folder / ADAPTER_WEIGHTS)
    layers = cfg.get("layers_to_transform")
    layers = {layers} if isinstance(layers, int) else set(layers or [])
    halves: dict[str, dict[str, tuple[int, ...]]] = {}
    known = base_shapes(base) if base is not None else None
    targets = cfg.get("target_modules")
    if _is_pattern(targets):  # matched against the base model's own names, never against the submitter's
        targets = resolve_pattern(targets, None if known is None else module_names(known))
    for key, shape in shapes.items():
        m = LORA_KEY.match(key)
        if not m:
            raise AdapterMismatch(f"adapter tensor {key!r} is not a LoRA A/B matrix (only lora_A/lora_B weights "
                                  "are accepted)")
        module = m["module"]
        if not _targeted(module, targets):
            given = cfg.get("target_modules")
            raise AdapterMismatch(f"adapter tensor {key!r} is for {module.rsplit('.', 1)[-1]!r}, which "
                                  f"target_modules {given!r} does not {'match' if _is_pattern(given) else 'list'}"
                                  + (" (matched against the base model's module names)" if _is_pattern(given) else ""))
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


def _is_pattern(targets: object) -> TypeGuard[str]:
    return isinstance(targets, str) and targets != "all-linear"


def module_names(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The modules of a model that LoRA can adapt: those with a 2-D weight, by their names in its state dict."""
    return sorted(k[: -len(".weight")] for k, shape in shapes.items() if k.endswith(".weight") and len(shape) == 2)


def resolve_pattern(pattern: str, modules: list[str] | None) -> list[str]:
    """The base model's modules a target_modules regular expression selects (peft full-matches it against each
    module's name). Only the evaluator's own names are matched, with the `regex` engine's time limit, so a pattern
    that backtracks is refused within PATTERN_SECONDS instead of holding the process."""
    import time

    import regex

    if modules is None:
        raise AdapterMismatch(f"adapter_config.json: target_modules {pattern!r} is a regular expression, which is "
                              "matched against the base model's module names, and this base model has none to "
                              "match; list the modules instead, e.g. [\"q_proj\", \"v_proj\"]")
    try:
        compiled = regex.compile(pattern, flags=regex.VERSION0)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise AdapterMismatch(f"adapter_config.json: target_modules {pattern!r} is not a valid regular expression "
                              f"({exc})") from None
    deadline = time.monotonic() + PATTERN_SECONDS
    matched = []
    try:
        for name in modules:
            if compiled.fullmatch(name, timeout=max(deadline - time.monotonic(), 1e-3)) is not None:
                matched.append(name)
    except TimeoutError:
        raise AdapterMismatch(f"adapter_config.json: target_modules {pattern!r} did not finish matching the base "
                              f"model's {len(modules)} module names within {PATTERN_SECONDS:g} s (the pattern "
                              "backtracks); list the modules instead, e.g. [\"q_proj\", \"v_proj\"]") from None
    return matched


def explicit_target_modules(folder: str | Path, base: Path | None) -> list[str] | None:
    """With a target_modules pattern: rewrite adapter_config.json to name the base modules the pattern selects, so
    that nothing downstream (the worker, peft, vLLM) runs the submitter's pattern again; returns that list.
    None (and the file untouched) when target_modules is already a list, all-linear or absent."""
    path = Path(folder) / ADAPTER_CONFIG
    cfg = adapter_config(folder)
    pattern = cfg.get("target_modules")
    if not _is_pattern(pattern):
        return None
    cfg["target_modules"] = resolve_pattern(pattern, None if base is None else module_names(base_shapes(base)))
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return cfg["target_modules"]


def _targeted(module: str, targets: str | list[str] | None) -> bool:
    """Whether peft would adapt `module` under `target_modules`: a list names modules by name or dotted suffix
    ('q_proj', 'self_attn.q_proj'), 'all-linear' is every linear layer but the head. A pattern was resolved to
    the list of base modules it selects before this is called (resolve_pattern)."""
    if targets is None:
        return True  # peft's per-architecture defaults; the base-model shape check still applies
    if targets == "all-linear":
        return module.rsplit(".", 1)[-1] != "lm_head"
    return any(module == t or module.endswith("." + t) for t in targets)


def _check_finite(path: Path) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            if not torch.isfinite(f.get_tensor(key)).all():
                raise AdapterMismatch(f"adapter tensor {key!r} holds NaN or infinite values")
