"""Bounded perturbations of a network's inputs: FGSM, PGD, random corners, integrated gradients.

Every function works on a batch of independent samples (the network in eval mode) and an
*objective*: a function of the perturbed inputs ``x'`` [B, ...] that returns one number per
sample [B], the quantity the adversary wants to make large (the domain-mean downscaled value,
the distance from the unperturbed prediction, the cross-entropy against the unperturbed classes).
The perturbation ``delta`` stays in the box ``|delta| <= radius`` element by element, where
``radius`` is given in the inputs' physical units (see :mod:`climdl.sensitivity.bounds`), so a
bound of 0.5 K on ``t_850`` is 0.5 K whatever the model's normalisation.

Gradients are taken with respect to the physical inputs, so the model's own normalisation is part
of the differentiated function: the conversion of the bounds into normalised units is exact.
Summing the per-sample objectives before ``backward`` gives each sample its own gradient because
the samples do not interact (the network must be in eval mode: BatchNorm uses stored statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: A function of the (perturbed) inputs [B, ...] returning one value per sample [B], to maximise.
Objective = Callable[[Tensor], Tensor]

__all__ = [
    "Box",
    "Objective",
    "fgsm",
    "gradient",
    "integrated_gradients",
    "pgd",
    "random_corner",
]


@dataclass(frozen=True)
class Box:
    """The set of allowed perturbations: ``|delta| <= radius`` element by element.

    Attributes:
        radius: non-negative bound per input element, broadcastable to the inputs, in their
            physical units (0 holds an input fixed).
    """

    radius: Tensor

    def project(self, delta: Tensor) -> Tensor:
        """``delta`` clipped into the box."""
        return torch.maximum(torch.minimum(delta, self.radius), -self.radius)

    def contains(self, delta: Tensor, rtol: float = 1e-6) -> bool:
        """Whether every element of ``delta`` is within its bound (up to float rounding)."""
        slack = rtol * self.radius.abs() + torch.finfo(delta.dtype).tiny
        return bool((delta.abs() <= self.radius + slack).all())


def gradient(objective: Objective, x: Tensor) -> tuple[Tensor, Tensor]:
    """The objective's values [B] at ``x`` and its gradient with respect to ``x``.

    Args:
        objective: the per-sample objective.
        x: inputs [B, ...] (not modified).

    Returns:
        The values (detached) and the gradient (zero where the objective does not depend on
        ``x``), in ``x``'s dtype and on its device. Works inside ``torch.no_grad()`` and
        ``torch.inference_mode()`` blocks of the caller.
    """
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        value = objective(xg)
        if not value.requires_grad:  # a constant objective: no direction moves it
            return value.detach(), torch.zeros_like(xg).detach()
        (grad,) = torch.autograd.grad(value.sum(), xg, allow_unused=True)
    return value.detach(), (torch.zeros_like(x) if grad is None else grad.detach())


def fgsm(objective: Objective, x: Tensor, box: Box) -> Tensor:
    """The fast gradient sign perturbation (Goodfellow et al. 2015): ``radius * sign(grad)``.

    The first-order maximiser of the objective over the box; elements with a zero gradient
    are not moved.

    Args:
        objective: the per-sample objective to increase.
        x: unperturbed inputs [B, ...].
        box: the allowed perturbations.

    Returns:
        The perturbation ``delta`` (same shape as ``x``), inside the box.
    """
    _, grad = gradient(objective, x)
    return box.project(box.radius * torch.sign(grad))


def pgd(
    objective: Objective,
    x: Tensor,
    box: Box,
    steps: int = 5,
    step_size: float | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """Projected gradient (sign) ascent within the box (Madry et al. 2018), best iterate kept.

    Args:
        objective: the per-sample objective to increase.
        x: unperturbed inputs [B, ...].
        box: the allowed perturbations.
        steps: ascent steps (each one gradient).
        step_size: step as a fraction of the radius; default ``2.5 / steps`` (Madry et al.), so
            the iterates can cross the box in fewer than the given steps.
        start: starting perturbation (e.g. a random corner when the objective's gradient is zero
            at ``delta = 0``); default the FGSM perturbation.

    Returns:
        Per sample, the perturbation with the largest objective among the start and every
        iterate, inside the box.
    """
    if steps < 1:
        raise ValueError("PGD needs at least one step")
    alpha = (2.5 / steps) if step_size is None else step_size
    delta = box.project(start if start is not None else fgsm(objective, x, box))
    best = delta.clone()
    best_value, grad = gradient(objective, x + delta)
    for _ in range(steps):
        delta = box.project(delta + alpha * box.radius * torch.sign(grad))
        value, grad = gradient(objective, x + delta)
        better = value > best_value
        if better.any():
            shape = (-1,) + (1,) * (x.dim() - 1)
            best = torch.where(better.view(shape), delta, best)
            best_value = torch.where(better, value, best_value)
    return best


def random_corner(x: Tensor, box: Box, generator: torch.Generator | None = None) -> Tensor:
    """A random perturbation of the same size: ``radius * (+-1)`` with independent fair signs.

    The corners of the box are the random perturbations with the largest norm the bound allows,
    so "the adversary beats random" is a fair comparison (a uniform draw inside the box would be
    smaller on average).

    Args:
        x: unperturbed inputs [B, ...] (for the shape, dtype and device).
        box: the allowed perturbations.
        generator: random generator (on ``x``'s device) for reproducible draws.

    Returns:
        The perturbation, on the box's corners.
    """
    signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype)
    return box.radius * (2 * signs - 1)


def integrated_gradients(
    objective: Objective, x: Tensor, baseline: Tensor, steps: int = 16
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017) of the objective from ``baseline`` to ``x``.

    Midpoint rule over ``steps`` points of the straight path; the attributions sum (over every
    input element of a sample) to ``objective(x) - objective(baseline)`` up to the quadrature
    error (*completeness*), and are exactly zero where ``x == baseline`` or where the objective
    does not depend on the input.

    Args:
        objective: the per-sample objective.
        x: inputs [B, ...].
        baseline: reference inputs, broadcastable to ``x`` (e.g. the training mean).
        steps: quadrature points.

    Returns:
        Attributions, same shape as ``x``, in the objective's units.
    """
    if steps < 1:
        raise ValueError("integrated gradients need at least one step")
    diff = x - baseline
    total = torch.zeros_like(x)
    for k in range(steps):
        _, grad = gradient(objective, baseline + (k + 0.5) / steps * diff)
        total += grad
    return diff * total / steps
