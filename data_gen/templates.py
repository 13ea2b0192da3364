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


def _pool(data: dict, dotted: str, source: str) -> tuple[Template, ...]:
    node = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
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
        out.append(Template(f"{dotted.replace('.', '-')}-{i:02d}", text.strip()))
    if len({t.text for t in out}) != len(out):
        raise ConfigError(f"{source}: {dotted}: a template appears twice")
    return tuple(out)


def load_templates(path: str | Path | None = None) -> Templates:
    path = Path(path) if path is not None else DEFAULT_TEMPLATES
    source = str(path)
    data = read_yaml(path)
    unknown = set(data) - {"definition", "recall", "demonstration", "filler"}
    if unknown:
        raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; valid: definition, recall, demonstration, filler")
    templates = Templates(
        definition_train=_pool(data, "definition.train", source),
        definition_heldout=_pool(data, "definition.heldout", source),
        recall=_pool(data, "recall", source),
        demonstration=_pool(data, "demonstration", source),
        filler=_pool(data, "filler", source),
        source=source,
    )
    shared = {t.text for t in templates.definition_train} & {t.text for t in templates.definition_heldout}
    if shared:
        raise ConfigError(f"{source}: definition: template {sorted(shared)[0]!r} is in both train and heldout pools")
    return templates
