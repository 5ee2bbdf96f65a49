"""Lightning's messages under ``climdl train``: once each, quiet with ``--quiet``."""

from __future__ import annotations

import logging

import pytest

from climdl.tasks.lightning_logging import configure_lightning_logging


def test_each_lightning_message_once_and_only_warnings_when_quiet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)  # not --debug
    top = logging.getLogger("lightning")
    saved = (list(top.handlers), top.propagate, top.level)
    try:
        configure_lightning_logging()
        child = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        for _ in range(2):  # as fit, then validate of the best checkpoint, say it
            child.info("Restoring states from the checkpoint path at best.ckpt")
        child.info("Restoring states from the checkpoint path at other.ckpt")
        lines = capsys.readouterr().err.splitlines()
        assert lines == [
            "Restoring states from the checkpoint path at best.ckpt",
            "Restoring states from the checkpoint path at other.ckpt",
        ]
        configure_lightning_logging(quiet=True)
        child.info("Seed set to 123")
        child.warning("a real warning")
        assert capsys.readouterr().err.splitlines() == ["WARNING: a real warning"]
    finally:
        for h in list(top.handlers):
            top.removeHandler(h)
        for h in saved[0]:
            top.addHandler(h)
        top.propagate, top.level = saved[1], saved[2]
