"""mkdocs hooks: a public name without a docstring, or missing from the API reference, fails the build.

mkdocstrings renders whatever docstrings exist and says nothing of the missing ones, so this hook
walks the public names itself before each build: everything in ``tinker_sync.__all__``,
``tinker_sync.types.__all__`` and ``tinker_sync.testing.__all__``, the resource classes a client
hands out (``client.checkpoints``, ...), and the public methods and properties of every class
among them that the package defines. Each problem is a WARNING on an ``mkdocs.*`` logger, which
``mkdocs build --strict`` (as CI runs it) turns into a failed build.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.public_docstrings")

PUBLIC_MODULES = ("tinker_sync", "tinker_sync.types", "tinker_sync.testing")
# Not in any __all__, but every user holds them: the resources behind the client's properties.
RESOURCE_CLASSES = (
    "tinker_sync.resources.server.Health",
    "tinker_sync.resources.server.Server",
    "tinker_sync.resources.training_runs.TrainingRuns",
    "tinker_sync.resources.checkpoints.Checkpoints",
    "tinker_sync.resources.sessions.Sessions",
    "tinker_sync.resources.futures.Futures",
    "tinker_sync.resources.sampling.Sampling",
    "tinker_sync.resources.sampling.SampleStream",
)
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def resolve(dotted: str) -> Any:
    """The object a dotted name points at: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def public_objects(
    modules: tuple[str, ...] = PUBLIC_MODULES, extra: tuple[str, ...] = RESOURCE_CLASSES
) -> dict[str, Any]:
    """Every public name, dotted, with its object (``__version__`` aside: a string has no docstring)."""
    found: dict[str, Any] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not name.startswith("__"):
                found[f"{module_name}.{name}"] = getattr(module, name)
    for dotted in extra:
        found[dotted] = resolve(dotted)
    return found


def _docstring(obj: Any) -> str | None:
    doc = obj.__doc__ if isinstance(obj, type) else inspect.getdoc(obj)
    if isinstance(obj, type) and doc is not None and doc.startswith(f"{obj.__name__}("):
        return None  # a dataclass's generated "Name(field, ...)" says nothing
    return doc.strip() if doc else None


def _members(cls: type, package: str) -> Iterator[tuple[str, Any]]:
    """The public methods and properties a class of the package defines or inherits from the package."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(package):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(value, (staticmethod, classmethod)):
                yield name, value.__func__
            elif isinstance(value, (property, functools.cached_property)) or inspect.isfunction(value):
                yield name, value
            elif inspect.isfunction(getattr(value, "__wrapped__", None)):
                yield name, value  # a decorated method (``@endpoint``) keeps its function's docstring


def undocumented(objects: dict[str, Any], package: str = "tinker_sync") -> list[str]:
    """The dotted names, among ``objects`` and their public members, that have no docstring."""
    missing = []
    for dotted, obj in objects.items():
        if typing.get_origin(obj) is not None:
            continue  # a type alias (``Literal[...]``) cannot hold a docstring; the reference shows its values
        if _docstring(obj) is None:
            missing.append(dotted)
        if isinstance(obj, type) and obj.__module__.startswith(package):
            for name, member in _members(obj, package):
                if member is not None and _docstring(member) is None:
                    missing.append(f"{dotted}.{name}")
    return sorted(set(missing))


def unreferenced(objects: dict[str, Any], reference_dir: Path) -> list[str]:
    """The dotted names whose object no ``::: name`` directive of the reference pages renders."""
    rendered = {
        id(resolve(name))
        for page in reference_dir.glob("*.md")
        for name in DIRECTIVE.findall(page.read_text())
    }
    return sorted(dotted for dotted, obj in objects.items() if id(obj) not in rendered)


def on_pre_build(config: Any, **_: Any) -> None:
    """Log a warning (a failure under ``--strict``) per public name without a docstring or a reference entry.

    ``extra: public_modules: [...]`` in the config replaces ``PUBLIC_MODULES`` (CI's probe adds an
    undocumented module that way, to see the strict build fail).
    """
    modules = tuple(config["extra"].get("public_modules", PUBLIC_MODULES))
    objects = public_objects(modules)
    for dotted in undocumented(objects):
        log.warning("public name without a docstring: %s", dotted)
    for dotted in unreferenced(objects, Path(config["docs_dir"]) / "reference"):
        log.warning(
            "public name missing from the API reference (add '::: %s' to a docs/reference page)", dotted
        )
