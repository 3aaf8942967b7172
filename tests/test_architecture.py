"""The house's rules, read from the code's own imports (docs/architecture.md, the map):
no import circle between modules (none hidden behind a lazy or type-only import either:
every import statement counts, wherever it stands), packages import only packages on a
lower floor, and the domain never reaches for Flask."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Floors, lowest first. A package may import its own modules and packages on lower floors;
# packages on one floor stay independent of each other.
FLOORS = (
    ("ground",),  # tally/*.py (settings, db, errors, logs, metrics, cache, audit …), models/
    ("tally.end_users", "tally.sinks", "tally.traces"),
    ("tally.tracking", "tally.keys", "tally.operators", "tally.usage", "tally.limits"),
    ("tally.verification", "tally.reports", "tally.privacy", "tally.proxy"),
    ("tally.demo",),
    ("tally.runtime",),
    ("blueprints",),
)
FLOOR = {package: level for level, names in enumerate(FLOORS) for package in names}


def modules() -> dict[str, Path]:
    """Every module of the code, by dotted name."""
    found = {"app": ROOT / "app.py"}
    for path in [*ROOT.glob("tally/**/*.py"), *ROOT.glob("blueprints/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def package_of(module: str) -> str:
    """The package a module belongs to, as FLOORS names it."""
    parts = module.split(".")
    if parts[0] in ("app", "blueprints"):
        return "blueprints"
    if len(parts) > 1 and parts[1] != "models" and (ROOT / "tally" / parts[1]).is_dir():
        return f"tally.{parts[1]}"
    return "ground"  # tally/*.py, and the tables (tally/models/: one module per feature)


def imports_of(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """module -> the modules of the code it imports."""
    found = modules()
    return {m: {t for t in imports_of(p) if t in found and t != m} for m, p in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_circle(graph):
    assert circles(graph) == []


def test_every_package_is_on_a_floor():
    assert {package_of(m) for m in modules()} <= set(FLOOR)


def test_packages_import_only_lower_floors(graph):
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if package_of(target) != package_of(module)
        and FLOOR[package_of(target)] >= FLOOR[package_of(module)]
    )
    assert upward == []


def test_the_domain_never_reaches_for_flask():
    reaching = sorted(
        module
        for module, path in modules().items()
        if module.startswith("tally")
        and any(t.split(".")[0] in ("flask", "flask_login", "werkzeug") for t in imports_of(path))
    )
    assert reaching == []


def test_the_rules_catch_a_circle_and_an_upward_import():
    """The checks themselves can fail: a made-up graph with both slips."""
    made_up = {"tally.usage.a": {"tally.proxy.b"}, "tally.proxy.b": {"tally.usage.a"}}
    assert circles(made_up) == [["tally.proxy.b", "tally.usage.a"]]
    assert FLOOR[package_of("tally.proxy.b")] > FLOOR[package_of("tally.usage.a")]


def test_no_folder_is_a_flat_heap():
    """A folder of more than ~12 modules is a sign a feature wants its own package."""
    counts = collections.Counter(path.parent for path in modules().values())
    crowded = {str(folder.relative_to(ROOT)): n for folder, n in counts.items() if n > 14}
    assert crowded == {}
