"""Non-learned reference scores on the same validation days as the emulator.

tasmax: :class:`~climdl.models.tasmax_baseline.TasmaxBaseline` (interpolated T850 brought down to
the orography with a lapse rate, linearly mapped with coefficients kept in the emulator spec). pr: the
per-pixel training climatology (there is no coarse precipitation predictor to interpolate).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from climdl.data.spec import EmulatorSpec
from climdl.models.tasmax_baseline import TasmaxBaseline


def baseline_rmse(
    dm: Any, spec: EmulatorSpec, split: Literal["val", "test"] = "val", max_train_days: int = 2000
) -> dict[str, float]:
    """RMSE of the baselines on the data module's validation or test days, per target.

    ``spec``: the trained task's spec (it holds the fitted tasmax baseline, if any)."""
    targets = list(spec.targets)
    rng = np.random.default_rng(0)
    tr = np.sort(
        rng.choice(dm.train_idx, size=min(max_train_days, dm.train_idx.size), replace=False)
    )
    _, y_tr = dm.source.read(tr)
    if split == "val":
        x_ev, y_ev = dm.source.read(dm.val_idx)
    else:
        batches = list(dm.test_dataloader())
        x_ev = torch.cat([b["x"] for b in batches]).numpy()
        y_ev = torch.cat([b["y"] for b in batches]).numpy()
    out: dict[str, float] = {}
    for i, t in enumerate(targets):
        if t == "tasmax":
            if spec.tasmax_baseline is None:
                continue
            base = TasmaxBaseline(spec, spec.tasmax_baseline)
            with torch.no_grad():
                pred = base(torch.from_numpy(x_ev)).numpy()
        else:
            pred = np.broadcast_to(np.nanmean(y_tr[:, i], axis=0), y_ev[:, i].shape)
        err = pred - y_ev[:, i]
        out[t] = float(np.sqrt(np.nanmean(err**2)))
    return out
