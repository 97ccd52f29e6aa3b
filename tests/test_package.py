"""Guard tests: exports, docstrings, imports in fresh interpreters, the module map."""

from __future__ import annotations

import ast
import os
import pathlib
import pydoc
import re
import subprocess
import sys
import tomllib
import types

import pytest
from _helpers import fresh_imports

import tinker_sync

PACKAGE = pathlib.Path(tinker_sync.__file__).parent
MODULES = sorted(
    ".".join(("tinker_sync", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name != "__main__.py"
)

ROOT = PACKAGE.parent
# The module map, bottom layer first, as docs/ARCHITECTURE.md lists it (one "### `module`" heading each).
MODULE_MAP = re.findall(r"^### `(tinker_sync[\w.]*)`$", (ROOT / "docs" / "ARCHITECTURE.md").read_text(), re.M)


def run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in an isolated interpreter (-I: no env vars, no cwd on the path) that finds this checkout."""
    code = f"import sys; sys.path.insert(0, {str(PACKAGE.parent)!r})\n" + code
    return subprocess.run(
        [sys.executable, "-I", "-W", "error", *args, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(PACKAGE.parent),
    )


# -- public API ----------------------------------------------------------------------------------


def test_all_sorted_unique_and_complete():
    exported = tinker_sync.__all__
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    public = {
        name
        for name in dir(tinker_sync)
        if not name.startswith("_") and not isinstance(getattr(tinker_sync, name), types.ModuleType)
    }
    assert set(exported) - {"__version__"} == public
    for name in exported:
        assert getattr(tinker_sync, name) is not None


def test_version():
    from tinker_sync._version import __version__

    assert tinker_sync.__version__ == __version__
    assert __version__.count(".") >= 1


@pytest.mark.parametrize(
    "method",
    ["stream_get", "stream_post", "stream_put", "stream_patch", "stream_delete", "stream", "get", "post"],
)
def test_public_methods_have_docstrings(method):
    doc = getattr(tinker_sync.Client, method).__doc__
    assert doc and len(doc.strip()) > 30


def test_help_stream_post_is_useful():
    text = pydoc.render_doc(tinker_sync.Client.stream_post, renderer=pydoc.plaintext)
    for needle in (
        "Server-Sent Events",
        "Lazy",
        "cast_to",
        "idle_timeout",
        "reconnect",
        "Raises",
        "APIStatusError",
        "APIConnectionError",
        "Example",
    ):
        assert needle in text, needle


def test_public_classes_documented():
    for name in tinker_sync.__all__:
        obj = getattr(tinker_sync, name)
        if isinstance(obj, type):
            assert obj.__doc__, name


# -- imports in fresh interpreters ---------------------------------------------------------------


@pytest.fixture(scope="module")
def import_alone():
    """Importing a module first thing in an isolated interpreter that finds this checkout (``run``'s
    flags): ``_helpers.fresh_imports``, one interpreter forked per module."""
    with fresh_imports(str(PACKAGE.parent)) as import_alone:
        yield import_alone


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module, import_alone):
    status, error = import_alone(module)
    assert status == 0, error


def test_import_is_light():
    code = (
        "import sys, tinker_sync\n"
        "heavy = ['tarfile', 'tqdm', 'tinker_sync.cli', 'tinker_sync.testing', 'asyncio', "
        "'tinker_sync._download', 'tinker_sync._extract', 'tinker_sync.resources.checkpoints']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_client_construction_and_plain_call_stay_light(tinker_server):
    code = (
        "import sys, tinker_sync\n"
        f"c = tinker_sync.Client(api_key='tml-test-key', base_url={tinker_server.url!r})\n"
        "assert c.get('/api/v1/healthz') == {'status': 'ok'}\n"
        "assert [e.json()['index'] for e in c.stream_get('/test/sse?count=2')] == [0, 1]\n"
        "c.close()\n"
        "print(','.join(m for m in ['tarfile', 'tqdm', 'asyncio', 'tinker_sync.testing'] if m in sys.modules))\n"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_logger_has_null_handler():
    import logging

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("tinker_sync").handlers)


# -- static import rules -------------------------------------------------------------------------


def _module_name(path: pathlib.Path) -> str:
    name = ".".join(("tinker_sync", *path.relative_to(PACKAGE).with_suffix("").parts))
    return name.removesuffix(".__init__")


SOURCES = sorted(PACKAGE.rglob("*.py"))
PYX = ROOT / "csrc" / "_sse.pyx"


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``: module level, in functions and under TYPE_CHECKING.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module of the map.
    """
    if path.suffix == ".pyx":  # Cython: its Python-level imports, by their lines
        return [
            (number, match.group(1))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if (match := re.match(r"\s*(?:from|import)\s+([\w.]+)", line))
        ]
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for alias in node.names:
                sub = f"{name}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULE_MAP else name))
    return found


def test_the_module_map_names_every_module_once():
    modules = {_module_name(path) for path in SOURCES} | {"tinker_sync._sse"}
    assert len(MODULE_MAP) == len(set(MODULE_MAP)), "a module is listed twice"
    assert set(MODULE_MAP) == modules, "docs/ARCHITECTURE.md and the package disagree"


@pytest.mark.parametrize("path", [*SOURCES, PYX], ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_up_the_module_map(path):
    module = "tinker_sync._sse" if path == PYX else _module_name(path)
    own = MODULE_MAP.index(module)
    bad = []
    for line, name in _imports(path):
        if name.split(".")[0] != "tinker_sync" or name == module:
            continue
        if name not in MODULE_MAP:
            bad.append(f"line {line}: {name} (not on the map)")
        elif MODULE_MAP.index(name) > own:
            bad.append(f"line {line}: {name} (listed below {module})")
    assert bad == [], f"{module} imports modules listed below it in docs/ARCHITECTURE.md"


def test_no_import_cycles():
    """Redundant with the map (imports only point up), but says which modules form a cycle if one appears."""
    graph = {
        _module_name(path): {
            n for _, n in _imports(path) if n.startswith("tinker_sync") and n != _module_name(path)
        }
        for path in SOURCES
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


TRANSPORT = PACKAGE / "_transport"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_transport_imports_urllib3(path):
    names = [name for _, name in _imports(path)]
    if path.parent == TRANSPORT:  # the transport's rooms: pools, TLS, the body reader, ...
        return
    assert [n for n in names if n.split(".")[0] == "urllib3"] == []


@pytest.mark.parametrize("room", ["__init__", "_request", "_errors", "_tls", "_pools", "_body"])
def test_the_transport_is_what_imports_urllib3(room):
    names = [name for _, name in _imports(TRANSPORT / f"{room}.py")]
    assert any(name.split(".")[0] == "urllib3" for name in names)


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if "testing" in p.parts], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_testing_server_never_imports_the_client(path):
    for line, name in _imports(path):
        if name.startswith("tinker_sync") and not name.startswith("tinker_sync.testing"):
            pytest.fail(f"{path.name} line {line} imports {name}")


def test_lazy_modules_never_imported_at_package_level():
    init = PACKAGE / "__init__.py"
    names = [name for _, name in _imports(init)]
    for heavy in ("tarfile", "tqdm", "tinker_sync.cli", "tinker_sync.testing", "asyncio"):
        assert not any(n == heavy or n.startswith(heavy + ".") for n in names), heavy


# -- memory bounds are enforced ------------------------------------------------------------------

MEMORY_PROBE = """
import pytest


@pytest.mark.limit_memory("4 MB")
def test_over():
    data = bytearray(32 * 1024 * 1024)
    assert len(data)


@pytest.mark.limit_memory("64 MB")
def test_under():
    data = bytearray(1024 * 1024)
    assert len(data)
"""


def test_limit_memory_is_enforced_without_tracing_every_test(tmp_path):
    """The suite runs without --memray (tracing every test doubled its time): a marked test is still
    traced, under the suite's own addopts (xdist workers included) with xdist and pytest-memray
    as the only plugins loaded."""
    (tmp_path / "test_probe.py").write_text(MEMORY_PROBE)
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--memray" not in addopts  # what this test is about: enforcement without it
    # The two plugins this is about, and no others: loading every installed plugin (and rewriting
    # their asserts) in 5 processes was most of this test's cost.
    plugins = ["-p", "xdist.plugin", "-p", "pytest_memray.plugin"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *plugins,
            *addopts.split(),
            "-n",  # two workers for the two tests, not the suite's six (each started ~0.4 CPU-s)
            "2",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_probe.py",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout
    assert "Test was limited to 4.0MiB but allocated 32.0MiB" in result.stdout


@pytest.mark.parametrize(
    "name", ["SyncReport", "SyncedCheckpoint", "SyncFailure", "StreamedResponse", "DownloadLockedError"]
)
def test_what_a_download_or_a_sync_returns_or_raises_is_importable_from_the_package(name):
    """``client.checkpoints.sync`` returns a ``SyncReport``: a user looks for it as ``tinker_sync.SyncReport``."""
    import tinker_sync.types

    assert name in tinker_sync.__all__
    assert getattr(tinker_sync, name) is getattr(tinker_sync.types, name, getattr(tinker_sync, name))


BUILD_OUTPUTS = [
    "build/lib/x.py",
    "dist/tinker_sync-0.1.0.tar.gz",
    "tinker_sync.egg-info/PKG-INFO",
    "csrc/_sse.c",
    "tinker_sync/_sse.cpython-311-x86_64-linux-gnu.so",
    "tinker_sync/_pure_build",
    "tinker-demo/demo-run_weights_demo/adapter_config.json",  # `tinker-sync demo` in the checkout
    ".venv/bin/python",
    "bench/results.json",
]


@pytest.mark.parametrize("path", BUILD_OUTPUTS)
def test_build_and_demo_outputs_are_ignored_by_git(path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist)")
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", path], timeout=30)
    assert ignored.returncode == 0, f"{path} would land in the repository"


def test_every_package_directory_is_installed():
    """``[tool.setuptools] packages`` lists packages by name: a new subpackage left off it would be
    missing from every wheel and sdist install while the checkout works."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {_module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert set(listed) == on_disk
