"""Checks a submission must pass before it is queued, in the order docs/design.md §6 gives.

Each failure is a `Rejected` whose message is stored as the submission's reason and shown to the submitter:
1. configs load without remote code;  2. weights are safetensors (pickle files are refused by name, never
opened);  3. LoRA rank within the limit, no modules_to_save, every tensor fits the named base model;
4. total size within the cap;  5. not a duplicate (checked by the store, against a unique key).
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from stegobench.core.adapters import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, LORA_KEY, adapter_content_sha256, base_shapes,
                                      check_adapter_tensors, explicit_target_modules, read_json_bounded)
from stegobench.core.errors import InputError, UserError
from stegobench.core.provenance import sha256_json

from .artifacts import ADAPTER_FILES, PICKLE_SUFFIXES


class Rejected(UserError):
    """A submission failed validation; the message says why and what would pass (the submitter's to fix)."""


@dataclass(frozen=True)
class Checked:
    kind: str
    base_path: Path | None  # the base model folder (None for mock policies)
    size_bytes: int
    content_sha256: str | None = None  # an adapter's canonical content (core/adapters.py), for deduplication


def resolve_base(spec: str, allowed: list[str], allow_folders: bool) -> Path | None:
    """The base model folder for `spec`; mock policies (tests) have none."""
    if spec not in allowed and not (allow_folders and Path(spec).expanduser().is_dir()):
        raise Rejected(f"base model {spec!r} is not accepted by this evaluator; choose one of: {', '.join(allowed)}")
    from stegobench.eval.backends import is_scripted_model

    if is_scripted_model(spec):
        return None
    from stegobench.core.models import resolve_model

    try:
        return resolve_model(spec).path
    except UserError as exc:
        raise Rejected(str(exc)) from None


_CONFIG_LOCK = threading.Lock()


# What the forkserver imports once, so that each isolated validation forks ready to run (validate_isolated).
_PRELOAD = ["safetensors", "torch", "regex", "transformers", "stegobench.benchmark.validation",
            "stegobench.core.models", "stegobench.eval.backends"]


def load_checkers(isolated: bool = False) -> None:
    """Import now what checking a submission would import lazily. A server calls this at start-up: transformers'
    lazy module is not safe to import from parallel request threads (parallel first uploads failed with
    "ImportError: cannot import name 'AutoConfig'"). With `isolated`, also start the process that validations
    fork from (validate_isolated), in the background: it imports torch, which takes seconds."""
    import safetensors  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoConfig  # noqa: F401

    from stegobench.core import models  # noqa: F401
    from stegobench.eval import backends  # noqa: F401

    if isolated:
        _CONTEXT.set_forkserver_preload(_PRELOAD)
        threading.Thread(target=_start_forkserver, name="validation-forkserver", daemon=True).start()


def _load_config_safely(folder: Path, what: str):
    from transformers import AutoConfig

    raw = _read_json(folder / "config.json", f"{what} config.json")
    if not isinstance(raw, dict):
        raise Rejected(f"{what} config.json: expected a JSON object, got {type(raw).__name__}")
    if raw.get("auto_map"):
        raise Rejected(f"{what} config.json has auto_map (custom code); only built-in transformers architectures are "
                       "accepted (trust_remote_code is never enabled)")
    try:
        with _CONFIG_LOCK:  # its first call per architecture imports that config class lazily too
            return AutoConfig.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is the submitter's config
        raise Rejected(f"{what} config.json does not load with trust_remote_code=False: {exc}") from None


def _safetensors_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - a malformed header is the submitter's file
        raise Rejected(f"{what} {path.name} is not a valid safetensors file ({exc}); save weights with "
                       "safetensors (peft: save_pretrained(..., safe_serialization=True))") from None


def _read_json(path: Path, what: str):
    """A submitted JSON file, bounded in size and depth before it is parsed (core/adapters.py)."""
    try:
        return read_json_bounded(path, what)
    except InputError as exc:
        raise Rejected(str(exc)) from None


def check_adapter_files(folder: Path, base: Path | None, max_rank: int) -> None:
    # 1. config
    cfg = _read_json(folder / ADAPTER_CONFIG, ADAPTER_CONFIG)
    if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
        raise Rejected(f"adapter_config.json: peft_type must be 'LORA', got {cfg.get('peft_type') if isinstance(cfg, dict) else cfg!r}")
    # peft records auto_mapping for AutoPeftModel; a parent_library outside transformers would import custom code.
    library = str((cfg.get("auto_mapping") or {}).get("parent_library", "transformers."))
    if cfg.get("trust_remote_code"):
        raise Rejected("adapter_config.json sets trust_remote_code: this evaluator never runs a submission's code; "
                       "remove the key")
    if not library.startswith("transformers."):
        raise Rejected(f"adapter_config.json asks for custom code (auto_mapping.parent_library {library!r}); "
                       "trust_remote_code is never enabled")
    if base is not None:
        _load_config_safely(base, "base model")
        _check_named_base(cfg, base)
    # 2. weights
    shapes = _safetensors_shapes(folder / ADAPTER_WEIGHTS, "adapter")
    # 3. rank, modules_to_save, shapes
    ranks = [cfg.get("r", 0)] + list((cfg.get("rank_pattern") or {}).values())
    if any(not isinstance(r, int) or r < 1 for r in ranks):
        raise Rejected(f"adapter_config.json: rank r must be a positive integer, got {ranks}")
    if max(ranks) > max_rank:
        raise Rejected(f"adapter rank {max(ranks)} exceeds this evaluator's limit of {max_rank}")
    if not shapes:
        raise Rejected("adapter_model.safetensors holds no tensors")
    for key, shape in shapes.items():
        m = LORA_KEY.match(key)
        rank = (shape[0] if m["ab"] == "A" else shape[-1]) if m and shape else 0  # the config's r can understate it
        if rank > max_rank:
            raise Rejected(f"adapter tensor {key!r} has rank {rank}, over this evaluator's limit of {max_rank}")
    try:
        check_adapter_tensors(folder, base)  # the one fit check eval uses too
    except UserError as exc:
        raise Rejected(str(exc)) from None


def _check_named_base(cfg: dict, base: Path) -> None:
    """An adapter that names a builtin base model (`stegobench train` writes the builtin's name; older adapters its
    absolute path in a $STEGOBENCH_HOME) is submitted for that one: the shapes of two builtins may well agree."""
    from stegobench.core.models import BUILTINS, adapter_base_model

    named = adapter_base_model(cfg)
    if named in BUILTINS and base.name in BUILTINS and named != base.name:
        raise Rejected(f"adapter_config.json: base_model_name_or_path names {named!r}, the model the adapter was "
                       f"trained on, but it is submitted for {base.name!r}; submit it for {named!r}")


def check_merged_files(folder: Path, base: Path | None) -> None:
    if not (folder / "config.json").exists():
        raise Rejected("a merged model needs config.json")
    _load_config_safely(folder, "merged model")
    for name in ("generation_config.json", "model.safetensors.index.json"):  # read by transformers when served
        if (folder / name).exists():
            _read_json(folder / name, f"merged model {name}")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise Rejected("a merged model needs model.safetensors (or model-0000N-of-0000M.safetensors shards)")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in weights:
        shapes.update(_safetensors_shapes(f, "merged model"))
    if base is None:
        return
    known = base_shapes(base)
    tied = {"lm_head.weight"}  # tied embeddings may be saved once or twice
    missing = sorted(set(known) - set(shapes) - tied)
    extra = sorted(set(shapes) - set(known) - tied)
    if missing or extra:
        raise Rejected(f"merged model tensors do not match the base model: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, shape in shapes.items():
        if key in known and known[key] != shape:
            raise Rejected(f"merged model tensor {key!r} has shape {list(shape)}; the base model's is {list(known[key])}")


def check_submission(staged: Path, kind: str, base: Path | None, max_rank: int, max_bytes: int,
                     pickles: list[str]) -> Checked:
    """Validate the files in `staged` (already given their canonical names). Raises Rejected. An adapter whose
    target_modules is a pattern leaves with it resolved to the base modules it selects (stored so)."""
    content = None
    if kind == "adapter":
        missing = [n for n in ADAPTER_FILES if not (staged / n).exists()]
        if ADAPTER_CONFIG in missing:
            raise Rejected("an adapter submission needs adapter_config.json (written by peft's save_pretrained)")
        if pickles or ADAPTER_WEIGHTS in missing:
            raise Rejected(f"weights must be safetensors; {', '.join(pickles) or 'no adapter_model.safetensors'} "
                           f"refused ({'/'.join(PICKLE_SUFFIXES)} files unpickle, i.e. run code, when loaded)")
        check_adapter_files(staged, base, max_rank)
        try:
            explicit_target_modules(staged, base)
            content = adapter_content_sha256(staged)
        except UserError as exc:
            raise Rejected(str(exc)) from None
    elif kind == "merged":
        if pickles:
            raise Rejected(f"weights must be safetensors; {', '.join(pickles)} refused (pickle files run code when loaded)")
        check_merged_files(staged, base)
    size = sum(p.stat().st_size for p in staged.iterdir() if p.is_file())
    if size > max_bytes:
        raise Rejected(f"submission is {size / 2**20:.1f} MiB, over this evaluator's cap of {max_bytes / 2**20:.0f} MiB")
    return Checked(kind, base, size, content)


# -- validation in its own process ----------------------------------------------------------------------------
# A server must not validate in its own interpreter: CPython's `re`, a C parser or a long tensor scan can hold
# the GIL for as long as the input makes them run, and every page waits. A forked child (from a forkserver, so
# never a copy of the server's threads) does the work and is killed at the time limit.

_CONTEXT = multiprocessing.get_context("forkserver")
CHECK = check_submission  # what validate_isolated runs in the child (by reference; tests swap in a slow one)


def _start_forkserver() -> None:
    try:
        proc = _CONTEXT.Process(target=int, daemon=True)
        proc.start()
        proc.join()
    except Exception:  # noqa: BLE001 - the first validation starts it again and reports what went wrong
        pass


def _run_check(check, args: tuple, conn) -> None:
    try:
        conn.send(("ok", check(*args)))
    except Rejected as exc:
        conn.send(("rejected", str(exc)))
    except BaseException:  # noqa: BLE001 - reported to the server, which logs it
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class ValidationCrashed(RuntimeError):
    """The validating process failed in a way that is not a refusal (the evaluator's fault, logged in full)."""


def validate_isolated(timeout: float, staged: Path, kind: str, base: Path | None, max_rank: int, max_bytes: int,
                      pickles: list[str]) -> Checked:
    """check_submission in a child process, killed after `timeout` seconds (then the submission is refused)."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    proc = _CONTEXT.Process(target=_run_check, args=(CHECK, (staged, kind, base, max_rank, max_bytes, pickles),
                                                     sender), name="stegobench-validate", daemon=True)
    try:
        proc.start()
        sender.close()
        if not receiver.poll(timeout):
            raise Rejected(f"validation took over {timeout:g} s and was stopped; a well-formed submission of this "
                           "size is checked in seconds")
        try:
            status, value = receiver.recv()
        except EOFError:
            proc.join(5)
            raise ValidationCrashed(f"the validating process ended without an answer (exit code {proc.exitcode})") \
                from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        receiver.close()
    if status == "rejected":
        raise Rejected(value)
    if status == "error":
        raise ValidationCrashed(f"validation failed inside its process:\n{value}")
    return value


def dedup_key(track: str, base_model: str, content_sha256: str | None) -> str:
    """Same track, base model and content => the same entry. Content is canonical (core/adapters.py for an
    adapter: re-indenting its config or naming another training path is the same adapter). A revision is not
    part of it: bases are the evaluator's own builtins or folders, never fetched by revision, so `--revision`
    cannot make the same weights a new entry."""
    return sha256_json({"track": track, "base_model": base_model, "content": content_sha256 or ""})
