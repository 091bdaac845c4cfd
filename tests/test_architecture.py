"""The layout's rules, checked on the source: layers import only downwards, no cycles, small modules.

See docs/architecture.md. Type-checking imports count: a cycle through them is still a tangle a
reader has to unpick.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tap_pgcdc"
MAX_LINES = 500
# What each leaf layer may import from the package (besides itself).
LEAF_LAYERS = {
    "tap_pgcdc.pg": {"tap_pgcdc.errors", "tap_pgcdc.typemap", "tap_pgcdc.types"},
    "tap_pgcdc.replication": {
        "tap_pgcdc.errors",
        "tap_pgcdc.pg",
        "tap_pgcdc.typemap",
        "tap_pgcdc.types",
    },
}
THIRD_PARTY_SINGER_SIDE = ("singer_sdk", "sqlalchemy", "click")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any level (type-checking and function-local included)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {dep for dep in _imports(path) if dep in modules and dep != name}
    return graph


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_leaf_layers_import_only_downwards() -> None:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    wrong = []
    for name, path in sorted(modules.items()):
        for layer, allowed in LEAF_LAYERS.items():
            if not _within(name, layer):
                continue
            for dep in sorted(_imports(path)):
                if dep.startswith(THIRD_PARTY_SINGER_SIDE):
                    wrong.append(f"{name} imports {dep}")
                inside = _within(dep, "tap_pgcdc") and dep != "tap_pgcdc"
                if (
                    inside
                    and not _within(dep, layer)
                    and not any(_within(dep, ok) for ok in allowed)
                ):
                    wrong.append(f"{name} imports {dep}")
    assert wrong == []


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_no_module_over_the_size_limit() -> None:
    large = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert large == {}


def test_importing_the_leaf_layers_loads_nothing_of_the_singer_side() -> None:
    leaves = sorted(
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(_within(_module_name(p), layer) for layer in LEAF_LAYERS)
        and _module_name(p) != "tap_pgcdc.pg.tunnel"  # the SSH tunnel: paramiko, loaded on use
    )
    code = (
        "import importlib, sys\n"
        f"for name in {leaves!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('singer_sdk', 'sqlalchemy', 'paramiko', 'click') or m in "
        "('tap_pgcdc.tap', 'tap_pgcdc.streams', 'tap_pgcdc.connector') "
        "or m.startswith(('tap_pgcdc.output', 'tap_pgcdc.snapshot')))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
