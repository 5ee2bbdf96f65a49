"""Provenance attributes of the NetCDF files climdl writes: CF ``Conventions``, ``source`` and a
``history`` whose newest entry, stamped in UTC, comes first and keeps the input's entries below.

Every writer (sample, prepare, downscale, segment, evaluate) takes these values from here, so
the stamps, the version text and the chaining read the same in every file.
"""

from __future__ import annotations

import datetime as dt

from climdl import __version__

CF_CONVENTIONS = "CF-1.10"
"""The ``Conventions`` attribute of every file climdl writes."""


def utc_timestamp() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (the stamp of a history entry)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamped(entry: str, sep: str = " ") -> str:
    """One history entry: the UTC time, ``sep``, then ``entry``.

    Args:
        entry: what was done (usually the command line).
        sep: text between the stamp and the entry.

    Returns:
        the history line.
    """
    return f"{utc_timestamp()}{sep}{entry}"


def chain_history(newest: str, previous: object = None) -> str:
    """``newest`` with the input's history (when it has one) on the lines after it.

    Args:
        newest: this step's stamped line (:func:`stamped`).
        previous: the input's ``history`` attribute, or None.

    Returns:
        the ``history`` attribute of the output.
    """
    return f"{newest}\n{previous}" if previous else newest


def history_entry(entry: str, previous: object = None, sep: str = " ") -> str:
    """:func:`stamped` ``entry`` followed by the ``previous`` history.

    Args:
        entry: what was done (usually the command line).
        previous: the input's ``history`` attribute, or None.
        sep: text between the stamp and the entry.

    Returns:
        the ``history`` attribute of the output.
    """
    return chain_history(stamped(entry, sep), previous)


def climdl_source(what: str) -> str:
    """The ``source`` attribute: ``climdl <version> <what>``.

    Args:
        what: the method that made the data (e.g. ``synthetic climate``).

    Returns:
        the attribute text.
    """
    return f"climdl {__version__} {what}"
