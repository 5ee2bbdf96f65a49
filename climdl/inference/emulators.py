"""One or several trained emulators applied together to the same predictors.

Doury et al. train one emulator per variable; a CORDEX ML-Bench submission needs both ``tasmax``
and ``pr`` in one file. :class:`EmulatorSet` loads any number of checkpoints, checks that they
share the target grid, and runs each on the predictors it was trained with, so that
``climdl downscale --checkpoint tasmax.ckpt --checkpoint pr.ckpt`` writes one file. With
``block_rows`` the networks' fine part runs in strips of that many output rows
(:mod:`climdl.inference.strips`): the same values in less activation memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
from torch import Tensor

from climdl.data.spec import EmulatorSpec
from climdl.errors import ConfigError, DataError
from climdl.inference.members import BASELINE_REFUSAL, member_noise, target_stream
from climdl.inference.strips import StripPlan, plan_strips, predict_strips
from climdl.io.checksum import sha256_file
from climdl.tasks.downscaling import DownscalingTask

if TYPE_CHECKING:
    from climdl.tasks.generative import GenerativeDownscalingTask

Output = Literal["emulator", "baseline"]


@dataclass
class Emulator:
    """A loaded emulator with where it came from."""

    task: DownscalingTask | GenerativeDownscalingTask
    path: Path
    sha256: str
    experiment: str | None

    @property
    def spec(self) -> EmulatorSpec:
        """The emulator's spec, read from its checkpoint."""
        assert self.task.spec is not None
        return self.task.spec

    @property
    def targets(self) -> list[str]:
        """Names of the variables the emulator predicts."""
        return list(self.spec.targets)

    @property
    def generative(self) -> bool:
        """Whether the emulator samples members (a stage-2 generative checkpoint)."""
        return bool(self.task.generative)

    @property
    def network_label(self) -> str:
        """The network's name for provenance (``unet``, ``unet + flow-matching residual``)."""
        return self.task.network_label

    @property
    def variables(self) -> list[str]:
        """Names of the predictors the emulator needs, in channel order."""
        return list(self.spec.variables)


class EmulatorSet:
    """Emulators that together predict the requested targets on one target grid.

    Args:
        checkpoints: checkpoint files (each from ``climdl train``).
        output: ``emulator`` (the networks) or ``baseline`` (the fitted interpolation +
            lapse-rate baseline stored in the checkpoints, for comparison; tasmax only).
        device: torch device the networks run on.
        block_rows: run each network's fine part in strips of this many output rows
            (:func:`~climdl.inference.strips.plan_strips`), same values, activation memory
            of one strip; None: the whole grid at once. Doury UNet emulators only.
        channels_last: NHWC network weights (:func:`climdl.tasks.speed.use_channels_last`
            says where they help): the convolutions and their outputs then run in NHWC, with
            the same values to rounding.
    """

    def __init__(
        self,
        checkpoints: Sequence[str | Path],
        output: Output = "emulator",
        device: torch.device | str = "cpu",
        block_rows: int | None = None,
        channels_last: bool = False,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from climdl.tasks.checkpoint import load_emulator, read_checkpoint
        from climdl.tasks.speed import to_channels_last

        if not checkpoints:
            raise ConfigError("give at least one --checkpoint.")
        if block_rows is not None and output == "baseline":
            raise ConfigError(
                "--block-rows applies to the emulator networks; the fitted baseline "
                "(--baseline) runs on the whole grid, so leave it out."
            )
        self.device = torch.device(device)
        self.output = output
        self.members: list[Emulator] = []
        # the provenance hashes run beside the loading: hashlib works without the GIL
        hasher = ThreadPoolExecutor(max_workers=1)
        try:
            hashes = [hasher.submit(sha256_file, Path(p)) for p in checkpoints]
            for p, digest in zip(checkpoints, hashes, strict=True):
                path = Path(p)
                ckpt = read_checkpoint(path)
                experiment = (ckpt.get("datamodule_hyper_parameters") or {}).get("experiment")
                task = load_emulator(path, ckpt=ckpt).to(self.device)  # refuses a segmenter
                if channels_last:
                    to_channels_last(task)
                self.members.append(Emulator(task, path, digest.result(), experiment))
        finally:  # a refused checkpoint does not wait for the others' hashes
            hasher.shutdown(wait=True, cancel_futures=True)
        seen: dict[str, Path] = {}
        for m in self.members:
            for t in m.targets:
                if t in seen:
                    raise ConfigError(
                        f"both {seen[t]} and {m.path} predict {t}; give one checkpoint per target."
                    )
                seen[t] = m.path
        first = self.members[0]
        for m in self.members[1:]:
            if m.generative != first.generative:
                gen, det = (m, first) if m.generative else (first, m)
                raise ConfigError(
                    f"{gen.path} is generative but {det.path} is deterministic; an ensemble "
                    "needs generative checkpoints for every target: downscale them separately."
                )
        for m in self.members[1:]:
            if not first.spec.target_grid.same_as(m.spec.target_grid):
                raise ConfigError(
                    f"{m.path} predicts on another target grid than {first.path}; "
                    "downscale them separately."
                )
            if not first.spec.coarse_grid.same_as(m.spec.coarse_grid):
                raise ConfigError(
                    f"{m.path} was trained on another coarse grid than {first.path}; "
                    "downscale them separately."
                )
        self._baselines: list[torch.nn.Module] = []
        if output == "baseline":
            from climdl.models.tasmax_baseline import TasmaxBaseline

            if self.generative:
                raise ConfigError(BASELINE_REFUSAL)

            for m in self.members:
                if m.spec.tasmax_baseline is None or m.targets != ["tasmax"]:
                    raise ConfigError(
                        f"{m.path} holds no fitted tasmax baseline (it needs a tasmax "
                        "emulator trained with t_850, z_850 and orography)."
                    )
                self._baselines.append(
                    TasmaxBaseline(m.spec, m.spec.tasmax_baseline).to(self.device)
                )
        self.strips: list[StripPlan | None] = [None] * len(self.members)
        if block_rows is not None:
            self.strips = self._plan_strips(block_rows)

    def _plan_strips(self, block_rows: int) -> list[StripPlan | None]:
        """Each network's strips (checked before any work: one clear sentence each)."""
        if self.generative:
            raise ConfigError(
                "--block-rows works with deterministic Doury UNet emulators; generative "
                "checkpoints sample on the whole grid, so leave it out."
            )
        plans: list[StripPlan | None] = []
        for m in self.members:
            assert m.task.net is not None  # loaded from a checkpoint
            plans.append(plan_strips(m.task.net, block_rows, m.path.name))
        return plans

    @property
    def generative(self) -> bool:
        """Whether the emulators sample ensemble members (all of them are, or none)."""
        return self.members[0].generative

    def default_members(self) -> int | None:
        """Members the first generative emulator was configured with (``hp.members``)."""
        return int(self.members[0].task.hp.members) if self.generative else None

    def sampler_steps(self, steps: int | None = None) -> list[int]:
        """ODE steps each emulator samples with (``steps``, or each one's ``hp.sampler_steps``)."""
        return [int(steps or m.task.hp.sampler_steps) for m in self.members]

    @property
    def spec(self) -> EmulatorSpec:
        """The first emulator's spec (grids are shared by all)."""
        return self.members[0].spec

    @property
    def targets(self) -> list[str]:
        """Every member's targets, in member order."""
        return [t for m in self.members for t in m.targets]

    @property
    def variables(self) -> list[str]:
        """Every predictor any member needs, in first-seen order."""
        return list(dict.fromkeys(v for m in self.members for v in m.variables))

    @property
    def aux_names(self) -> list[str]:
        """Names of the 1-D inputs any member needs (day of year, forcing), first seen first."""
        names = list(dict.fromkeys(n for m in self.members for n in m.spec.aux_names))
        return names

    def forcing_table(self) -> dict[str, list[float]] | None:
        """The yearly forcing series stored with the first member that has one, or None."""
        for m in self.members:
            if m.spec.forcing_table is not None:
                return dict(m.spec.forcing_table)
        return None

    def check_units(self, units: dict[str, str]) -> None:
        """The inputs' canonical units must be those the emulators were trained on."""
        for m in self.members:
            for v in m.variables:
                want = str(m.spec.units.get(v, ""))
                if want and units.get(v) and units[v] != want:
                    raise DataError(
                        f"{v} is in {units[v]} but {m.path.name} was trained on {want}."
                    )

    @torch.inference_mode()
    def predict(
        self, x: Tensor, aux: dict[str, Tensor], autocast: torch.dtype | None = None
    ) -> Tensor:
        """Predictions [B, V, H, W] in physical units (float32) for predictors ``x``
        [B, C, h, w] ordered as :attr:`variables` and 1-D inputs by name ([B] each)."""
        outs = []
        order = self.variables
        for k, m in enumerate(self.members):
            idx = [order.index(v) for v in m.variables]
            xb = x[:, idx] if idx != list(range(len(order))) else x
            if self._baselines:
                outs.append(self._baselines[k](xb.float())[:, None])
                continue
            ab = torch.stack([aux[n] for n in m.spec.aux_names], dim=1)
            batch = m.task.on_after_batch_transfer({"x": xb, "aux": ab}, 0)
            plan = self.strips[k]
            with torch.autocast(xb.device.type, dtype=autocast, enabled=autocast is not None):
                if plan is None:
                    outs.append(m.task.predict_physical(batch).float())
                else:
                    outs.append(predict_strips(m.task, batch, plan).float())
        return torch.cat(outs, dim=1)

    @torch.inference_mode()
    def predict_members(
        self,
        x: Tensor,
        aux: dict[str, Tensor],
        *,
        noise: Sequence[Tensor] | None = None,
        keys: Sequence[int] | None = None,
        seed: int = 0,
        members: Sequence[int] | int = 1,
        steps: int | None = None,
        autocast: torch.dtype | None = None,
    ) -> Tensor:
        """Ensemble members [B, M, V, H, W] in physical units (float32) of generative emulators.

        Args:
            x: predictors [B, C, h, w] ordered as :attr:`variables`.
            aux: 1-D inputs by name ([B] each).
            noise: one standard-normal tensor [B, M, V_k, H, W] per emulator; None: drawn for
                the days ``keys`` and the ``members`` with ``seed``
                (:func:`climdl.inference.members.member_noise`).
            keys: :func:`~climdl.inference.members.day_key` of each of the B days.
            seed: the run's seed.
            members: the member indices wanted (an int N: members 0..N-1).
            steps: ODE steps (None: each emulator's own setting).
            autocast: autocast dtype (None: float32).

        Returns:
            The members, targets in :attr:`targets` order.
        """
        if not self.generative:
            raise ConfigError("ensemble members need generative checkpoints.")
        wanted = list(range(members)) if isinstance(members, int) else list(members)
        outs = []
        order = self.variables
        for k, m in enumerate(self.members):
            if noise is not None:
                z = noise[k]
            else:
                if keys is None or len(keys) != x.shape[0]:
                    raise ValueError("predict_members needs noise or one day key per sample")
                stream = target_stream(m.targets)  # not k: the -c order must not matter
                z = member_noise(seed, stream, keys, wanted, (len(m.targets), *m.spec.out_size))
            idx = [order.index(v) for v in m.variables]
            xb = x[:, idx] if idx != list(range(len(order))) else x
            ab = torch.stack([aux[n] for n in m.spec.aux_names], dim=1)
            batch = m.task.on_after_batch_transfer({"x": xb, "aux": ab}, 0)
            task = cast("GenerativeDownscalingTask", m.task)
            with torch.autocast(xb.device.type, dtype=autocast, enabled=autocast is not None):
                sample = task.sample_physical(batch, z.to(xb.device), steps)
            outs.append(sample.float())
        return torch.cat(outs, dim=2)

    def describe(self) -> list[dict[str, str]]:
        """Provenance of each member (file, SHA-256, targets, network, experiment)."""
        return [
            {
                "checkpoint": str(m.path.resolve()),
                "sha256": m.sha256,
                "targets": " ".join(m.targets),
                "network": m.network_label,
                "experiment": str(m.experiment or "unknown"),
            }
            for m in self.members
        ]


def as_numpy(t: Tensor) -> np.ndarray:
    """A CPU float32 copy of a prediction batch."""
    return t.detach().to("cpu", torch.float32).numpy()
