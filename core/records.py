"""Typed records on disk: one validating model per file kind, and one way to load a file into it.

Corpus rows and manifests (data_gen), train_manifest.json (finetune) and results.json (eval/runlog.py) are
pydantic dataclasses: they construct like the plain dataclasses they replaced (positionally, `replace`, `asdict`)
and validate the same way whether built in code or read from JSON. A file that does not fit its model fails here
with one line naming the file, the field (as a dotted path) and what it should hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from .errors import InputError

T = TypeVar("T")

# Records refuse fields they do not declare: a misspelt or foreign key is an error naming it, never dropped
# silently (a new field is a new schema version, and a migration fills it in older files).
STRICT_FIELDS = ConfigDict(extra="forbid")


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}  # building one costs milliseconds: once per record class


def _adapter(cls: type) -> TypeAdapter[Any]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def none_when_absent(data: Any, *names: str) -> Any:
    """`data` (a dict read from a file) with each of `names` it lacks set to None: optional fields that older files
    leave out, where a dataclass cannot give them a default because a required field follows them."""
    if isinstance(data, dict) and any(n not in data for n in names):
        return {**dict.fromkeys(names), **data}
    return data


def plain(record: Any) -> Any:
    """A record as plain JSON data: dicts, lists, strings and numbers (enum members become their strings)."""
    return _adapter(type(record)).dump_python(record, mode="json")


def describe(error: ValidationError, limit: int = 3) -> str:
    """The first few problems of a failed validation as 'field.path: what is wrong (got VALUE)'."""
    parts = []
    for e in error.errors()[:limit]:
        if e["type"] == "value_error":  # a validator's own message (a migration's, say) says everything
            message, got = str(e["ctx"]["error"]), None
        else:
            got = e.get("input")
            shown = "" if e["type"] == "missing" or isinstance(got, (dict, list)) else f" (got {_short(got)})"
            message = f"{e['msg']}{shown}"
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {message}" if where else message)
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def validate(cls: type[T], data: Any, where: str, error: type[Exception] = InputError) -> T:
    """`data` as a `cls`, or `error` naming `where` (the file) and the fields that do not fit."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise error(f"{where}: {describe(e)}") from None


def read_json(path: Path, missing: str, error: type[Exception] = InputError, hint: str = "") -> Any:
    """The JSON document at `path`, or `error`: `missing` when there is no such file, else the file and why it
    cannot be read, then `hint` (what would fix it)."""
    if not path.is_file():
        raise error(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{path}: unreadable ({e}){hint}") from None


def read_json_record(cls: type[T], path: Path, what: str, error: type[Exception] = InputError) -> T:
    """The JSON file at `path` as a `cls`; `what` says which stage writes such files, for the missing-file error."""
    data = read_json(path, f"{path.parent}: no {path.name}; expected a folder written by {what}", error)
    return validate(cls, data, str(path), error)
