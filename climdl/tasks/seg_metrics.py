"""Segmentation scores from a confusion matrix: per class and for "any cloud" vs the rest.

The confusion matrix is a torchmetrics ``MulticlassConfusionMatrix`` with the no-data label
ignored, counted on the device without a host-device sync (:class:`DeviceConfusion`), both for
the trained network (:mod:`climdl.tasks.segmentation`) and for the threshold baseline, so that
the two are scored by the same formulas. Rows are the truth,
columns the prediction. A class absent from both truth and prediction scores NaN (None in
JSON) and is left out of the means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from climdl.clouds.scene import CLOUDY, NODATA


class DeviceConfusion(MulticlassConfusionMatrix):
    """A ``MulticlassConfusionMatrix`` whose update never waits for the device.

    torchmetrics' update drops the ignored pixels with a boolean mask and checks the labels
    with ``unique()``: both need the data on the host (four syncs per validation batch on a
    GPU). Here every pixel adds one to a fixed-size vector with ``scatter_add_``: the ignored
    ones to an extra last bin, which is dropped. Labels outside ``[0, K)`` other than the
    ignored one still fail (an index out of range), as torchmetrics' checks make them.
    Takes class indices (``argmax`` of the logits), not probabilities.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add the counts of ``preds`` against ``target`` (class indices, any same shape)."""
        k = self.num_classes
        p, t = preds.reshape(-1).long(), target.reshape(-1).long()
        ignored = t.eq(-1 if self.ignore_index is None else self.ignore_index)
        bins = torch.where(ignored, k * k, t * k + p)
        counts = torch.zeros(k * k + 1, dtype=self.confmat.dtype, device=self.confmat.device)
        counts.scatter_add_(0, bins, torch.ones_like(bins, dtype=counts.dtype))
        self.confmat += counts[:-1].view(k, k)


def new_confusion(num_classes: int) -> MulticlassConfusionMatrix:
    """A confusion matrix that ignores the no-data label (:class:`DeviceConfusion`)."""
    return DeviceConfusion(num_classes=num_classes, ignore_index=NODATA, validate_args=False)


def confusion(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``[K, K]`` counts (truth x prediction) of one prediction, no-data pixels ignored."""
    p = torch.as_tensor(np.asarray(pred) if isinstance(pred, np.ndarray) else pred).long()
    t = torch.as_tensor(np.asarray(target) if isinstance(target, np.ndarray) else target).long()
    p = torch.where(t == NODATA, torch.zeros_like(p), p.clamp(0, num_classes - 1))
    m = new_confusion(num_classes)
    m.update(p.reshape(1, -1), t.reshape(1, -1))
    out: torch.Tensor = m.compute()
    return out


def _safe(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def scores(conf: torch.Tensor | np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """IoU, F1, precision, recall (= per-class accuracy) per class; overall accuracy, mean IoU
    and F1 over the classes present; the same for any cloud (``cloud``/``thin_cloud``)."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    out: dict[str, float] = {}
    ious, f1s = [], []
    for k, name in enumerate(classes):
        iou = _safe(tp[k], tp[k] + fp[k] + fn[k])
        f1 = _safe(2 * tp[k], 2 * tp[k] + fp[k] + fn[k])
        out[f"iou_{name}"] = iou
        out[f"f1_{name}"] = f1
        out[f"precision_{name}"] = _safe(tp[k], tp[k] + fp[k])
        out[f"recall_{name}"] = _safe(tp[k], tp[k] + fn[k])
        out[f"accuracy_{name}"] = out[f"recall_{name}"]
        if not math.isnan(iou):
            ious.append(iou)
            f1s.append(f1)
    out["accuracy"] = _safe(tp.sum(), c.sum())
    out["miou"] = float(np.mean(ious)) if ious else math.nan
    out["mf1"] = float(np.mean(f1s)) if f1s else math.nan
    cloudy = np.array([name in CLOUDY for name in classes])
    if cloudy.any():
        btp = c[np.ix_(cloudy, cloudy)].sum()
        bfp = c[np.ix_(~cloudy, cloudy)].sum()
        bfn = c[np.ix_(cloudy, ~cloudy)].sum()
        out["cloud_iou"] = _safe(btp, btp + bfp + bfn)
        out["cloud_f1"] = _safe(2 * btp, 2 * btp + bfp + bfn)
        out["cloud_precision"] = _safe(btp, btp + bfp)
        out["cloud_recall"] = _safe(btp, btp + bfn)
    return out


def jsonable(values: dict[str, float]) -> dict[str, float | None]:
    """NaN -> None, so that ``json.dumps`` writes standard JSON."""
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in values.items()
    }
