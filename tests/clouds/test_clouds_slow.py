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
    """Train the sample config for 6 short epochs (a few CPU minutes) on 96 sample scenes and
    score the best checkpoint on 8 scenes of another seed: the CNN has the higher mean IoU and
    the higher IoU on every class (bench/RESULTS.md, 2026-12-07: true for seeds 123, 1 and 2 with
    margins of at least 0.1 IoU).

    The threshold test, which thresholds the thermal band against the scene's own clear-sky
    percentiles, can still be ahead on "any cloud" after so short a training, though barely now
    that the network reads the scene's thermal context too (bench/RESULTS.md, 2026-12-07,
    issue 18: 0.932-0.934 vs 0.935 for seeds 123, 1, 2; ahead at the config's 10 epochs), so
    that is not asserted; see summary["test"] for both.
    """
    monkeypatch.setenv("CLIMDL_CACHE", str(tmp_path / "cache"))
    rc = main(train_argv(CONFIG, tmp_path, "--trainer.max_epochs", "6", *NO_LOGGERS, "--quiet"))
    assert rc == 0
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    cnn, base = summary["test"]["model"], summary["test"]["baseline"]
    assert len(summary["test"]["scenes"]) == 8
    assert cnn["miou"] > base["miou"], (cnn["miou"], base["miou"])
    for cls in summary["classes"]:  # every class (the threshold test has no thin cloud: IoU 0)
        assert cnn[f"iou_{cls}"] > base[f"iou_{cls}"], (cls, cnn[f"iou_{cls}"], base[f"iou_{cls}"])
