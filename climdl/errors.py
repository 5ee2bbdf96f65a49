"""User-facing errors.

Every predictable mistake (missing variable, wrong units, grid mismatch, unreadable file, bad
configuration) raises a :class:`ClimdlError` whose message is one clear sentence saying what is
wrong and what to do. The CLI prints that sentence and exits non-zero, without a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ClimdlError(Exception):
    """Base class of all errors a user can cause and fix; the message is shown as is."""

    exit_code: int = 2


class DataError(ClimdlError):
    """Input data are missing, unreadable, or not what climdl needs (variables, units, grids, times)."""


class ConfigError(ClimdlError):
    """A configuration, catalog entry or command-line option is invalid."""


class OutputError(ClimdlError):
    """An output cannot be written (exists without --overwrite, no permission, disk full)."""
