"""The project's own modules import each other without a circle, counting every import: at module level and
inside functions (a lazy import that closes a circle still ties the two modules together)."""

import ast
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mlops_framework", "mlops_local", "hydra_plugins")


def own_modules():
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def import_graph(modules):
    """``{module: {imported own module, ...}}`` from every ``import`` statement anywhere in each module."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def cycles(graph):
    found, done, path = [], set(), []

    def visit(node):
        path.append(node)
        for target in sorted(graph[node]):
            if target in path:
                found.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return found


def test_the_import_graph_of_the_project_has_no_circle():
    graph = import_graph(own_modules())
    assert "mlops_framework.sweep_record" in graph["hydra_plugins.mlops_optuna_sweeper.sweeper"]  # the walk sees lazy imports
    assert [" -> ".join(cycle) for cycle in cycles(graph)] == []


def test_the_cycle_finder_finds_a_lazy_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
