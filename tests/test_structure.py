"""The structure rules the README's layout section promises, checked on the source itself.

No import cycles between modules, counting every import (module level, inside functions and
under `TYPE_CHECKING`: a circle a function-local import hides is still a circle); the layers
above the building blocks are imported only from above (commands by the CLI, the verbs by the
commands, the run assembly by those two and the comparison machinery); no private name imported
across modules; every module under 400 lines. Read with `ast`, nothing imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "finetune"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _all_imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement of a module: module level, in functions, under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _targets(node: ast.ImportFrom | ast.Import, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if not node.module or not node.module.startswith("finetune"):
        return set()
    out = set()
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        out.add(sub if sub in modules else node.module)
    return {m for m in out if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: set().union(*(_targets(n, modules) for n in _all_imports(path))) - {name}
        for name, path in modules.items()
    }


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# package -> the packages (and top-level modules) that may import it: each layer above the
# building blocks is reached only from the layers above it
IMPORTED_ONLY_BY = {
    "finetune.commands": ("finetune.cli", "finetune.commands"),
    "finetune.pipeline": ("finetune.cli", "finetune.commands", "finetune.pipeline"),
    "finetune.setup": (
        "finetune.cli",
        "finetune.commands",
        "finetune.pipeline",
        "finetune.comparison",
        "finetune.setup",
    ),
}


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_layers_are_imported_only_from_above():
    offenders = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        for target in targets
        for layer, allowed in IMPORTED_ONLY_BY.items()
        if _inside(target, layer) and not any(_inside(name, a) for a in allowed)
    ]
    assert not offenders, offenders


def test_no_private_names_imported_across_modules():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("finetune"):
                offenders += [
                    f"{name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not offenders, offenders


def test_modules_stay_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
