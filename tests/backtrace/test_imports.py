"""The engine's imports, read from the source (function-level imports too): no loop between its
modules and nothing from the layers above it (baselines, metrics, experiments, run.py)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "backtrace"
ABOVE = ("baselines", "metrics", "experiments", "run")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules ``path`` imports, anywhere in it: ``from a import b`` counts as ``a.b`` when
    that is a module, else as ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import loop among the engine's modules (empty when there is none)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d not in graph:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_the_engine_has_no_import_loop() -> None:
    graph = _graph()
    assert len(graph) > 20 and "backtrace.frontends.lowering" in graph["backtrace.frontends.torch_fx"]
    assert _cycle(graph) == []


def test_the_engine_imports_nothing_from_the_layers_above() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in _graph().items() for d in deps if d.split(".")[0] in ABOVE)
    assert upward == []


def test_a_loop_is_found() -> None:
    """The checker itself: a loop through three modules, and none in a chain."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a", "os"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
