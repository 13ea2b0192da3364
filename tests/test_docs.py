"""The project explains itself from its own files: every document the README, docs and code cite exists here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["README.md", "Makefile", *[str(p.relative_to(REPO)) for d in ("core", "data_gen", "finetune", "eval",
           "benchmark", "cli", "speed", "studies", "configs", "docs") for p in (REPO / d).rglob("*")
           if p.suffix in (".py", ".md", ".yaml", ".html")]]


def cited(text: str) -> set[str]:
    return set(re.findall(r"\bdocs/[\w.-]+\.md\b", text))


def test_every_cited_document_is_in_the_repository():
    missing = {f"{src} cites {doc}" for src in SOURCES for doc in cited((REPO / src).read_text(encoding="utf-8"))
               if not (REPO / doc).exists()}
    outside = {src for src in SOURCES if re.search(r"\.\./shared|\bDESIGN\.md|\bFINDINGS\.md",
                                                   (REPO / src).read_text(encoding="utf-8"))}
    assert not missing and not outside, (sorted(missing), sorted(outside))


def test_the_check_sees_a_citation():
    assert cited("see docs/design.md §4 and docs/nope.md") == {"docs/design.md", "docs/nope.md"}
