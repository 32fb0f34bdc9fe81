"""Check the package's runtime import graph: acyclic, and ``_fork`` a leaf.

Reads the source (no import is run): every ``import`` of one of our modules,
at module level or inside a function, except under ``if TYPE_CHECKING:``.
``--graph`` prints the modules in dependency order with what each imports.
Exit status 1 names a cycle or a leaf that imports from the package.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = "django_sapool"
SOURCE = Path(__file__).resolve().parent.parent / "src" / PACKAGE
#: Modules that must import nothing from the package.
LEAVES = {f"{PACKAGE}._fork"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports when it runs."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def main() -> int:
    paths = sorted(SOURCE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): runtime_imports(path, modules) for path in paths}
    failures = [
        f"{leaf} must import nothing from {PACKAGE}, imports {sorted(graph[leaf])}"
        for leaf in sorted(LEAVES)
        if graph.get(leaf)
    ]
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        failures.append(f"import cycle: {' -> '.join(error.args[1])}")
        order = []
    for failure in failures:
        print(failure)
    if "--graph" in sys.argv[1:]:
        for module in order:
            imports = ", ".join(
                sorted(m.removeprefix(PACKAGE) or PACKAGE for m in graph[module])
            )
            print(f"{module.removeprefix(PACKAGE) or PACKAGE}: {imports}")
    if not failures:
        print(f"{len(graph)} modules, no import cycle, {sorted(LEAVES)} a leaf")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
