"""The public API documents itself: every name a user imports has a Google-style docstring.

The public API is the ``__all__`` of the modules below (the package faces and the user-facing
entry modules) plus a few methods users call on the returned objects. Each callable needs a
docstring; when it takes arguments, an ``Args:`` section naming every one of them (a class
documents its constructor's arguments; a dataclass may call them ``Attributes:``); when it
returns something, a ``Returns:`` (or ``Yields:``) section. ``*args``/``**kwargs`` may go
unnamed. ruff's D1/D417 rules (pyproject.toml) check that docstrings exist across climdl and
that an ``Args:`` section is complete; this test adds the sections themselves for the API.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PUBLIC_MODULES = [
    "climdl.inference",
    "climdl.evaluation",
    "climdl.plot",
    "climdl.models",
    "climdl.preprocess",
    "climdl.data.catalog",
    "climdl.data.reader",
    "climdl.data.sample",
    "climdl.data.prepare",
    "climdl.data.spec",
    "climdl.data.emulator_data",
    "climdl.clouds.spec",
    "climdl.clouds.readers",
    "climdl.clouds.data",
    "climdl.inference.segment",
    "climdl.tasks.downscaling",
    "climdl.tasks.segmentation",
]

# methods users call on the public classes (notebooks, checkpoints, migrations)
PUBLIC_METHODS = [
    "climdl.data.spec.EmulatorSpec.from_dict",
    "climdl.data.spec.EmulatorSpec.to_dict",
    "climdl.data.spec.EmulatorSpec.migrate",
    "climdl.clouds.spec.SegmenterSpec.from_dict",
    "climdl.clouds.spec.SegmenterSpec.to_dict",
    "climdl.clouds.spec.SegmenterSpec.migrate",
    "climdl.data.catalog.CatalogEntry.root_path",
    "climdl.data.catalog.CatalogEntry.files",
    "climdl.data.catalog.CatalogEntry.open",
    "climdl.data.catalog.CatalogEntry.describe",
]

_SECTION = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)\**(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:")


def _public_api() -> Iterator[tuple[str, Any]]:
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        names = getattr(module, "__all__", None)
        assert names, f"{modname} has no __all__ naming its public API"
        for name in names:
            yield f"{modname}.{name}", getattr(module, name)
    for path in PUBLIC_METHODS:
        modname, cls, meth = path.rsplit(".", 2)
        yield path, getattr(getattr(importlib.import_module(modname), cls), meth)


def _sections(doc: str) -> dict[str, list[str]]:
    """Section title -> the names its entries start with (Google style)."""
    out: dict[str, list[str]] = {}
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        base = len(m["indent"])
        entry_indent: int | None = None
        names: list[str] = []
        i += 1
        while i < len(lines):
            line = lines[i]
            if line.strip():
                indent = len(line) - len(line.lstrip())
                if indent <= base:
                    break
                if entry_indent is None:
                    entry_indent = indent
                if indent == entry_indent and (e := _ENTRY.match(line)):
                    names.append(e["name"])
            i += 1
        out[m["name"]] = names
    return out


def _params(obj: Callable[..., Any]) -> list[str]:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.name not in ("self", "cls")
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _returns_something(obj: Callable[..., Any]) -> bool:
    try:
        ann = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return False
    return ann not in (inspect.Signature.empty, None, type(None), "None")


def _problems(path: str, obj: Any) -> list[str]:
    if not (inspect.isclass(obj) or inspect.isroutine(obj)):
        return []  # constants (EARTH_RADIUS) and type aliases (Kind, BlockKind)
    doc = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc and doc.startswith(
        f"{obj.__name__}("
    ):
        doc = None  # the signature dataclasses write when a class has no docstring
    if not doc or not doc.strip():
        return [f"{path}: no docstring"]
    doc = inspect.cleandoc(doc)
    sections = _sections(doc)
    problems = []
    params = _params(obj)
    if params:
        titles = ("Args", "Attributes") if dataclasses.is_dataclass(obj) else ("Args",)
        named = {n for t in titles for n in sections.get(t, [])}
        if not any(t in sections for t in titles):
            problems.append(f"{path}: no Args section for {', '.join(params)}")
        elif missing := [p for p in params if p not in named]:
            problems.append(f"{path}: Args misses {', '.join(missing)}")
    if not inspect.isclass(obj) and _returns_something(obj):
        if "Returns" not in sections and "Yields" not in sections:
            problems.append(f"{path}: no Returns section")
    return problems


def test_sections_parser_reads_google_style() -> None:
    doc = inspect.cleandoc(
        """Summary.

        Args:
            a: first,
                continued.
            b (int): second.
            **kw: rest.

        Returns:
            Something: described.
        """
    )
    assert _sections(doc) == {"Args": ["a", "b", "kw"], "Returns": ["Something"]}


def test_public_api_is_documented() -> None:
    api = list(_public_api())
    assert len(api) > 60  # the walk found the API, not an empty list
    problems = [p for path, obj in api for p in _problems(path, obj)]
    if problems:
        pytest.fail(f"{len(problems)} undocumented parts of the public API:\n" + "\n".join(problems))
