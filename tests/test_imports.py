"""Imports run one way (issue 14): no module of ``ngai_chat`` imports from a layer
above its own, no import circle anywhere in the tree (``ngai_chat``, ``bench``,
``tests``), and neither ``ngai_chat`` nor ``bench`` imports test code. Read from
the source with :mod:`ast`, every import counted: at the top, inside functions and
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: ``ngai_chat``'s layers, top first (DESIGN.md "Layout and layering"); a module may
#: import from its own layer and those below. Patterns are :mod:`fnmatch` globs.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "entry points",
        (
            "ngai_chat",
            "ngai_chat.__main__",
            "ngai_chat.app",
            "ngai_chat.gunicorn_conf",
            "ngai_chat.worker",
        ),
    ),
    ("doors", ("ngai_chat.doors", "ngai_chat.doors.*")),
    ("services", ("ngai_chat.services",)),
    (
        "runtime",
        (
            "ngai_chat.relay",
            "ngai_chat.generation",
            "ngai_chat.sweeper",
            "ngai_chat.catalog",
            "ngai_chat.openapi",
        ),
    ),
    (
        "parts",
        (
            "ngai_chat.store",
            "ngai_chat.store.*",
            "ngai_chat.upstream",
            "ngai_chat.upstream.*",
            "ngai_chat.guards",
            "ngai_chat.budget",
            "ngai_chat.counters",
            "ngai_chat.metrics",
            "ngai_chat.schema",
            "ngai_chat.messages",
        ),
    ),
    (
        "pure",
        (
            "ngai_chat.chunks",
            "ngai_chat.wire",
            "ngai_chat.wire.*",
            "ngai_chat.sse",
            "ngai_chat.usage",
            "ngai_chat.errors",
        ),
    ),
    ("base", ("ngai_chat.config", "ngai_chat.log", "ngai_chat._version")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(*packages: str) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules (of ``known``, or outside it by their full name) ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # ``from . import errors`` imports the module ``errors``, not the package
            names = [f"{target}.{alias.name}" for alias in node.names]
            candidates = [each if each in known else target for each in names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            resolved = candidate
            while resolved and resolved not in known:
                resolved = resolved.rpartition(".")[0]
            found.add(resolved or candidate)
    found.discard(name)
    return found


KNOWN = modules("ngai_chat", "bench", "tests")
GRAPH = {name: imports_of(name, path, KNOWN) for name, path in KNOWN.items()}


def layer_of(name: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer() -> None:
    for name in KNOWN:
        if name.startswith("ngai_chat"):
            layer_of(name)


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if n.startswith("ngai_chat")))
def test_no_import_from_a_layer_above(name: str) -> None:
    upward = [
        f"{dep} ({LAYERS[layer_of(dep)][0]})"
        for dep in sorted(GRAPH[name])
        if dep.startswith("ngai_chat") and layer_of(dep) < layer_of(name)
    ]
    assert not upward, f"{name} ({LAYERS[layer_of(name)][0]}) imports from above: {upward}"


def test_no_test_code_imported() -> None:
    offenders = {
        name: sorted(dep for dep in deps if dep == "tests" or dep.startswith("tests."))
        for name, deps in GRAPH.items()
        if not name.startswith("tests")
    }
    assert not {name: deps for name, deps in offenders.items() if deps}


def test_no_import_circle() -> None:
    """Depth-first search over the whole graph; a back edge is a circle."""
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(GRAPH[name]):
            if dep not in GRAPH:
                continue
            if state.get(dep) == "open":
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles, " ; ".join(" -> ".join(circle) for circle in circles)


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The checks above can fail: ``bench/scenarios.py`` ↔ ``bench/series.py`` was
    one circle, and ``config`` → ``budget`` one upward import.
    """
    assert "ngai_chat.config" in GRAPH["ngai_chat.log"]  # it resolves relative imports
    assert "ngai_chat.errors" in GRAPH["ngai_chat.budget"]  # ``from . import errors``
    assert layer_of("ngai_chat.budget") < layer_of("ngai_chat.config")
    assert "bench.harness" in GRAPH["bench.series"]
