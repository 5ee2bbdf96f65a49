"""Scoring the threshold baseline on labelled scenes, and the model-vs-baseline summary table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from climdl.clouds.training_scenes import SceneSource
from climdl.models.threshold import threshold_labels
from climdl.tasks.seg_metrics import confusion


def baseline_confusion(sources: Sequence[SceneSource]) -> torch.Tensor:
    """Summed ``[K, K]`` confusion of the Fmask-like threshold test over whole scenes."""
    classes = sources[0].classes
    total = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for src in sources:
        x, y = src.read()
        pred = threshold_labels(x, src.bands, classes, src.attrs)
        total += confusion(pred, y, len(classes)).long()
    return total


def comparison_rows(
    model: Mapping[str, float | None], baseline: Mapping[str, float | None], classes: Sequence[str]
) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(what, model IoU, baseline IoU, model F1, baseline F1)`` for a table."""

    def f(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    rows = [
        (
            c,
            f(model.get(f"iou_{c}")),
            f(baseline.get(f"iou_{c}")),
            f(model.get(f"f1_{c}")),
            f(baseline.get(f"f1_{c}")),
        )
        for c in classes
    ]
    rows.append(
        (
            "any cloud",
            f(model.get("cloud_iou")),
            f(baseline.get("cloud_iou")),
            f(model.get("cloud_f1")),
            f(baseline.get("cloud_f1")),
        )
    )
    rows.append(
        (
            "mean",
            f(model.get("miou")),
            f(baseline.get("miou")),
            f(model.get("mf1")),
            f(baseline.get("mf1")),
        )
    )
    return rows
