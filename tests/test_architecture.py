"""The package layout is the architecture (docs/architecture.md); these rules keep it that way.

Each room of ``cds_service`` has one job and may lean only on the rooms listed for it below, so the
request flow reads one way: server → decision → hooks / ehr / chart / reasoning / cards / audit,
with the knowledge (kb) knowing no HTTP and the protocol (hooks) knowing no medicine.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cds_service"

#: Room → the rooms it may import. Top-level modules are rooms of their own.
ALLOWED = {
    "errors": set(),
    "codes": set(),
    "config": set(),
    "observability": set(),
    "chart": set(),
    "kb": {"chart"},
    "hooks": {"chart", "errors"},
    "ehr": {"hooks", "errors"},
    "security": {"errors"},
    "reasoning": {"chart", "kb"},
    "cards": {"chart", "kb", "reasoning", "hooks", "codes"},
    # Evidence pages say what the cards say, in the same words (cards.wording), from the knowledge only.
    "evidence": {"kb", "cards"},
    "audit": {"config"},
    # The committee console shows the audit (its accounts live there too) and the knowledge; it
    # renders cards as an EHR does from the answer's JSON only, so it needs no other room.
    "console": {"audit", "config", "kb"},
    "decision": {"audit", "cards", "chart", "config", "ehr", "errors", "hooks", "kb", "observability", "reasoning"},
    "server": {"audit", "chart", "config", "decision", "ehr", "errors", "hooks", "kb", "observability",
               "security", "cards", "reasoning", "evidence", "console"},
    "devtools": {"codes", "config", "hooks", "kb", "server", "chart"},
    # Entry points: the command line reaches every room (developer commands included).
    "cli": {"audit", "devtools", "kb", "server", "config", "console"},
    "__main__": {"cli"},
    "cds_service": {"server"},
}
#: Only this room talks HTTP server frameworks.
WEB_FRAMEWORKS = ("flask", "werkzeug", "gunicorn")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500
MAX_TOP_LEVEL_MODULES = 8


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(tree: ast.Module) -> list[str]:
    """Every module named by an import statement, at any depth (lazy imports count too)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
    return found


def _internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for name, tree in TREES.items():
        for target in _imports(tree):
            if target in MODULES and target != name and target != "cds_service":
                edges[name].add(target)
    return edges


def test_the_rules_see_the_whole_package():
    assert len(MODULES) > 50
    assert {"cds_service.server.app", "cds_service.decision", "cds_service.kb.loader"} <= set(MODULES)


def test_no_relative_imports():
    """Absolute imports keep every dependency greppable and checkable here."""
    relative = [f"{name}:{node.lineno}" for name, tree in TREES.items() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def test_every_module_belongs_to_a_known_room():
    assert {_room(name) for name in MODULES} <= set(ALLOWED)


def test_top_level_holds_only_entry_points_and_basics():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_rooms_depend_only_on_the_rooms_allowed_for_them():
    wrong = sorted(f"{a} -> {b}" for a, targets in _internal_edges().items() for b in targets
                   if _room(a) != _room(b) and _room(b) not in ALLOWED[_room(a)])
    assert wrong == []


def test_only_the_server_room_imports_web_frameworks():
    offenders = sorted(f"{name} imports {target}" for name, tree in TREES.items() for target in _imports(tree)
                       if target.split(".")[0] in WEB_FRAMEWORKS and _room(name) != "server")
    assert offenders == []


def test_production_code_never_imports_devtools():
    offenders = sorted(f"{name} -> {target}" for name, targets in _internal_edges().items() for target in targets
                       if _room(target) == "devtools" and _room(name) not in ("devtools", "cli"))
    assert offenders == []


def test_no_import_cycles():
    edges = _internal_edges()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(trail[trail.index(target):] + [target])
            elif state.get(target) is None:
                visit(target, trail + [target])
        state[node] = 2

    for start in sorted(MODULES):
        if state.get(start) is None:
            visit(start, [start])
    assert cycles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    path = MODULES[name]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(TREES[name])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
