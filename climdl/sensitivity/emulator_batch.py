"""One batch of days of an emulator sensitivity run: the attacks, their measures, the maps.

For one target ``T`` of one emulator, :class:`TargetSensitivity` perturbs the predictors of a
batch of days inside their bounds (physical units, :mod:`climdl.sensitivity.bounds`):

- ``fgsm`` and ``pgd``: the adversary on the domain mean of ``T`` (both signs tried, the one with
  the larger change kept, its signed change reported);
- ``pgd_rms``: the adversary on the pattern, the RMS change from the unperturbed prediction
  (started at a random corner: the gradient of that objective is zero at no perturbation);
- ``random`` / ``random_max``: random corners of the same box, the mean size over the draws and
  the draw with the largest change;

and measures the change of the domain mean, the largest change at a grid point, the RMS change
and, for ``pr``, the change of the wet fraction (``pr >= 1 mm/day``). Integrated gradients of the
domain mean (from the training mean of each predictor; for a ``daily_map`` model from the day's
spatial mean with the day's moments held, :func:`saliency_forward`) and the first-order change
``|d mean / dx| * radius`` give per-predictor maps on the coarse grid.

The model runs with gradients in eval mode (``on_after_batch_transfer`` then
``predict_physical``, as downscale computes it): the normalisation is part of the differentiated
function, so a bound of 0.5 K is 0.5 K. Random draws come from a generator per day and target
(:func:`day_seed`), drawn on the CPU, so the numbers depend neither on the batch size nor on the
device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from climdl.data.units import conversion
from climdl.errors import DataError
from climdl.inference.emulators import Emulator
from climdl.preprocess.normalise import DAILY_MAP_EPS, daily_spatial_moments
from climdl.sensitivity.attacks import Box, gradient, integrated_gradients, pgd, random_corner

__all__ = [
    "WET_DAY_MM",
    "Forward",
    "Reference",
    "TargetSensitivity",
    "day_seed",
    "member_forward",
    "saliency_baseline",
    "saliency_forward",
    "target_forward",
    "wet_threshold",
]

#: A differentiable prediction: predictors [B, C, h, w] -> outputs.
Forward = Callable[[Tensor], Tensor]

WET_DAY_MM = 1.0
"""Wet-day threshold of the pr wet fraction, in mm/day (the ETCCDI convention)."""


def day_seed(seed: int, day: int, target: int) -> int:
    """The seed of one day's random draws for one target (independent of the batching)."""
    return int(np.random.SeedSequence([seed, day, target]).generate_state(1, np.uint64)[0] >> 1)


def member_forward(member: Emulator, order: Sequence[str], aux: dict[str, Tensor]) -> Forward:
    """A member's differentiable prediction, as downscale computes it (in physical units).

    Args:
        member: the emulator (in eval mode).
        order: the names of the run's predictors (the channels of ``x``).
        aux: the batch's 1-D inputs by name ([B] each).

    Returns:
        The function ``x`` [B, C, h, w] -> predictions [B, V, H, W].
    """
    idx = [list(order).index(v) for v in member.variables]
    task = member.task
    ab = torch.stack([aux[n] for n in member.spec.aux_names], dim=1)

    def forward(x: Tensor) -> Tensor:
        batch = task.on_after_batch_transfer({"x": x[:, idx], "aux": ab}, 0)
        return task.predict_physical(batch).float()

    return forward


def saliency_forward(
    member: Emulator, order: Sequence[str], aux: dict[str, Tensor], x: Tensor
) -> Forward:
    """The member's forward for integrated gradients around the days ``x``.

    A ``channel`` model's is :func:`member_forward`. A ``daily_map`` model standardises each map
    by its own spatial mean and std and takes those moments as 1-D inputs: on the straight path
    from the flat daily-mean map to ``x``, the standardised pattern ``a (x - m) / (a s + eps)``
    already equals its final value for ``a`` of about ``eps / s``, so plain integrated gradients
    would never see the network's response to the pattern and would not add up to the change
    of the output. Here the day's moments are frozen at ``x`` (the map is standardised by them and
    they stay the 1-D inputs), so the path scales the anomaly pattern from 0 to the day's: the
    attributions say which predictor anomalies, where, make the prediction, given the day's
    spatial means and spreads. At ``x`` itself the output is the model's prediction.

    Args:
        member: the emulator (in eval mode).
        order: the names of the run's predictors (the channels of ``x``).
        aux: the batch's 1-D inputs by name ([B] each).
        x: the days' predictors [B, C, h, w] in ``order`` (physical units).

    Returns:
        The function ``u`` [B, C, h, w] -> predictions [B, V, H, W].
    """
    task = member.task
    if task.hp.input_norm != "daily_map":
        return member_forward(member, order, aux)
    idx = [list(order).index(v) for v in member.variables]
    ab = torch.stack([aux[n] for n in member.spec.aux_names], dim=1)
    with torch.no_grad():
        aux_n = task.on_after_batch_transfer({"x": x[:, idx], "aux": ab}, 0)["aux_n"]
        mean, std = daily_spatial_moments(x[:, idx])
    m, s = mean[..., None, None], std[..., None, None] + DAILY_MAP_EPS

    def forward(u: Tensor) -> Tensor:
        xu = u[:, idx]
        batch = {"x": xu, "aux": ab, "x_n": torch.nan_to_num((xu - m) / s), "aux_n": aux_n}
        return task.predict_physical(batch).float()

    return forward


def target_forward(forward: Forward, i: int) -> Forward:
    """One target's predictions [B, H, W] from a member's forward.

    Args:
        forward: the member's forward (:func:`member_forward`).
        i: the target's index among the member's targets.

    Returns:
        The function ``x`` [B, C, h, w] -> predictions [B, H, W].
    """
    return lambda x: forward(x)[:, i]


def saliency_baseline(member: Emulator, x: Tensor, order: Sequence[str]) -> Tensor:
    """The integrated gradients' reference input: what the network sees as "no anomaly".

    ``daily_map`` models standardise each map by its own spatial moments, so the reference is
    the day's spatial mean of each predictor; ``channel`` models, the training mean. Predictors
    the member does not use keep their value (zero attribution).

    Args:
        member: the emulator.
        x: the predictors [B, C, h, w] in ``order``.
        order: the run's predictor names.

    Returns:
        The baseline, shape of ``x``.
    """
    base = x.clone()
    idx = [list(order).index(v) for v in member.variables]
    if member.task.hp.input_norm == "daily_map":
        base[:, idx] = x[:, idx].mean(dim=(-2, -1), keepdim=True).expand_as(x[:, idx])
    else:
        mean = member.spec.stats.x_mean.to(x)
        base[:, idx] = mean.view(1, -1, 1, 1).expand_as(x[:, idx])
    return base


@dataclass
class Reference:
    """The unperturbed prediction of a batch and the objectives built on it.

    Attributes:
        forward: predictions of the target [B, H, W] from predictors [B, C, h, w].
        y0: the unperturbed prediction [B, H, W] (detached).
        valid: grid points with a finite unperturbed prediction [B, H, W].
        count: valid points per day [B].
    """

    forward: Forward
    y0: Tensor
    valid: Tensor
    count: Tensor

    @classmethod
    def of(cls, forward: Forward, x: Tensor) -> Reference:
        """The reference of predictors ``x`` [B, C, h, w]."""
        with torch.no_grad():
            y0 = forward(x).detach()
        valid = torch.isfinite(y0)
        return cls(forward, y0, valid, valid.sum(dim=(-2, -1)).clamp_min(1).to(y0.dtype))

    def domain_mean(self, y: Tensor) -> Tensor:
        """The mean over the valid grid points of each day's map [B]."""
        return torch.where(self.valid, y, torch.zeros_like(y)).sum(dim=(-2, -1)) / self.count

    def up(self, x: Tensor) -> Tensor:
        """Objective: the domain mean of the target."""
        return self.domain_mean(self.forward(x))

    def down(self, x: Tensor) -> Tensor:
        """Objective: minus the domain mean of the target."""
        return -self.domain_mean(self.forward(x))

    def pattern(self, x: Tensor) -> Tensor:
        """Objective: the mean square change (the same ascent and ranking as the RMS change)."""
        return self.domain_mean((self.forward(x) - self.y0) ** 2)


class TargetSensitivity:
    """The attacks, measures and maps of one target on one batch of days.

    Args:
        forward: predictions of this target [B, H, W] (physical units) from predictors
            [B, C, h, w] (physical units), differentiable.
        pgd_steps: PGD ascent steps.
        random_draws: random corners per day.
        ig_steps: integrated-gradient quadrature points.
        wet_threshold: the wet-day threshold in the target's units (pr), or None.
    """

    def __init__(
        self,
        forward: Forward,
        *,
        pgd_steps: int,
        random_draws: int,
        ig_steps: int,
        wet_threshold: float | None = None,
    ) -> None:
        self.forward = forward
        self.pgd_steps = pgd_steps
        self.random_draws = random_draws
        self.ig_steps = ig_steps
        self.wet_threshold = wet_threshold

    def perturbations(
        self, ref: Reference, x: Tensor, box: Box, generators: Sequence[torch.Generator]
    ) -> tuple[Tensor, dict[str, list[Tensor]]]:
        """Every perturbation of the batch, by attack.

        Args:
            ref: the unperturbed prediction (:meth:`Reference.of`).
            x: predictors [B, C, h, w] (physical units).
            box: the allowed perturbations.
            generators: one CPU generator per day (the random corners).

        Returns:
            The gradient of the domain mean at ``x``, and the perturbations: ``fgsm`` and
            ``pgd`` (each for the + and - sign), ``pgd_rms`` (one), ``random`` (the draws).
        """
        _, grad = gradient(ref.up, x)
        step = box.project(box.radius * torch.sign(grad))  # attacks.fgsm, its gradient reused
        corners = [self._corner(x, box, generators) for _ in range(1 + self.random_draws)]
        return grad, {
            "fgsm": [step, -step],
            "pgd": [
                pgd(ref.up, x, box, self.pgd_steps, start=step),
                pgd(ref.down, x, box, self.pgd_steps, start=-step),
            ],
            "pgd_rms": [pgd(ref.pattern, x, box, self.pgd_steps, start=corners[0])],
            "random": corners[1:],
        }

    def measures(self, ref: Reference, x: Tensor, delta: Tensor) -> Tensor:
        """The change of the prediction under ``delta``: [B, measure] (:data:`MEASURES`)."""
        with torch.no_grad():
            y = self.forward(x + delta)
        d = torch.where(ref.valid, y - ref.y0, torch.zeros_like(y))
        out = [
            d.sum(dim=(-2, -1)) / ref.count,
            d.abs().amax(dim=(-2, -1)),
            torch.sqrt((d**2).sum(dim=(-2, -1)) / ref.count),
        ]
        if self.wet_threshold is not None:
            wet = (ref.valid & (y >= self.wet_threshold)).sum(dim=(-2, -1))
            wet0 = (ref.valid & (ref.y0 >= self.wet_threshold)).sum(dim=(-2, -1))
            out.append((wet - wet0).to(y.dtype) / ref.count)
        return torch.stack(out, dim=1)

    def run(
        self,
        x: Tensor,
        box: Box,
        baseline: Tensor,
        generators: Sequence[torch.Generator],
        saliency: Forward | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Attack one batch.

        For ``fgsm`` and ``pgd`` the sign whose mean change is larger in size is kept, with all
        its measures; ``random`` is the mean over the draws of each measure's size (a signed
        mean would average random signs away), ``random_max`` the draw whose measure is largest
        in size, signed.

        Args:
            x: predictors [B, C, h, w] (physical units).
            box: the allowed perturbations (radius shaped as ``x``).
            baseline: the integrated gradients' reference input, shaped as ``x``.
            generators: one CPU generator per day (the random corners).
            saliency: the target's forward for the integrated gradients
                (:func:`saliency_forward`); default the attacked forward.

        Returns:
            ``(measures [B, attack, measure], saliency [B, C, h, w], bound_sensitivity
            [B, C, h, w])``, the attacks in :data:`ATTACKS` order.
        """
        ref = Reference.of(self.forward, x)
        grad, deltas = self.perturbations(ref, x, box, generators)
        if not all(bool(torch.isfinite(d).all()) for v in deltas.values() for d in v):
            raise DataError(
                "the model's gradient with respect to its predictors is not finite on these "
                "days, so no perturbation can be computed; check the inputs and the checkpoint."
            )
        m = {k: [self.measures(ref, x, d) for d in v] for k, v in deltas.items()}

        def larger(a: Tensor, b: Tensor) -> Tensor:
            return torch.where(a[:, :1].abs() >= b[:, :1].abs(), a, b)

        draws = torch.stack(m["random"])  # [R, B, M]
        worst = draws.abs().argmax(dim=0, keepdim=True)
        table = torch.stack(
            [
                larger(*m["fgsm"]),
                larger(*m["pgd"]),
                m["pgd_rms"][0],
                draws.abs().mean(dim=0),
                draws.gather(0, worst)[0],
            ],
            dim=1,
        )
        along = ref.forward if saliency is None else saliency
        attributions = integrated_gradients(
            lambda u: ref.domain_mean(along(u)), x, baseline, self.ig_steps
        )
        return table, attributions, grad.abs() * box.radius

    @staticmethod
    def _corner(x: Tensor, box: Box, generators: Sequence[torch.Generator]) -> Tensor:
        """A random corner of the box, each day's signs from its own (CPU) generator."""
        unit = Box(torch.ones(()))
        signs = torch.cat(
            [random_corner(torch.empty(1, *x.shape[1:]), unit, g) for g in generators]
        )
        return box.radius * signs.to(x)


def wet_threshold(member: Emulator, target: str) -> float | None:
    """1 mm/day in the units of ``pr`` (None for other targets)."""
    if target != "pr":
        return None
    units = member.spec.units.get("pr", "mm day-1")
    scale, offset = conversion("pr", "mm day-1")
    if units != "mm day-1":  # canonical pr is mm/day; any other unit is converted back
        back_scale, back_offset = conversion("pr", units)
        return (WET_DAY_MM * scale + offset - back_offset) / back_scale
    return WET_DAY_MM * scale + offset
