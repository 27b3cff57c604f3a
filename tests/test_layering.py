"""Imports run one way: backtrace -> baselines -> metrics -> experiments -> run.py, and inside
experiments: errors -> data -> zoo -> run -> report -> the API and the entry modules.

Every module's imports are read with ``ast`` (module-level ones and those inside functions alike,
relative ones resolved), and the test fails on an import from a lower layer up into a higher one
and on any loop of imports between modules, naming the modules and the lines. The same check runs
on small trees written here, so it is seen to fail where it should.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and the layers before it. A module belongs to
# the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("backtrace", ("backtrace",)),
    ("baselines", ("baselines",)),
    ("metrics", ("metrics",)),
    ("experiments.errors", ("experiments.errors",)),
    ("experiments.data", ("experiments.data",)),
    ("experiments.zoo", ("experiments.zoo",)),
    ("experiments.run", ("experiments.run",)),
    ("experiments.report", ("experiments.report",)),
    ("experiments: the API and the entry modules", ("experiments",)),
    ("run.py", ("run",)),
]

Edge = tuple[str, str, str]   # importer, imported, "path:line"


def module_files(root: Path, layers: list[tuple[str, tuple[str, ...]]]) -> dict[str, Path]:
    """Module name -> file, for every package and module the layers name (``run`` is run.py)."""
    tops = {prefix.split(".")[0] for _, prefixes in layers for prefix in prefixes}
    found: dict[str, Path] = {}
    for top in sorted(tops):
        if (root / f"{top}.py").is_file():
            found[top] = root / f"{top}.py"
        for path in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else []:
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The known module that an imported dotted name lands in (a name inside a module: the module)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Edge]:
    """Every import of one module that lands in a known module, at any depth of the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``, mod itself
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                yield module, target, where


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]]) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index < 0:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS")
    return index


def upward_imports(edges: list[Edge], layers: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """One line per import from a lower layer up into a higher one."""
    out = []
    for importer, imported, where in edges:
        low, high = layer_of(importer, layers), layer_of(imported, layers)
        if high > low:
            out.append(f"{where}: {importer} ({layers[low][0]}) imports {imported} ({layers[high][0]}), a higher layer")
    return out


def import_loops(edges: list[Edge]) -> list[list[str]]:
    """The modules of every loop of imports (strongly connected components of two or more), sorted."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in edges:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:   # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(loops)


def check(root: Path, layers: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Every upward import and every loop under ``root``, one line each; empty when the imports
    run one way."""
    known = module_files(root, layers)
    edges = sorted({edge for module, path in known.items() for edge in imports(module, path, known)})
    problems = upward_imports(edges, layers)
    for loop in import_loops(edges):
        inside = [f"{where}: {a} -> {b}" for a, b, where in edges if a in loop and b in loop]
        problems.append(f"import loop {' <-> '.join(loop)} ({'; '.join(inside)})")
    return problems


def test_the_project_imports_run_one_way():
    known = module_files(ROOT, LAYERS)
    assert {"baselines.vocabulary", "metrics.text", "experiments.run.config", "experiments.api", "run"} <= set(known)
    problems = check(ROOT, LAYERS)
    assert problems == [], "\n".join(problems)


TOY_LAYERS = [("low", ("low",)), ("mid", ("mid",)), ("mid.top", ("mid.top",)), ("app", ("app",))]
CLEAN = {
    "low/__init__.py": "",
    "low/words.py": "import os\nWORDS = ('a', 'b')\n",
    "low/tools.py": "from .words import WORDS\n",
    "mid/__init__.py": "",
    "mid/core.py": "from low import tools\nfrom low.words import WORDS\n",
    "mid/top/__init__.py": "",
    "mid/top/page.py": "from mid.core import *\nimport low.words as w\n",
    "app.py": "from mid.top import page\n",
}


@pytest.mark.parametrize("change,expected", [
    ({}, []),
    ({"low/tools.py": "from .words import WORDS\n\ndef late():\n    from mid.core import x\n"},
     ["low/tools.py:4: low.tools (low) imports mid.core (mid), a higher layer",
      "import loop low.tools <-> mid.core"]),
    ({"mid/core.py": "import low.words\nimport mid.top.page\n"},
     ["mid/core.py:2: mid.core (mid) imports mid.top.page (mid.top), a higher layer",
      "import loop mid.core <-> mid.top.page"]),
    ({"low/words.py": "from . import tools\n"}, ["import loop low.tools <-> low.words"]),
    ({"low/words.py": "from low.tools import helper\n", "low/tools.py": "def f():\n    from .words import WORDS\n"},
     ["import loop low.tools <-> low.words"]),
], ids=["clean", "upward-inside-a-function", "upward-and-loop", "relative-loop", "loop-through-a-function"])
def test_the_check_finds_upward_imports_and_loops_in_a_toy_tree(tmp_path, change, expected):
    for name, text in {**CLEAN, **change}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = [p.replace(f"{tmp_path}/", "") for p in check(tmp_path, TOY_LAYERS)]
    assert len(problems) == len(expected), problems
    for line, want in zip(problems, expected):
        assert line.startswith(want), (line, want)


def test_a_module_outside_every_layer_is_named():
    with pytest.raises(AssertionError, match="module plugins.extra is in no layer"):
        layer_of("plugins.extra", TOY_LAYERS)


MAX_LINES = 600
SOURCE_FOLDERS = ("backtrace", "baselines", "metrics", "experiments", "configs", "benchmarks", "examples", "tests")


def test_no_source_file_is_over_600_lines():
    """Small modules: a file past 600 lines holds more than one thing and is split by meaning."""
    long = {str(p.relative_to(ROOT)): n for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert (ROOT / "run.py").is_file() and len((ROOT / "run.py").read_text().splitlines()) <= MAX_LINES
    assert long == {}
