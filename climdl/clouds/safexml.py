"""Reading product metadata XML safely: no DTDs, no entities, bounded size, namespaces ignored.

Satellite products (Sentinel-2's ``MTD_MSIL1C.xml`` and ``MTD_TL.xml``) arrive from anywhere,
so their XML is parsed defensively. ``defusedxml`` is not a climdl dependency; instead
:func:`parse_xml` refuses any document with a document type declaration (``<!DOCTYPE``) or an
entity declaration (``<!ENTITY``) before the standard library's expat parser sees it, which rules
out entity-expansion bombs ("billion laughs") and external entities (expat never fetches them,
and with no DTD there is nothing to expand), and it refuses files over :data:`MAX_XML_BYTES`.
Real product metadata has neither a DTD nor entities (it names its XML Schema instead).

The helpers :func:`find`, :func:`find_all` and :func:`text_of` look elements up by their local
name, whatever namespace prefix (``n1:``) the product's schema version puts on them.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from climdl.errors import DataError

__all__ = ["MAX_XML_BYTES", "find", "find_all", "local_name", "parse_xml", "text_of"]

MAX_XML_BYTES = 32 * 1024 * 1024
"""Largest metadata file read (a full Sentinel-2 ``MTD_TL.xml`` with its angle grids is ~0.7 MB)."""

_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(path: str | os.PathLike[str], what: str = "metadata") -> ET.Element:
    """The root element of the XML file ``path``, parsed without DTDs or entities.

    Args:
        path: the XML file.
        what: what the file is, for the error messages ("the Sentinel-2 product metadata").

    Returns:
        The root element.

    Raises:
        DataError: the file is missing, too large, declares a DTD or entities, or is not
            well-formed XML.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_XML_BYTES:
            raise DataError(
                f"{what} {p} is {size / 1e6:.0f} MB, more than product metadata ever is "
                f"({MAX_XML_BYTES / 1e6:.0f} MB at most); it is not the file climdl expects."
            )
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {p}: {exc.strerror or exc}.") from exc
    if _FORBIDDEN.search(data):
        raise DataError(
            f"{what} {p} declares a DTD or XML entities, which product metadata never does; "
            "climdl refuses to parse it (entity expansion is unsafe)."
        )
    try:
        parser = ET.XMLParser()
        parser.feed(data)
        return parser.close()
    except ET.ParseError as exc:
        raise DataError(f"{what} {p} is not well-formed XML ({exc}); re-download it.") from exc


def local_name(tag: str) -> str:
    """An element tag without its ``{namespace}`` part."""
    return tag.rsplit("}", 1)[-1]


def find_all(root: ET.Element, name: str) -> Iterator[ET.Element]:
    """All elements below (and including) ``root`` whose local name is ``name``, in document order.

    Args:
        root: where to search.
        name: the local name (no namespace prefix).

    Returns:
        The matching elements.
    """
    return (el for el in root.iter() if local_name(el.tag) == name)


def find(root: ET.Element, name: str) -> ET.Element | None:
    """The first element below ``root`` whose local name is ``name``, or None.

    Args:
        root: where to search.
        name: the local name (no namespace prefix).

    Returns:
        The element, or None.
    """
    return next(find_all(root, name), None)


def text_of(root: ET.Element, name: str) -> str | None:
    """The stripped text of the first element named ``name`` below ``root`` (None if absent or empty).

    Args:
        root: where to search.
        name: the local name (no namespace prefix).

    Returns:
        The text, or None.
    """
    el = find(root, name)
    if el is None or el.text is None or not el.text.strip():
        return None
    return el.text.strip()
