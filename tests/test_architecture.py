"""The code's shape: domain apps under the two interfaces (dashboard, api), no import
cycles between modules or between folders, services modules of a readable size."""

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Apps that own data and logic; their services and selectors are their public face.
DOMAIN = frozenset({"scanner", "alerts", "agents", "poc", "audit", "accounts"})
# Thin layers side by side on top of the domain apps: views, forms, serializers, templates.
INTERFACES = frozenset({"dashboard", "api"})
# The project package: settings and helpers under every app; only its URLconf sits on top
# (it may import interface views and urls, nothing else of theirs).
PROJECT = "portmon"
URLCONF = "portmon.urls"
# Lines a module of a services package may have: one stage or one concern each.
SERVICES_MAX_LINES = 320


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the apps (not tests, bench or migrations), by dotted name."""
    packages = [
        p.name for p in root.iterdir() if (p / "__init__.py").exists() and p.name != "tests"
    ]
    modules = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
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


def folder(module: str) -> str:
    """The folder (top-level package) a module belongs to; the root URLconf stands alone."""
    return URLCONF if module == URLCONF else module.split(".")[0]


def folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """folder -> the other folders its modules import."""
    out: dict[str, set[str]] = {folder(name): set() for name in graph}
    for name, targets in graph.items():
        out[folder(name)] |= {folder(t) for t in targets} - {folder(name)}
    return out


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up or sideways between the layers, as "importer -> imported"."""
    wrong = []
    for name, targets in sorted(graph.items()):
        home = folder(name)
        for target in sorted(targets):
            there = folder(target)
            if there not in INTERFACES or there == home:
                continue
            last = target.rsplit(".", 1)[-1]
            if home == URLCONF and len(target.split(".")) == 2 and last in ("views", "urls"):
                continue  # the URLconf wires the interfaces' views in
            wrong.append(f"{name} -> {target}")
    return wrong


# What only a domain app holds: data, writes, reads, tasks. An interface calls them.
DOMAIN_ONLY = frozenset({"models", "services", "selectors", "tasks"})


def domain_modules_in_interfaces(modules: dict[str, Path]) -> list[str]:
    """Modules of an interface (dashboard, api) that belong in a domain app."""
    return sorted(
        name
        for name in modules
        if folder(name) in INTERFACES and DOMAIN_ONLY & set(name.split(".")[1:])
    )


def is_services(module: str) -> bool:
    """An app's services: a module `services.py`, or a `services/` package and its modules."""
    return module.endswith(".services") or ".services." in module


def oversized_services(modules: dict[str, Path], limit: int = SERVICES_MAX_LINES) -> dict:
    """Services modules of any app (a single file or a package's modules) over the limit:
    lines. A single file is capped too: it cannot grow past the cap by staying one file."""
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in modules.items()
        if is_services(name)
    }
    return {name: n for name, n in sorted(sizes.items()) if n > limit}


def test_there_is_no_import_cycle_between_modules():
    assert cycles(import_graph(project_modules())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_is_no_import_loop_between_folders():
    # A loop between apps (agents <-> alerts once) means neither can be read, tested or
    # moved alone; pick one direction and turn the other into a signal or a registration.
    assert cycles(folder_graph(import_graph(project_modules()))) == []


def test_no_domain_app_imports_an_interface_and_the_interfaces_ignore_each_other():
    graph = import_graph(project_modules())
    assert {folder(name) for name in graph} >= DOMAIN | INTERFACES | {PROJECT, URLCONF}
    assert layer_violations(graph) == []


def test_the_interfaces_hold_no_models_services_selectors_or_tasks():
    # API tokens once lived in api/ (model, services, lookup): they are accounts' data.
    assert domain_modules_in_interfaces(project_modules()) == []


def test_every_services_module_is_of_a_readable_size():
    assert oversized_services(project_modules()) == {}


def _tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    """A module tree on disk (packages get their __init__.py) as project_modules reads it."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        for parent in path.relative_to(root).parents:
            if str(parent) != ".":
                (root / parent / "__init__.py").touch()
    return project_modules(root)


def test_the_checks_catch_what_the_code_once_did(tmp_path):
    # The shapes issue 21 found, rebuilt in miniature: each one must be reported.
    modules = _tree(
        tmp_path,
        {
            # agents <-> alerts through a late import inside a function (the cross-check)
            "agents/services/reports.py": "from alerts.services.events import events_raise\n",
            "alerts/services/events.py": "def events_raise():\n    pass\n",
            "alerts/notify/services.py": """
                def digest():
                    from ..selectors import local  # relative: stays inside alerts
                    from agents.selectors import cross_check
                    return cross_check, local
            """,
            "alerts/selectors.py": "local = 1\n",
            "agents/selectors.py": "def cross_check():\n    pass\n",
            # an API reaching into the dashboard; a domain app reaching up to it
            "api/views.py": "from dashboard import selectors\n",
            "api/permissions.py": "import dashboard.roles\n",
            "api/models.py": "",  # a model in an interface
            "dashboard/services/visits.py": "",
            "dashboard/selectors.py": "from scanner.models import Host\n",
            "dashboard/roles.py": "ADMIN = 'admin'\n",
            "dashboard/views.py": "from dashboard import selectors\n",
            "scanner/models.py": "class Host:\n    pass\n",
            "poc/services.py": "from dashboard.roles import ADMIN\n",
            "alerts/tasks.py": "from api import views\n",
            # the project: its URLconf may wire views in, not logic; its helpers nothing
            "portmon/urls.py": "from dashboard import views\nfrom dashboard import selectors\n",
            "portmon/env.py": "from api.views import x\n",
            "portmon/celery.py": "",
            "scanner/tasks.py": "from portmon.celery import app\n",
            # a services module past the cap, in a package and as a single file
            "alerts/services/diff.py": "x = 1\n" * (SERVICES_MAX_LINES + 1),
            "audit/services.py": "x = 1\n" * (SERVICES_MAX_LINES + 2),
            "alerts/rules.py": "x = 1\n" * (SERVICES_MAX_LINES + 100),  # not a service
            "alerts/services_help.py": "x = 1\n" * (SERVICES_MAX_LINES + 100),  # nor this
        },
    )
    graph = import_graph(modules)
    assert sorted(cycles(folder_graph(graph))) == [
        ["agents", "alerts"],
        ["api", "dashboard", "portmon", "scanner"],  # portmon.env -> api -> ... -> portmon
    ]
    assert layer_violations(graph) == [
        "alerts.tasks -> api.views",
        "api.permissions -> dashboard.roles",
        "api.views -> dashboard.selectors",
        "poc.services -> dashboard.roles",
        "portmon.env -> api.views",
        "portmon.urls -> dashboard.selectors",
    ]
    assert domain_modules_in_interfaces(modules) == [
        "api.models",
        "dashboard.selectors",
        "dashboard.services",
        "dashboard.services.visits",
    ]
    assert oversized_services(modules) == {
        "alerts.services.diff": SERVICES_MAX_LINES + 1,
        "audit.services": SERVICES_MAX_LINES + 2,
    }


def test_a_clean_tree_passes_the_checks(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "scanner/models.py": "",
            "alerts/services/events.py": "from scanner.models import Host\n",
            "agents/services/reports.py": "from alerts.services import events\n",
            "dashboard/views.py": "from agents.services.reports import x\n",
            "api/views.py": "from alerts.services.events import y\n",
            "api/urls.py": "from api import views\n",
            "portmon/urls.py": "from dashboard import views\nfrom api import urls\n",
            "portmon/env.py": "",
            "scanner/tasks.py": "from portmon import env\n",
            "alerts/services/diff.py": "x = 1\n" * SERVICES_MAX_LINES,
            "audit/services.py": "x = 1\n" * SERVICES_MAX_LINES,
        },
    )
    graph = import_graph(modules)
    assert cycles(folder_graph(graph)) == []
    assert layer_violations(graph) == []
    assert domain_modules_in_interfaces(modules) == []
    assert oversized_services(modules) == {}


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


@pytest.mark.django_db
def test_every_model_change_has_its_migration():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:
        raise AssertionError(f"models changed without a migration:\n{out.getvalue()}") from None
