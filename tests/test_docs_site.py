"""The docs site's guard (docs/hooks.py), without mkdocs: every public name has a docstring and an
API reference entry, and a missing one becomes a WARNING on an ``mkdocs.*`` logger, which the strict
build CI runs (``.ci/docs``, with a probe that must fail) turns into a failure."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from _helpers import ROOT

from tinker_sync.resources._resource import endpoint

DOCS = ROOT / "docs"
MKDOCS = (ROOT / "mkdocs.yml").read_text()
SETTINGS = "\n".join(line.split(" #", 1)[0] for line in MKDOCS.splitlines() if not line.startswith("#"))


def load_hooks() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = load_hooks()


def test_every_public_name_has_a_docstring() -> None:
    objects = hooks.public_objects()
    assert "tinker_sync.Client" in objects and "tinker_sync.types.TrainingRun" in objects
    assert "tinker_sync.testing.MockTinkerServer" in objects
    assert "tinker_sync.resources.checkpoints.Checkpoints" in objects
    assert hooks.undocumented(objects) == []


def test_every_public_name_is_in_the_api_reference() -> None:
    assert hooks.unreferenced(hooks.public_objects(), DOCS / "reference") == []


@dataclasses.dataclass
class AutoDoc:  # a dataclass's generated docstring, "AutoDoc(x: int)", says nothing
    x: int


class Documented:
    """Documented."""

    def method(self) -> None:
        """Documented."""

    def bare(self) -> None:
        pass

    @property
    def prop(self) -> int:
        return 1

    @endpoint
    def call(self) -> None:
        pass

    @staticmethod
    def static() -> None:
        pass

    def _private(self) -> None:
        pass


class Bare:
    pass


def bare_function() -> None:
    pass


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of public names, some undocumented, importable as ``docs_probe_module``."""
    module = types.ModuleType("docs_probe_module")
    module.__all__ = ["AutoDoc", "Bare", "Documented", "bare_function"]  # type: ignore[attr-defined]
    for name in module.__all__:  # type: ignore[attr-defined]
        obj = globals()[name]
        setattr(module, name, obj)
    monkeypatch.setitem(sys.modules, "docs_probe_module", module)
    return "docs_probe_module"


def test_a_name_without_a_docstring_is_found(probe: str) -> None:
    objects = hooks.public_objects((probe,), ())
    missing = hooks.undocumented(objects, package=__name__)
    assert missing == [
        f"{probe}.AutoDoc",
        f"{probe}.Bare",
        f"{probe}.Documented.bare",
        f"{probe}.Documented.call",
        f"{probe}.Documented.prop",
        f"{probe}.Documented.static",
        f"{probe}.bare_function",
    ]


def test_a_name_missing_from_the_reference_is_found(probe: str, tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text(f"# P\n\n::: {probe}.Documented\n\n::: {probe}.Bare\n")
    objects = hooks.public_objects((probe,), ())
    assert hooks.unreferenced(objects, tmp_path) == [f"{probe}.AutoDoc", f"{probe}.bare_function"]


def test_the_hook_warns_on_an_mkdocs_logger(probe: str, caplog: pytest.LogCaptureFixture) -> None:
    config: dict[str, Any] = {"extra": {"public_modules": ["tinker_sync", probe]}, "docs_dir": str(DOCS)}
    with caplog.at_level(logging.WARNING):
        hooks.on_pre_build(config)
    warned = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        "mkdocs.hooks.public_docstrings",
        logging.WARNING,
        f"public name without a docstring: {probe}.Bare",
    ) in warned
    assert all(name.startswith("mkdocs.") and level == logging.WARNING for name, level, _ in warned)
    # The real package alone: not a word.
    caplog.clear()
    hooks.on_pre_build({"extra": {}, "docs_dir": str(DOCS)})
    assert caplog.records == []


def test_the_site_is_strict_offline_and_hooked() -> None:
    assert re.search(r"^strict: true$", MKDOCS, re.M)
    assert re.search(r"^hooks:\n  - docs/hooks\.py", MKDOCS, re.M)
    assert re.search(r"^  font: false$", MKDOCS, re.M)  # no web fonts fetched
    assert "social" not in SETTINGS and "inventories" not in SETTINGS and "privacy" not in SETTINGS
    assert "bash .ci/docs" in (ROOT / ".ci" / "run").read_text()


def test_the_nav_lists_every_page() -> None:
    listed = set(re.findall(r":\s+(\S+\.md)$", MKDOCS, re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "a page the site does not show"
