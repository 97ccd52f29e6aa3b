"""The mock server package's shape: no import cycles, a leaf of shared types, typed routes, lazy imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import fresh_imports

import tinker_sync.testing

PACKAGE = Path(tinker_sync.testing.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
ROUTE_MODULES = ["_checkpoints", "_files", "_futures", "_sampling", "_sessions", "_sse_routes"]


def imports_of(module: str) -> set[str]:
    """Every module of the package that ``module`` imports: at module level, in functions and under
    TYPE_CHECKING alike (``from . import x`` and ``from .x import y`` both mean x)."""
    found = set()
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif node.module and node.module.startswith("tinker_sync.testing."):
                found.add(node.module.split(".")[2])
            elif node.module == "tinker_sync.testing":
                found.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tinker_sync.testing."):
                    found.add(alias.name.split(".")[2])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            found.update(MODULES if module == "__init__" else [])  # the lazy __getattr__ reaches them all
    return found - {module}


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            assert target in graph, f"{module} imports unknown {target}"
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(target) :], target]))
            if target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_the_shared_types_are_a_leaf_and_routes_import_downward():
    assert imports_of("_types") == set()
    assert imports_of("_data") == set()
    for module in ROUTE_MODULES:
        assert not imports_of(module) & {"_server", "__init__", "__main__", "_demo", "pytest_plugin"}, module
    assert {
        "_checkpoints",
        "_futures",
        "_sessions",
        "_sampling",
        "_sse_routes",
        "_files",
        "_demo",
    } <= imports_of("_server")


@pytest.mark.parametrize("module", MODULES)
def test_no_any_typed_request_or_server_parameters(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if arg.arg in ("handler", "request", "exchange", "mock", "server", "state", "registry"):
                    assert arg.annotation is not None, (module, node.name, arg.arg)
                    assert ast.unparse(arg.annotation) != "Any", (module, node.name, arg.arg)


@pytest.fixture(scope="module")
def import_alone():
    """Importing a module first thing in ``python -I -W error`` (``_helpers.fresh_imports``)."""
    with fresh_imports() as import_alone:
        yield import_alone


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module, import_alone):
    status, error = import_alone(f"tinker_sync.testing.{module}")
    assert status == 0, error


def test_importing_the_package_is_cheap_and_names_resolve_lazily():
    code = (
        "import sys, tinker_sync.testing as t\n"
        "heavy = [m for m in ('tinker_sync.testing._server', 'http.server', 'tarfile') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert t.__all__ == sorted(t.__all__)\n"
        "names = {n: getattr(t, n) for n in t.__all__}\n"
        "assert names['MockTinkerServer'].__module__ == 'tinker_sync.testing._server'\n"
        "assert names['Fault'].__module__ == 'tinker_sync.testing._types'\n"
        "try:\n"
        "    t.nope\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-I", "-W", "error", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
