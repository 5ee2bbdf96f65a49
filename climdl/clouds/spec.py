"""The segmenter spec: what a trained cloud segmenter needs besides its weights, versioned.

:class:`~climdl.clouds.data.CloudDataModule` computes it from the training scenes (bands and
their wavelengths and units, classes, per-band statistics, class frequencies); the
segmentation task builds its network from it and stores :meth:`SegmenterSpec.to_dict` in every
checkpoint (plain types and tensors, for ``torch.load(weights_only=True)``).
:meth:`SegmenterSpec.from_dict` reads any known layout, upgrading older ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from climdl.clouds.scene import NODATA
from climdl.data.spec import Step, migrate_layout
from climdl.data.spec_checks import exact_keys, malformed, names, numbers, strings, vector
from climdl.errors import DataError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SegmenterSpec"]

SCHEMA_VERSION = 1
"""Layout version written by :meth:`SegmenterSpec.to_dict` (0: climdl 0.1, no version key)."""


def _upgrade_0_to_1(d: dict[str, Any]) -> dict[str, Any]:
    """climdl 0.1 wrote the same keys; hand-made specs could leave out the optional ones."""
    d.setdefault("ignore_index", NODATA)
    d.setdefault("class_counts", None)
    d.setdefault("train_scenes", [])
    d.setdefault("val_scenes", [])
    return d


MIGRATIONS: tuple[Step, ...] = (_upgrade_0_to_1,)
"""``MIGRATIONS[v]`` upgrades a version-``v`` segmenter layout to ``v + 1``."""


@dataclass(frozen=True, eq=False)
class SegmenterSpec:
    """Bands, classes and training statistics of a cloud segmenter.

    Attributes:
        bands: band names, in channel order.
        wavelengths: central wavelength of each band (micrometres).
        band_units: units of each band.
        classes: class names, in label order.
        mean: per-band training mean ``[C]``.
        std: per-band training standard deviation ``[C]``.
        class_counts: labelled training pixels per class ``[K]``, or None (unknown).
        ignore_index: the label of unlabelled pixels.
        train_scenes: names of the training scenes.
        val_scenes: names of the validation scenes.
    """

    bands: tuple[str, ...]
    wavelengths: tuple[float, ...]
    band_units: tuple[str, ...]
    classes: tuple[str, ...]
    mean: Tensor
    std: Tensor
    class_counts: Tensor | None = None
    ignore_index: int = NODATA
    train_scenes: tuple[str, ...] = ()
    val_scenes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise sequences to tuples (the dataclass is frozen)
        for name in ("bands", "classes"):
            set_(self, name, names(getattr(self, name), f"segmenter {name}"))
        n_b, n_k = len(self.bands), len(self.classes)
        set_(self, "wavelengths", numbers(self.wavelengths, "segmenter wavelengths"))
        for name in ("band_units", "train_scenes", "val_scenes"):
            set_(self, name, strings(getattr(self, name), f"segmenter {name}"))
        if type(self.ignore_index) is not int:  # a bool or a float is no label
            raise DataError(f"the segmenter spec's ignore_index {self.ignore_index!r} is no label.")
        for what, values in (("wavelengths", self.wavelengths), ("band_units", self.band_units)):
            if len(values) != n_b:
                raise DataError(f"the segmenter spec has {len(values)} {what} for {n_b} bands.")
        vector(self.mean, n_b, "band mean")
        vector(self.std, n_b, "band std")
        if self.class_counts is not None:
            try:
                counts = torch.as_tensor(self.class_counts, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise DataError("the segmenter spec's class counts are not numbers.") from None
            if tuple(counts.shape) != (n_k,):
                raise DataError(f"the segmenter spec's class counts should have {n_k} values.")
            set_(self, "class_counts", counts)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint layout (plain types and tensors), with ``schema_version``.

        Returns:
            Plain types and tensors (loads with ``torch.load(weights_only=True)``).
        """
        return {
            "schema_version": SCHEMA_VERSION,
            "bands": list(self.bands),
            "wavelengths": list(self.wavelengths),
            "band_units": list(self.band_units),
            "classes": list(self.classes),
            "ignore_index": int(self.ignore_index),
            "stats": {"mean": self.mean, "std": self.std},
            "class_counts": self.class_counts,
            "train_scenes": list(self.train_scenes),
            "val_scenes": list(self.val_scenes),
        }

    @classmethod
    def from_dict(cls, layout: Mapping[str, Any]) -> SegmenterSpec:
        """A spec from a stored layout of any known version (see :data:`MIGRATIONS`).

        Args:
            layout: what :meth:`to_dict` wrote (this or an older climdl).

        Returns:
            The spec, validated.

        Raises:
            DataError: a malformed layout, or one newer than this climdl reads.
        """
        d = migrate_layout(layout, MIGRATIONS, SCHEMA_VERSION, "segmenter")
        exact_keys(d, _KEYS, "segmenter spec")
        exact_keys(d["stats"], ("mean", "std"), "segmenter spec's statistics")
        try:
            return cls(
                bands=d["bands"],
                wavelengths=d["wavelengths"],
                band_units=d["band_units"],
                classes=d["classes"],
                mean=d["stats"]["mean"],
                std=d["stats"]["std"],
                class_counts=d["class_counts"],
                ignore_index=d["ignore_index"],
                train_scenes=d["train_scenes"],
                val_scenes=d["val_scenes"],
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise malformed("segmenter", exc) from exc


_KEYS = (
    "schema_version",
    *(k for k in SegmenterSpec.__dataclass_fields__ if k not in ("mean", "std")),
    "stats",
)
"""The keys of a current-version segmenter layout (:meth:`SegmenterSpec.to_dict`)."""
