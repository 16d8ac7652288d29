"""The package's dependency direction, checked statically (docs/architecture.md).

Every import of every ``gfnet_cli`` module counts, at module level and inside functions alike:
an import deferred into a function still runs, so a cycle through it is still a cycle, only
harder to see. ``if TYPE_CHECKING:`` blocks never run and are skipped.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "gfnet_cli"
MODELS = "gfnet_cli.models"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# What the model library may import from this package; nothing else, not even lazily.
MODELS_MAY_IMPORT = {"gfnet_cli.errors", "gfnet_cli.labels"}


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere under ``node``, except in ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_in(other)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def _import_nodes_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _import_nodes(node)


def _imported_modules(module: str, path: Path) -> set[str]:
    """Dotted names ``module`` imports (targets only, ancestors not yet added)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            if not is_package:
                anchor = anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        targets.add(base)
        for alias in node.names:  # ``from pkg import submodule`` imports the submodule
            if f"{base}.{alias.name}" in MODULES:
                targets.add(f"{base}.{alias.name}")
    return targets


def _edges_for(module: str, target: str) -> set[str]:
    """The modules that run when ``module`` imports ``target``.

    ``import a.b.c`` runs ``a.b``'s ``__init__`` too, unless the importer is inside ``a.b``
    already (then it has run); a module importing its own ancestor package adds no edge.
    """
    edges = set()
    parts = target.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name not in MODULES or name == module:
            continue
        if module.startswith(name + "."):  # inside that package: its __init__ already ran
            continue
        edges.add(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules that importing it (or calling into it) runs."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges: set[str] = set()
        for target in _imported_modules(module, path):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                edges |= _edges_for(module, target)
        edges.discard(module)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


# ---------------------------------------------------------------------------- the rules
def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "gfnet_cli.models.config" in graph["gfnet_cli.hub.resolve"]
    # cli/main.py defers every command module into functions; those imports still count
    assert any(edge.startswith("gfnet_cli.cli.") for edge in graph["gfnet_cli.cli.main"])


def test_no_import_cycles():
    cycles = strongly_connected(import_graph())
    assert not cycles, "import cycles (module-level and in-function imports): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_models_import_only_torch_and_the_bottom_of_the_package():
    graph = import_graph()
    offenders = {
        module: sorted(
            edge
            for edge in edges
            if not edge.startswith("gfnet_cli.models") and edge not in MODELS_MAY_IMPORT
        )
        for module, edges in graph.items()
        if module.startswith("gfnet_cli.models")
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders


def _lazy_exports() -> set[str]:
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_EXPORTS":
            return set(ast.literal_eval(node.value))
    raise AssertionError("gfnet_cli/__init__.py has no _EXPORTS table")


def test_internal_code_imports_from_the_defining_module():
    """``from gfnet_cli import X`` of a lazy export would hide the real dependency."""
    exports = _lazy_exports()
    offenders = []
    for module, path in MODULES.items():
        if module == PACKAGE:
            continue
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE and not node.level:
                offenders += [f"{module}: {a.name}" for a in node.names if a.name in exports]
    assert not offenders, offenders


def loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` (or their submodules) a fresh interpreter holds after ``code``."""
    probe = (
        f"{code}\nimport sys\n"
        f"print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') "
        f"for b in {modules!r})))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return ast.literal_eval(run.stdout.strip())


def test_importing_models_loads_no_hub_datasets_or_card():
    above = ("hub", "engine", "commands", "tasks", "data", "models.flops")
    banned = ("huggingface_hub", "datasets", *(f"{PACKAGE}.{name}" for name in above))
    assert loaded_after("import gfnet_cli.models", banned) == []


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("gfnet_cli.hub.resolve", "import gfnet_cli.models.config", {MODELS, f"{MODELS}.config"}),
        ("gfnet_cli.hub.resolve", "from gfnet_cli.models import zoo", {MODELS, f"{MODELS}.zoo"}),
        ("gfnet_cli.models.gfnet", "import gfnet_cli.models.config", {"gfnet_cli.models.config"}),
        ("gfnet_cli.models.gfnet", "from gfnet_cli.models import zoo", {"gfnet_cli.models.zoo"}),
        ("gfnet_cli.models.gfnet", "from gfnet_cli import errors", {"gfnet_cli.errors"}),
        ("gfnet_cli.models.gfnet", "from . import zoo", {"gfnet_cli.models.zoo"}),
        ("gfnet_cli.models.gfnet", "from .config import GFNetConfig", {"gfnet_cli.models.config"}),
        ("gfnet_cli.models.gfnet", "import gfnet_cli.models", set()),
        ("gfnet_cli.models", "from .zoo import ZOO", {"gfnet_cli.models.zoo"}),
        ("gfnet_cli.hub.resolve", "if TYPE_CHECKING:\n    import gfnet_cli.hub.push", set()),
        ("gfnet_cli.hub.resolve", "def f():\n    from .push import push", {"gfnet_cli.hub.push"}),
        (
            "gfnet_cli.engine.inference",
            "from gfnet_cli.hub.push import push",
            {"gfnet_cli.hub", "gfnet_cli.hub.push"},
        ),
    ],
)
def test_edges_follow_python_import_semantics(tmp_path, module, source, expected):
    """How one file's imports become edges: ``__init__`` runs, relative imports, deferral."""
    path = tmp_path / ("__init__.py" if module == "gfnet_cli.models" else "probe.py")
    path.write_text(source + "\n")
    edges = set()
    for target in _imported_modules(module, path):
        if target.startswith(PACKAGE):
            edges |= _edges_for(module, target)
    assert edges == expected


def test_loading_a_local_model_stays_light(tmp_path):
    """predict/evaluate on a local folder go through gfnet_cli.hub.resolve without paying for
    the Hub, and building the model on the meta device draws no random numbers there (which would
    import PyTorch's compiler and sympy: most of a second of start-up)."""
    code = (
        "from gfnet_cli.hub.resolve import load_model\n"
        "from gfnet_cli.models import GFNetArchitecture, GFNetConfig\n"
        "from gfnet_cli.hub.serialization import save_model\n"
        "config = GFNetConfig(patch_size=8, embed_dim=16, depth=1, img_size=32, num_classes=3)\n"
        f"save_model(GFNetArchitecture(config), {str(tmp_path)!r})\n"
        f"load_model({str(tmp_path)!r})"
    )
    heavy = ("huggingface_hub", "datasets", "sympy", "torch._dynamo")
    assert loaded_after(code, heavy) == []


def test_a_submodule_never_shadows_the_public_name_it_shares():
    """``gfnet_cli.analysis.filters`` stays the function after its module is imported."""
    code = (
        "import gfnet_cli.analysis.filters, gfnet_cli.analysis.robustness\n"
        "import gfnet_cli.analysis as analysis\n"
        "assert callable(analysis.filters) and analysis.filters.__name__ == 'filters'\n"
        "assert callable(analysis.robustness) and analysis.robustness.__name__ == 'robustness'\n"
        "from gfnet_cli import robustness\n"
        "assert robustness is analysis.robustness\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# The package's layers, bottom first (docs/architecture.md): a module may import its own layer
# and those below, never one above.
LAYERS = (
    ("gfnet_cli.errors", "gfnet_cli.labels", "gfnet_cli.device", "gfnet_cli._lazy"),
    ("gfnet_cli.models",),
    ("gfnet_cli.data",),
    ("gfnet_cli.tasks",),
    ("gfnet_cli.hub",),
    ("gfnet_cli.engine",),
    ("gfnet_cli.commands", "gfnet_cli.analysis"),
    ("gfnet_cli.cli",),
)


def layer_of(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = import_graph()
    unplaced = [
        m for m in graph if m not in (PACKAGE, f"{PACKAGE}.__main__") and layer_of(m) is None
    ]
    assert not unplaced, f"modules outside the documented layers: {unplaced}"
    upward = [
        f"{module} -> {edge}"
        for module, edges in graph.items()
        if module not in (PACKAGE, f"{PACKAGE}.__main__")
        for edge in edges
        if layer_of(edge) is not None and layer_of(edge) > layer_of(module)
    ]
    assert not upward, upward


def test_the_package_root_keeps_few_public_modules():
    public = sorted(p.stem for p in ROOT.glob("*.py") if not p.stem.startswith("_"))
    assert len(public) <= 8, public


LAZY_PACKAGES = ("gfnet_cli", "gfnet_cli.data", "gfnet_cli.analysis")


def _type_checking_imports(path: Path) -> dict[str, set[str]]:
    imports: dict[str, set[str]] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                if isinstance(child, ast.ImportFrom):
                    imports.setdefault(child.module, set()).update(a.name for a in child.names)
    return imports


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_public_names_are_written_once_and_all_import(package):
    """``__all__`` comes from ``_EXPORTS``; the IDE imports list the same names; each imports."""
    import importlib

    module = importlib.import_module(package)
    table = {mod: set(names) for mod, names in module._EXPORTS.items()}
    assert _type_checking_imports(MODULES[package]) == table
    exported = {name for names in table.values() for name in names}
    assert set(module.__all__) - {"__version__"} == exported
    for name in module.__all__:
        assert getattr(module, name) is not None, name
