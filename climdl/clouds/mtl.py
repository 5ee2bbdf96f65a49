"""Landsat Collection 2 metadata (``*_MTL.txt`` in the ODL text form, or ``*_MTL.json``).

:func:`find_mtl` finds the MTL file of a product (the file or its folder), :func:`read_mtl`
reads either form into one flat ``NAME: value`` mapping, and :func:`mtl_number` takes a number
from it with a clear error when it is absent or malformed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from climdl.errors import DataError

MTL_SUFFIXES = ("_MTL.txt", "_MTL.json")
"""File name endings of the two MTL forms (text first)."""


def _odl_value(text: str) -> Any:
    """An ODL value: a quoted string, else an int or float where it parses, else the text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    try:
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        return text


def parse_mtl_text(text: str, source: object = "the MTL file") -> dict[str, Any]:
    """The nested groups of an MTL file in the ODL text form (``GROUP = X`` ... ``END_GROUP =
    X``, ``NAME = value``, ``END``); quoted values stay strings, others become numbers."""
    root: dict[str, Any] = {}
    stack: list[dict[str, Any]] = [root]
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line == "END":
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise DataError(f"{source} line {n} is not 'NAME = value' ODL: {line[:60]!r}.")
        name = name.strip()
        if name == "GROUP":
            group: dict[str, Any] = {}
            stack[-1][value.strip()] = group
            stack.append(group)
        elif name == "END_GROUP":
            if len(stack) == 1:
                raise DataError(f"{source} line {n}: END_GROUP without a GROUP.")
            stack.pop()
        else:
            stack[-1][name] = _odl_value(value)
    return root


def _flatten(tree: Mapping[str, Any], out: dict[str, Any] | None = None) -> dict[str, Any]:
    """All ``NAME: value`` pairs of the nested groups; the first occurrence of a name wins."""
    out = {} if out is None else out
    for k, v in tree.items():
        if isinstance(v, Mapping):
            _flatten(v, out)
        else:
            out.setdefault(str(k), v)
    return out


def read_mtl(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The flattened metadata of an MTL file, text (ODL) or JSON form."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read the Landsat metadata {p}: {exc.strerror}.") from exc
    if p.suffix.lower() == ".json":
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p} is not valid JSON: {exc.msg} (line {exc.lineno}).") from exc
        if not isinstance(tree, Mapping):
            raise DataError(f"{p} is not a Landsat MTL JSON object.")
        return _flatten(tree)
    return _flatten(parse_mtl_text(text, p))


def find_mtl(path: str | os.PathLike[str]) -> Path:
    """The MTL file itself, or the one ``*_MTL.txt``/``*_MTL.json`` in a folder (text first)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"{p} does not exist.")
    for suffix in MTL_SUFFIXES:
        found = sorted(p.glob(f"*{suffix}"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"{p} holds {len(found)} *{suffix} files ({', '.join(f.name for f in found)}); "
                "pass the MTL file of the scene you mean."
            )
    raise DataError(f"{p} holds no Landsat *_MTL.txt or *_MTL.json metadata file.")


def is_landsat_path(path: str | os.PathLike[str]) -> bool:
    """True for an ``*_MTL.txt``/``*_MTL.json`` file or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        return any(any(p.glob(f"*{s}")) for s in MTL_SUFFIXES)
    return p.name.upper().endswith(tuple(s.upper() for s in MTL_SUFFIXES))


def mtl_number(mtl: Mapping[str, Any], key: str, source: Path) -> float:
    """The MTL value ``key`` of the flat metadata ``mtl`` as a float (the JSON form quotes
    numbers); :class:`~climdl.errors.DataError` naming ``source`` if absent or not a number."""
    if key not in mtl:
        raise DataError(f"the Landsat metadata {source} lacks {key}, which climdl needs.")
    try:
        return float(mtl[key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: {key} = {mtl[key]!r} is not a number.") from exc
