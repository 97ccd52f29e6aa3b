"""Guard tests: exports, docstrings, imports in fresh interpreters, the module map."""

from __future__ import annotations

import ast
import pathlib
import pydoc
import subprocess
import sys
import types

import pytest

import tinker_sync

PACKAGE = pathlib.Path(tinker_sync.__file__).parent
MODULES = sorted(
    ".".join(("tinker_sync", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name != "__main__.py"
)

# The module map of STYLE.md, top to bottom: a module may import only modules above it (or itself).
MODULE_MAP = [
    "_version",
    "_exceptions",
    "_events",
    "_config",
    "_sse_py",
    "_sse",
    "sse",
    "_extract",
    "_download",
    "_retry",  # pure policy, no I/O: above _transport
    "_observe",  # hook records, logging: above _transport
    "_transport",
    "_response",
    "_client",
    "resources",
    "cli",
    "__init__",
    "__main__",
]


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


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module):
    result = run(f"import {module}")
    assert result.returncode == 0, result.stderr


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


def _imports(path: pathlib.Path, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of each import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package_parts = ("tinker_sync", *path.relative_to(PACKAGE).parent.parts)
    nodes: list[ast.AST] = []
    if top_level_only:
        stack = list(tree.body)
        while stack:  # module level, including under if/try (TYPE_CHECKING, fallbacks)
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    stack.extend(handler.body)
    else:
        nodes = list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                name = ".".join(base + ((node.module,) if node.module else ()))
                if node.module is None:  # from . import x
                    found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
                    continue
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_transport_imports_urllib3(path):
    if path.name == "_transport.py" and path.parent == PACKAGE:
        assert any(name.split(".")[0] == "urllib3" for _, name in _imports(path, False))
        return
    offenders = [
        f"line {line}: {name}" for line, name in _imports(path, False) if name.split(".")[0] == "urllib3"
    ]
    assert offenders == []


def _rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tinker_sync":
        return None
    if len(parts) == 1:
        return MODULE_MAP.index("__init__")
    if parts[1] == "testing":
        return None
    return MODULE_MAP.index(parts[1]) if parts[1] in MODULE_MAP else -1


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if "testing" not in p.parts], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_follow_the_module_map(path):
    module = ".".join(("tinker_sync", *path.relative_to(PACKAGE).with_suffix("").parts))
    own = _rank(module.removesuffix(".__init__") if path.parent == PACKAGE else module)
    assert own not in (None, -1), f"{module} is not on the module map"
    bad = []
    for line, name in _imports(path, top_level_only=True):
        rank = _rank(name)
        if rank is None:
            continue
        if rank == -1 or rank > own:
            bad.append(f"line {line}: {name}")
    assert bad == [], f"{module} imports modules listed below it"


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if "testing" in p.parts], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_testing_server_never_imports_the_client(path):
    for line, name in _imports(path, False):
        if name.startswith("tinker_sync") and not name.startswith("tinker_sync.testing"):
            pytest.fail(f"{path.name} line {line} imports {name}")


def test_lazy_modules_never_imported_at_package_level():
    init = PACKAGE / "__init__.py"
    names = [name for _, name in _imports(init, False)]
    for heavy in ("tarfile", "tqdm", "tinker_sync.cli", "tinker_sync.testing", "asyncio"):
        assert not any(n == heavy or n.startswith(heavy + ".") for n in names), heavy
