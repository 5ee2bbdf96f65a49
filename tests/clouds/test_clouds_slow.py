"""Convergence: a briefly trained CNN beats the Fmask-like threshold test on held-out scenes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from climdl.cli import main
from climdl.parallel.testing import NO_LOGGERS
from tests.argv import train_argv
from tests.paths import CONFIGS

CONFIG = CONFIGS / "clouds" / "sample.yaml"


@pytest.mark.slow
def test_cnn_beats_the_threshold_baseline_on_held_out_scenes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train the sample config for its own 10 epochs (the demo's budget: about a minute on two
    CPU cores) on 96 sample scenes and score the best checkpoint on 8 scenes of another seed:
    the CNN has the higher mean IoU, the higher IoU on every class and an any-cloud IoU of at
    least 0.9 (bench/RESULTS.md, 2026-12-07, issue 18: any-cloud 0.939-0.944 for seeds 123, 1
    and 2, every class ahead by at least 0.09).

    Beating the threshold test's any-cloud IoU (0.935) is what bench/cloud_skill.py measures
    and bench/RESULTS.md records for three seeds; its margin (0.004-0.009) is within what
    another CPU's rounding can move a training run, so it is not asserted here: a test that
    could fail on a correct build would be a flaky one.
    """
    monkeypatch.setenv("CLIMDL_CACHE", str(tmp_path / "cache"))
    rc = main(train_argv(CONFIG, tmp_path, "--trainer.max_epochs", "10", *NO_LOGGERS, "--quiet"))
    assert rc == 0
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    cnn, base = summary["test"]["model"], summary["test"]["baseline"]
    assert len(summary["test"]["scenes"]) == 8
    assert cnn["miou"] > base["miou"], (cnn["miou"], base["miou"])
    for cls in summary["classes"]:  # every class (the threshold test has no thin cloud: IoU 0)
        assert cnn[f"iou_{cls}"] > base[f"iou_{cls}"], (cls, cnn[f"iou_{cls}"], base[f"iou_{cls}"])
    assert cnn["cloud_iou"] >= 0.9, (cnn["cloud_iou"], base["cloud_iou"])
