"""Lightning's log messages for ``climdl train``: once each, on stderr, without advertisements.

Split from :mod:`climdl.tasks.train_cli`, whose job is the command line: this module only decides
where Lightning's own ``logging`` output goes and how it looks.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["configure_lightning_logging"]


class _NoAdverts(logging.Filter):
    """Drops Lightning's advertisements ("Tip: try installing litlogger / litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Tip:" in msg or "litlogger" in msg or "litmodels" in msg)


class _Once(logging.Filter):
    """Drops a note (INFO or below) already shown in this run: Lightning repeats its notes at each entry
    point (``fit``, then ``validate`` and ``test`` of the best checkpoint), e.g. "The following
    callbacks returned in configure_callbacks will override ..." or "Restoring states from the
    checkpoint path ..." for the same file."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:  # a warning repeated may matter each time
            return True
        key = (record.levelno, record.getMessage())
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class _LevelFormatter(logging.Formatter):
    """Lightning's INFO lines as they are; warnings and errors stand out with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (not the one of its creation), so that a
    replaced stderr (pytest, notebooks) does not receive a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_lightning_logging(quiet: bool = False) -> None:
    """Lightning's messages once each, on stderr, without advertisements (``quiet``: its
    warnings and errors only).

    ``import lightning`` gives the ``lightning`` logger its own handler while it still
    propagates to the root logger that ``climdl.cli.main`` configures (every message twice),
    and ``lightning.pytorch`` / ``lightning.fabric`` add a third when imported before that. Here
    the ``lightning`` logger gets the one handler and stops propagating; its children only
    propagate to it. DEBUG with ``climdl --debug`` (root logger at DEBUG), else WARNING when
    ``quiet`` and INFO otherwise."""
    root = logging.getLogger()
    top = logging.getLogger("lightning")
    for name in ("lightning.pytorch", "lightning.fabric"):
        child = logging.getLogger(name)
        for h in list(child.handlers):
            child.removeHandler(h)
        child.propagate = True
        child.setLevel(logging.NOTSET)
    for h in list(top.handlers):
        top.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(_LevelFormatter("%(message)s"))
    handler.addFilter(_NoAdverts())
    handler.addFilter(_Once())
    top.addHandler(handler)
    top.propagate = False
    if root.getEffectiveLevel() <= logging.DEBUG:
        top.setLevel(logging.DEBUG)
    else:
        top.setLevel(logging.WARNING if quiet else logging.INFO)
