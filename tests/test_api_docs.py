"""The public API documents itself: every name a user imports has a Google-style docstring.

The public API is the ``__all__`` of the modules below (the package faces and the user-facing
entry modules) plus a few methods users call on the returned objects. Each function or class
needs a docstring; when it takes arguments, an ``Args:`` section naming every one of them (a
class documents its constructor's arguments; a dataclass may call them ``Attributes:``); when a
function returns something, a ``Returns:`` (or ``Yields:``) section. ``*args``/``**kwargs``
may go unnamed. ruff's D1/D417 rules (pyproject.toml) check that docstrings exist across
climdl and that an ``Args:`` section is complete; this test adds the sections themselves.

The sources are read with :mod:`ast`, not imported, so the test takes well under a second
(importing torch, Lightning and cartopy would take longer than the check). Re-exports
(``from climdl.x import y``, also under ``if TYPE_CHECKING:`` for the lazy package faces) are
followed to the definition.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import climdl

PACKAGE_DIR = Path(climdl.__file__).resolve().parent

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

# methods users call on the public classes (notebooks, checkpoints)
PUBLIC_METHODS = [
    "climdl.data.spec.EmulatorSpec.from_dict",
    "climdl.data.spec.EmulatorSpec.to_dict",
    "climdl.clouds.spec.SegmenterSpec.from_dict",
    "climdl.clouds.spec.SegmenterSpec.to_dict",
    "climdl.data.catalog.CatalogEntry.root_path",
    "climdl.data.catalog.CatalogEntry.files",
    "climdl.data.catalog.CatalogEntry.open",
    "climdl.data.catalog.CatalogEntry.describe",
]

Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_SECTION = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)\**(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:")
_TREES: dict[str, ast.Module] = {}


# ----------------------------------------------------------------------------- the API
def _tree(module: str) -> ast.Module:
    if module not in _TREES:
        parts = module.split(".")[1:]
        path = PACKAGE_DIR.joinpath(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        _TREES[module] = ast.parse(path.read_text(), str(path))
    return _TREES[module]


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements at module level, including those under ``if`` (``if TYPE_CHECKING:``)."""
    for node in tree.body:
        yield node
        if isinstance(node, ast.If):
            yield from node.body


def _all(module: str) -> list[str]:
    for node in _top_level(_tree(module)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [str(v) for v in ast.literal_eval(node.value)]
    raise AssertionError(f"{module} has no __all__ naming its public API")


def _resolve(module: str, name: str) -> Def | None:
    """The definition ``name`` of ``module`` refers to, following re-exports; None for data."""
    for node in _top_level(_tree(module)):
        if isinstance(node, Def) and node.name == name:
            return node
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name and node.module.startswith("climdl."):
                    return _resolve(node.module, alias.name)
    return None  # constants (EARTH_RADIUS, SCHEMA_VERSION) and type aliases (Kind, Step)


def _public_api() -> Iterator[tuple[str, Def | None]]:
    for module in PUBLIC_MODULES:
        for name in _all(module):
            yield f"{module}.{name}", _resolve(module, name)
    for path in PUBLIC_METHODS:
        module, cls, meth = path.rsplit(".", 2)
        node = _resolve(module, cls)
        assert isinstance(node, ast.ClassDef), path
        yield path, next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == meth)


# ----------------------------------------------------------------------------- the checks
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


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if ast.unparse(target).split(".")[-1] == "dataclass":
            return True
    return False


def _params(node: Def) -> list[str]:
    """Arguments a user passes: the function's, or the constructor's for a class."""
    if isinstance(node, ast.ClassDef):
        if _is_dataclass(node):
            return [
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign)
                and isinstance(n.target, ast.Name)
                and "ClassVar" not in ast.unparse(n.annotation)
                and not (n.value is not None and "init=False" in ast.unparse(n.value))
            ]
        init = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
            None,
        )
        return _params(init) if init is not None else []
    a = node.args
    names = [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    return [n for n in names if n not in ("self", "cls")]


def _problems(path: str, node: Def | None) -> list[str]:
    if node is None:
        return []
    doc = ast.get_docstring(node)
    if not doc or not doc.strip():
        return [f"{path}: no docstring"]
    sections = _sections(inspect.cleandoc(doc))
    problems = []
    if params := _params(node):
        dataclass = isinstance(node, ast.ClassDef) and _is_dataclass(node)
        titles = ("Args", "Attributes") if dataclass else ("Args",)
        named = {n for t in titles for n in sections.get(t, [])}
        if not any(t in sections for t in titles):
            problems.append(f"{path}: no {' or '.join(titles)} section for {', '.join(params)}")
        elif missing := [p for p in params if p not in named]:
            title = next(t for t in titles if t in sections)
            problems.append(f"{path}: {title} misses {', '.join(missing)}")
    if not isinstance(node, ast.ClassDef):
        returns = node.returns is not None and ast.unparse(node.returns) != "None"
        if returns and "Returns" not in sections and "Yields" not in sections:
            problems.append(f"{path}: no Returns section")
    return problems


# ----------------------------------------------------------------------------- tests
def _parse_def(source: str) -> Def:
    node = ast.parse(inspect.cleandoc(source)).body[0]
    assert isinstance(node, Def)
    return node


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


def test_checks_bite() -> None:
    """An argument left out, a missing Returns, an undocumented dataclass field are caught."""
    fn = _parse_def(
        '''
        def f(a: int, *, b: int = 0, **kw: int) -> int:
            """Sum.

            Args:
                a: first.
            """
        '''
    )
    assert _problems("f", fn) == ["f: Args misses b", "f: no Returns section"]
    ok = _parse_def(
        '''
        def g(self, a: int, *rest: int) -> None:
            """Nothing back.

            Args:
                a: first.
            """
        '''
    )
    assert _problems("g", ok) == []
    dc = _parse_def(
        '''
        @dataclass(frozen=True)
        class R:
            """A result.

            Attributes:
                path: where.
            """

            path: str
            seconds: float
        '''
    )
    assert _problems("R", dc) == ["R: Attributes misses seconds"]
    cls = _parse_def(
        '''
        class M:
            """A module."""

            def __init__(self, n: int) -> None: ...
        '''
    )
    assert _problems("M", cls) == ["M: no Args section for n"]


def test_public_api_is_documented() -> None:
    api = list(_public_api())
    assert sum(node is not None for _, node in api) > 100  # the walk found the API
    problems = [p for path, node in api for p in _problems(path, node)]
    if problems:
        pytest.fail(
            f"{len(problems)} undocumented parts of the public API:\n" + "\n".join(problems)
        )
