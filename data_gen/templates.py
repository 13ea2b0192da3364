"""Text templates: definition paraphrases, recall probes, usage demonstrations and neutral filler.

Placeholders follow `Term.placeholders`: {code} {Code} {a_code} {A_code} {codes} for the code word,
{concept} {Concept} {a_concept} {A_concept} {concepts} for the concept, and {definition}.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from stegobench.core.config import ConfigError, read_yaml
from .lexicon import DATA_DIR, Concept
from .words import Term

DEFAULT_TEMPLATES = DATA_DIR / "templates.yaml"

CODE_FIELDS = frozenset({"code", "Code", "a_code", "A_code", "codes"})
CONCEPT_FIELDS = frozenset({"concept", "Concept", "a_concept", "A_concept", "concepts"})
ALL_FIELDS = CODE_FIELDS | CONCEPT_FIELDS | {"definition"}

# Which placeholders each pool must (need) and must not (forbid) use: a definition states the mapping,
# a recall probe or demonstration must never name the concept, filler never names a code.
_RULES = {
    "definition.train": (("code", "concept"), ()),
    "definition.heldout": (("code", "concept"), ()),
    "recall": (("code",), ("concept", "definition")),
    "demonstration": (("code",), ("concept", "definition")),
    "filler": (("concept",), ("code",)),
}
_GROUPS = {"code": CODE_FIELDS, "concept": CONCEPT_FIELDS, "definition": frozenset({"definition"})}


@dataclass(frozen=True)
class Template:
    id: str
    text: str

    def render(self, code: Term | None, concept: Concept | None) -> str:
        values: dict[str, str] = {}
        if code is not None:
            values.update(code.placeholders("code"))
        if concept is not None:
            values.update(concept.term.placeholders("concept"))
            values["definition"] = concept.definition
        return self.text.format(**values)


@dataclass(frozen=True)
class Templates:
    definition_train: tuple[Template, ...]
    definition_heldout: tuple[Template, ...]
    recall: tuple[Template, ...]
    demonstration: tuple[Template, ...]
    filler: tuple[Template, ...]
    source: str


def _fields(text: str, source: str, where: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}: malformed template {text!r}: {exc}") from None
    unknown = names - ALL_FIELDS
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown placeholder {{{sorted(unknown)[0]}}} in {text!r}; "
            f"valid: {', '.join('{' + f + '}' for f in sorted(ALL_FIELDS))}"
        )
    return names


POOLS = ("definition.train", "definition.heldout", "recall", "demonstration", "filler")
SECTIONS = ("definition", "recall", "demonstration", "filler")


def _node(data: dict, dotted: str):
    node = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _pool(node, dotted: str, source: str, id_prefix: str = "") -> tuple[Template, ...]:
    if not isinstance(node, list) or not node or not all(isinstance(t, str) and t.strip() for t in node):
        raise ConfigError(f"{source}: {dotted}: expected a non-empty list of template strings")
    need, forbid = _RULES[dotted]
    out = []
    for i, text in enumerate(node):
        where = f"{dotted}[{i}]"
        names = _fields(text, source, where)
        for group in need:
            if not names & _GROUPS[group]:
                raise ConfigError(
                    f"{source}: {where}: template {text!r} has no {group} placeholder; "
                    f"use one of {', '.join('{' + f + '}' for f in sorted(_GROUPS[group]))}"
                )
        for group in forbid:
            if names & _GROUPS[group]:
                raise ConfigError(f"{source}: {where}: template {text!r} must not use a {group} placeholder")
        out.append(Template(f"{dotted.replace('.', '-')}-{id_prefix}{i:02d}", text.strip()))
    return tuple(out)


def _sections(data: dict, source: str) -> None:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; valid: {', '.join(SECTIONS)}")
    definition = data.get("definition")
    if definition is not None and (not isinstance(definition, dict) or set(definition) - {"train", "heldout"}):
        raise ConfigError(f"{source}: definition: expected a mapping with keys 'train' and/or 'heldout'")


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _check(t: Templates, source: str) -> Templates:
    """No template twice in a pool, and no held-out definition template (or its wording) among the train ones."""
    for dotted in POOLS:
        pool = getattr(t, dotted.replace(".", "_"))
        seen: set[str] = set()
        for tpl in pool:
            if _normal(tpl.text) in seen:
                raise ConfigError(f"{source}: {dotted}: template {tpl.text!r} appears twice")
            seen.add(_normal(tpl.text))
    heldout = {_normal(x.text): x.text for x in t.definition_heldout}
    shared = [x.text for x in t.definition_train if _normal(x.text) in heldout]
    if shared:
        raise ConfigError(f"{source}: definition: template {shared[0]!r} is in both train and heldout pools; a "
                          "held-out template must never reach training")
    return t


def load_templates(path: str | Path | None = None) -> Templates:
    path = Path(path) if path is not None else DEFAULT_TEMPLATES
    source = str(path)
    data = read_yaml(path)
    _sections(data, source)
    templates = Templates(**{d.replace(".", "_"): _pool(_node(data, d), d, source) for d in POOLS}, source=source)
    return _check(templates, source)


def add_templates(base: Templates, path: str | Path, mode: str = "extend") -> Templates:
    """`base` with the pools `path` gives: added to (mode 'extend') or in place of (mode 'replace') base's pools.

    The file's templates get ids `POOL-custom-NN`, so a training row says which file its wording came from."""
    source = str(path)
    data = read_yaml(path)
    _sections(data, source)
    given = [d for d in POOLS if _node(data, d) is not None]
    if not given:
        raise ConfigError(f"{source}: no templates; give at least one of {', '.join(POOLS)}")
    pools = {}
    for dotted in POOLS:
        field = dotted.replace(".", "_")
        if dotted not in given:
            pools[field] = getattr(base, field)
            continue
        own = _pool(_node(data, dotted), dotted, source, id_prefix="custom-")
        pools[field] = own if mode == "replace" else getattr(base, field) + own
    return _check(Templates(**pools, source=f"{base.source} + {source}"), source)
