"""Typed configs for every stage: YAML (plus `--set KEY=VALUE` overrides) validated into dataclasses.

A config class is a dataclass whose fields are declared with `option(default, help)`. Loading rejects
unknown keys, wrong types, values a field's `check` refuses and missing files, each with an error that
names the file, the dotted key and what would be right.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from .errors import ConfigError  # also re-exported: configs raise it

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a config class is a dataclass


class CheckError(ValueError):
    """Raised by a config's `check()` for one key; loading turns it into a ConfigError naming the file."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A config field with a help string. Use `factory` for mutable defaults (lists, dicts)."""
    if not help:
        raise TypeError("every config option needs a help string")
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


# ---------------------------------------------------------------------------------------------------
# Reading YAML and overrides


def read_text_file(path: str | Path, what: str = "config file") -> str:
    """The text of an input file; a missing file or a folder is a ConfigError naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: {what} not found")
    if not path.is_file():
        raise ConfigError(f"{path}: expected a file, found a directory")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_yaml_any(path: str | Path) -> Any:
    """Parse a YAML file of any shape (a list, a mapping); bad syntax is a ConfigError with its line and column."""
    try:
        return yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, bad syntax or a non-mapping top level is a ConfigError."""
    path = Path(path)
    data = read_yaml_any(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Return a copy of `data` with `KEY=VALUE` overrides applied; dotted keys reach nested fields.

    Values are parsed as YAML, so `--set seed=3` is an int and `--set tags=[a,b]` a list.
    """
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set seed=3")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r}: the key before '=' is empty")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section, cannot set {key!r}")
            node = child
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------------
# Typed conversion


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "any value"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [_type_name(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " or ".join(names) + suffix
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(inner)
        return f"a list of {plural}" if plural else f"a list of ({_type_name(inner)})"
    if origin is dict:
        _, inner = typing.get_args(tp) or (str, Any)
        return f"a mapping of names to {_type_name(inner)}"
    if (config := _config_class(tp)) is not None:
        return f"a mapping ({config.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    def fail() -> typing.NoReturn:
        raise ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail()
        # `list[C] | None` given a list: the list's own error ('codebook[2].role: ...') says more than 'expected
        # a list or null'.
        shapes = [a for a in args if a is not type(None)]
        if len(shapes) == 1 and (isinstance(value, list) and typing.get_origin(shapes[0]) is list
                                 or isinstance(value, dict) and (typing.get_origin(shapes[0]) is dict
                                                                 or dataclasses.is_dataclass(shapes[0]))):
            return _convert(value, shapes[0], key, source)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        fail()
    if origin is list:
        if not isinstance(value, list):
            fail()
        (inner,) = typing.get_args(tp) or (Any,)
        return [_convert(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        _, inner = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, inner, f"{key}.{k}", source) for k, v in value.items()}
    if (config := _config_class(tp)) is not None:
        if not isinstance(value, dict):
            fail()
        return from_dict(config, value, source=source, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        # YAML reads `seed: 1e3` or `name: 2024` as numbers; a string field takes the text as written.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"config type {tp!r} is not supported")  # a bug in a config class, not user input


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """Build the dataclass `cls` from plain data, validating keys, types and the class's `check()`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean {prefix + close[0]!r}?" if close else "."
        raise ConfigError(
            f"{source}: unknown key {prefix + str(key)!r}{hint} Valid keys: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {prefix + name!r} ({f.metadata.get('help', '')})")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except CheckError as exc:
            raise ConfigError(f"{source}: {prefix}{exc.key}: {exc.message}") from None
    return obj


def load_config(cls: type[T], path: str | Path | None, overrides: typing.Iterable[str] = ()) -> T:
    """Load `cls` from a YAML file (or defaults when `path` is None) with `KEY=VALUE` overrides."""
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        data = apply_overrides(data, overrides)
        source += " (with --set " + " ".join(overrides) + ")"
    return from_dict(cls, data, source=source)


def to_dict(obj: Any) -> dict[str, Any]:
    """The resolved config as plain data (what manifests record)."""
    return dataclasses.asdict(obj)


def _plain(obj: Any) -> Any:
    """JSON fallback for defaults that are configs themselves (e.g. a dict of TrackSetup)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else str(obj)


def _is_dict(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_dict(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is dict


def _entry_config(tp: Any) -> type | None:
    """The config class of a `dict[str, C]` or `list[C]` field (optionally `| None`), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [_entry_config(a) for a in typing.get_args(tp) if a is not type(None)]
        return next((c for c in found if c is not None), None)
    if typing.get_origin(tp) in (dict, list):
        return _config_class(typing.get_args(tp)[-1]) if typing.get_args(tp) else None
    return None


def _config_class(tp: Any) -> type[DataclassInstance] | None:
    """`tp` when it is a config class (a dataclass), else None."""
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per option: key, type, default and help; nested configs are expanded."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if (config := _config_class(tp)) is not None:
            lines.append(f"{prefix}{f.name}: {f.metadata.get('help', '')}")
            lines.extend(describe(config, prefix=f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = json.dumps(f.default, default=_plain)
        elif f.default_factory is not dataclasses.MISSING:
            default = json.dumps(f.default_factory(), default=_plain)
        else:
            default = "(required)"
        lines.append(f"{prefix}{f.name} ({_type_name(tp)}, default {default}): {f.metadata.get('help', '')}")
        entry = _entry_config(tp)
        if entry is not None:  # a dict or list of configs: describe one entry's keys
            lines.extend(describe(entry, prefix=f"{prefix}{f.name}{'.NAME' if _is_dict(tp) else '[i]'}."))
        elif (optional := _optional_config(tp)) is not None:  # `C | None`: its keys, when given
            lines.extend(describe(optional, prefix=f"{prefix}{f.name}."))
    return lines


def _optional_config(tp: Any) -> type | None:
    """The config class of a `C | None` field, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [c for a in typing.get_args(tp) if (c := _config_class(a)) is not None]
        return found[0] if len(found) == 1 else None
    return None
