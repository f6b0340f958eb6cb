"""The code's shape: no import cycles between modules, stage-sized scanner services."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def project_modules() -> dict[str, Path]:
    """Every module of the apps (not tests, bench or migrations), by dotted name."""
    packages = [
        p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"
    ]
    modules = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> project modules it imports, at the top or inside a function alike."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle_between_modules():
    assert cycles(import_graph(project_modules())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_services_and_selectors_never_import_tasks():
    # Tasks are an interface on top of services, like views: services queue them by name
    # (scanner.services.publish) and never import a tasks module.
    graph = import_graph(project_modules())
    wrong = {
        name: sorted(t for t in targets if t.endswith(".tasks"))
        for name, targets in graph.items()
        if (".services" in name or name.endswith(".selectors"))
        and any(t.endswith(".tasks") for t in targets)
    }
    assert wrong == {}


def test_scanner_services_are_stage_sized():
    sizes = {
        path.name: len(path.read_text().splitlines())
        for path in (ROOT / "scanner" / "services").glob("*.py")
    }
    assert max(sizes.values()) <= 320, sizes


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:
        raise AssertionError(f"models changed without a migration:\n{out.getvalue()}") from None
