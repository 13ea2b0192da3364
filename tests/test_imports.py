"""Imports go one way: core <- data_gen <- {finetune, eval} <- benchmark <- {studies, cli}, always through the
`stegobench.` namespace, and no two modules import each other (directly or round a longer loop). A back edge,
a bare `import eval` or a cycle fails here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "stegobench"
# package -> the project packages it may import
ALLOWED = {
    "core": set(),
    "data_gen": {"core"},
    "finetune": {"core", "data_gen"},
    "eval": {"core", "data_gen"},
    "benchmark": {"core", "data_gen", "finetune", "eval"},
    "studies": {"core", "data_gen", "finetune", "eval", "benchmark"},
    # the commands: every stage below them, and nothing imports them
    "cli": {"core", "data_gen", "finetune", "eval", "benchmark"},
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path, root: Path) -> tuple[set[str], set[str]]:
    """(project modules imported anywhere in the file, lazy imports included, as 'eval.harness';
    stage packages imported without the namespace)."""
    me = _module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found, bare = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            head, _, rest = name.partition(".")
            if head in ALLOWED:
                if not isinstance(node, ast.ImportFrom) or not node.level:
                    bare.add(head)
                found.add(name)
            elif head == NAMESPACE and rest.split(".")[0] in ALLOWED:
                found.add(rest)
    return found, bare


def _graph(root: Path) -> dict[str, set[str]]:
    files = {_module_name(p, root): p for package in ALLOWED for p in (root / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = _imported_modules(path, root)[0]
        # `from x import y` names a module y or an attribute of x: keep whichever is a module of the project.
        graph[module] = {t if t in files else t.rpartition(".")[0] for t in targets} & set(files) - {module}
    return graph


def back_edges(root: Path = REPO) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            modules, bare = _imported_modules(path, root)
            targets = {m.split(".")[0] for m in modules}
            for target in sorted(targets - allowed - {package}):
                bad.append(f"{path.relative_to(root)} imports {target}")
            for name in sorted(bare):
                bad.append(f"{path.relative_to(root)} imports {name} without the {NAMESPACE}. namespace")
    return bad


def cycles(root: Path = REPO) -> list[list[str]]:
    """Every import loop between project modules (a package's __init__ importing its own modules excluded)."""
    graph = _graph(root)
    for module in graph:  # a package re-exporting its modules is not a loop
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_imports_go_one_way():
    assert back_edges() == []


def test_no_import_cycles():
    assert cycles() == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_find_a_planted_back_edge_bare_import_and_cycle(tmp_path):
    root = _plant(tmp_path, {
        "core/bad.py": "def f():\n    from stegobench.eval.harness import run_eval\n",
        "eval/bare.py": "import benchmark.cli\n",
        "studies/a.py": "from .b import g\n",
        "studies/b.py": "def g():\n    from stegobench.studies.a import h\n",
    })
    assert back_edges(root) == ["core/bad.py imports eval", "eval/bare.py imports benchmark",
                                "eval/bare.py imports benchmark without the stegobench. namespace"]
    assert cycles(root) == [["studies.a", "studies.b", "studies.a"]]


def test_no_package_code_enables_remote_code():
    """A submitted model folder's own Python never runs: no package module passes trust_remote_code=True, and the
    one causal-LM loader and the vLLM engine say False explicitly rather than lean on a library default."""
    enabled = [f"{p.relative_to(REPO)}:{i}" for package in ALLOWED for p in (REPO / package).rglob("*.py")
               for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if "trust_remote_code=True" in line.replace(" ", "")]
    assert enabled == []
    for path in ("core/causal_lm.py", "eval/backends/vllm_backend.py"):
        assert "trust_remote_code=False" in (REPO / path).read_text(encoding="utf-8"), path
