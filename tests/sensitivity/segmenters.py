"""Tiny cloud segmenters for the sensitivity tests: a Landsat-band spec fitted to one scene's
image statistics, and a checkpoint written as ``climdl train`` writes it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from climdl.clouds.scene import CLASSES, LANDSAT_BANDS, NODATA
from climdl.clouds.spec import SegmenterSpec
from climdl.tasks.segmentation import SegmentationTask


def landsat_spec(image: np.ndarray) -> SegmenterSpec:
    """The spec of a segmenter of the Landsat bands, normalised by ``image``'s [band, y, x]
    own band means and spreads, with climdl's cloud classes."""
    return SegmenterSpec.from_dict(
        {
            "bands": [b.name for b in LANDSAT_BANDS],
            "wavelengths": [b.wavelength for b in LANDSAT_BANDS],
            "band_units": [b.units for b in LANDSAT_BANDS],
            "classes": list(CLASSES),
            "ignore_index": NODATA,
            "stats": {
                "mean": torch.tensor(np.nanmean(image, (1, 2))),
                "std": torch.tensor(np.nanstd(image, (1, 2))),
            },
            "class_counts": torch.ones(len(CLASSES)),
        }
    )


def save_segmenter(task: SegmentationTask, path: Path) -> Path:
    """``task`` saved as a checkpoint at ``path`` (weights and spec, as training saves them)."""
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=0,
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path
