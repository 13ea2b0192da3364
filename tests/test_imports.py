"""Imports go one way: core <- data_gen <- {finetune, eval} <- benchmark <- studies. A back edge fails here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# package -> the project packages it may import
ALLOWED = {
    "core": set(),
    "data_gen": {"core"},
    "finetune": {"core", "data_gen"},
    "eval": {"core", "data_gen"},
    "benchmark": {"core", "data_gen", "finetune", "eval"},
    "studies": {"core", "data_gen", "finetune", "eval", "benchmark"},
}


def _imports(path: Path) -> set[str]:
    """Top-level project packages imported anywhere in the file (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


def back_edges(root: Path = REPO) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for target in sorted(_imports(path) - allowed - {package}):
                bad.append(f"{path.relative_to(root)} imports {target}")
    return bad


def test_imports_go_one_way():
    assert back_edges() == []


def test_the_check_finds_a_planted_back_edge(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "core" / "bad.py").write_text("def f():\n    from eval.harness import run_eval\n")
    assert back_edges(tmp_path) == ["core/bad.py imports eval"]
