"""How far a bounded, adversarial nudge of the inputs can move a trained model's answer.

``climdl sensitivity`` perturbs an emulator's predictors (or the cloud segmenter's bands) within
per-variable bounds given in physical units (:mod:`~climdl.sensitivity.bounds`), with FGSM, PGD
and random perturbations of the same size (:mod:`~climdl.sensitivity.attacks`), and maps which
inputs drive the answer (integrated gradients). :func:`run_emulator_sensitivity` streams sampled
days of a predictor series (:mod:`~climdl.sensitivity.emulator`), :func:`run_segmenter_sensitivity`
the tiles of a scene (:mod:`~climdl.sensitivity.segmenter`); both write a CF ``sensitivity.nc``
that :mod:`climdl.evaluation.sensitivity_report` turns into a report. The names are imported
lazily so that ``climdl --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from climdl.sensitivity.emulator import SensitivityResult, run_emulator_sensitivity
    from climdl.sensitivity.segmenter import (
        SegmenterSensitivityResult,
        run_segmenter_sensitivity,
    )

__all__ = [
    "SegmenterSensitivityResult",
    "SensitivityResult",
    "run_emulator_sensitivity",
    "run_segmenter_sensitivity",
]

_MODULES = {
    "SensitivityResult": "climdl.sensitivity.emulator",
    "run_emulator_sensitivity": "climdl.sensitivity.emulator",
    "SegmenterSensitivityResult": "climdl.sensitivity.segmenter",
    "run_segmenter_sensitivity": "climdl.sensitivity.segmenter",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'climdl.sensitivity' has no attribute {name!r}")
