"""What the cloud DataModule's loaders serve: random crops, whole scenes, padded batches.

:class:`CropDataset` draws training crops (scenes in proportion to their area, positions from a
generator seeded by the item's index, so runs repeat); :class:`SceneDataset` gives whole
validation and test scenes; :class:`PadCollate` pads the items of a batch to one size, a multiple
of the network's ``2**depth``, with no data (NaN, :data:`~climdl.clouds.scene.NODATA`). Every item
also carries ``ctx``, its whole scene's thermal context (:mod:`climdl.clouds.context`, computed
once per scene before any crop: a crop sees the scene's percentiles, not its own). Kept apart
from the DataModule's setup and statistics (:mod:`climdl.clouds.data`); training data only,
which the jobs never import (pyproject.toml's contract).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler, Sampler

from climdl.clouds.scene import NODATA
from climdl.clouds.training_scenes import SceneSource

_VIRTUAL = 2**31 - 1  # crops are indexed by a seed, drawn by a CropSampler


class CropSampler(Sampler[int]):
    """``n`` crop seeds per epoch, drawn with replacement from the torch generator as
    ``RandomSampler(replacement=True)`` draws them.

    Not a ``RandomSampler`` itself: Lightning replaces a ``RandomSampler`` under a distributed
    strategy with a ``DistributedSampler`` over the whole dataset - 2**31 virtual crops, whose
    permutation never ends - while any other sampler is sharded among the data-parallel ranks
    (``DistributedSamplerWrapper``: each rank gets ``n / ranks`` of these seeds).
    """

    def __init__(self, dataset: Dataset[dict[str, torch.Tensor]], n: int) -> None:
        self.draws = RandomSampler(dataset, replacement=True, num_samples=n)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draws)

    def __len__(self) -> int:
        return len(self.draws)


class CropDataset(Dataset[dict[str, torch.Tensor]]):
    """Random ``crop x crop`` windows of the scenes; item ``i`` is the crop seeded by ``i``."""

    def __init__(self, sources: Sequence[SceneSource], crop: int, seed: int) -> None:
        self.sources = list(sources)
        self.crop = crop
        self.seed = seed
        area = np.array([s.shape[0] * s.shape[1] for s in self.sources], dtype=np.float64)
        self.p = area / area.sum()

    def __len__(self) -> int:
        return _VIRTUAL

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        src = self.sources[int(rng.choice(len(self.sources), p=self.p))]
        h, w = src.shape
        y0 = int(rng.integers(0, max(h - self.crop, 0) + 1))
        x0 = int(rng.integers(0, max(w - self.crop, 0) + 1))
        x, y = src.read((slice(y0, y0 + self.crop), slice(x0, x0 + self.crop)))
        return {**_pad_item(x, y, self.crop, self.crop), "ctx": _ctx(src)}


class SceneDataset(Dataset[dict[str, torch.Tensor]]):
    """Whole scenes (validation, test)."""

    def __init__(self, sources: Sequence[SceneSource]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        src = self.sources[i]
        x, y = src.read()
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "y": torch.from_numpy(y.astype(np.int64)),
            "ctx": _ctx(src),
        }


def _ctx(src: SceneSource) -> torch.Tensor:
    """The scene's thermal context ``[P]`` float32 (empty without a thermal band)."""
    return torch.from_numpy(np.array(src.context(), dtype=np.float32))


def _pad_item(x: np.ndarray, y: np.ndarray, h: int, w: int) -> dict[str, torch.Tensor]:
    """Pad to ``h x w`` with no data (NaN, ``NODATA``)."""
    xt = torch.full((x.shape[0], h, w), float("nan"), dtype=torch.float32)
    yt = torch.full((h, w), NODATA, dtype=torch.int64)
    xt[:, : x.shape[1], : x.shape[2]] = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt[: y.shape[0], : y.shape[1]] = torch.from_numpy(y.astype(np.int64))
    return {"x": xt, "y": yt}


class PadCollate:
    """Stack items padded to the batch's largest size rounded up to ``multiple``."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad every item's image and mask to one batch size and stack them."""
        m = self.multiple
        h = max(int(it["x"].shape[1]) for it in items)
        w = max(int(it["x"].shape[2]) for it in items)
        h, w = -(-h // m) * m, -(-w // m) * m
        padded = [_pad_item(it["x"].numpy(), it["y"].numpy(), h, w) for it in items]
        out = {k: torch.stack([p[k] for p in padded]) for k in ("x", "y")}
        if all("ctx" in it for it in items):
            out["ctx"] = torch.stack([it["ctx"] for it in items])
        return out
