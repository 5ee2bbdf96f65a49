"""The bounded attacks of climdl.sensitivity.attacks on small deterministic torch models (CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from climdl.sensitivity.attacks import (
    Box,
    Objective,
    fgsm,
    gradient,
    integrated_gradients,
    pgd,
    random_corner,
)

C, H, W = 3, 5, 6


def _network(seed: int = 0) -> nn.Module:
    """A small smooth convolutional network in float64 and eval mode (BatchNorm on stored stats)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(C, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Tanh(),
        nn.Conv2d(8, 1, 3, padding=1),
        nn.Softplus(),
    ).double()
    with torch.no_grad():  # stored statistics that are not the identity
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _domain_mean(net: nn.Module) -> Objective:
    """The domain mean of the network's output, one value per sample: what the emulator runs use."""
    return lambda x: net(x).mean(dim=(1, 2, 3))


@pytest.fixture
def x() -> Tensor:
    return torch.randn(4, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def box(x: Tensor) -> Box:
    """Absolute bound 0.3 on channel 0, 10 % of |x| on channel 1, channel 2 held fixed."""
    r = torch.zeros_like(x)
    r[:, 0] = 0.3
    r[:, 1] = 0.1 * x[:, 1].abs()
    return Box(r)


def _corners(x: Tensor, box: Box, n: int, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [random_corner(x, box, generator) for _ in range(n)]


def test_box_contains_and_project() -> None:
    box = Box(torch.tensor([1.0, 0.0, 2.0]))
    assert box.contains(torch.tensor([-1.0, 0.0, 2.0]))
    assert not box.contains(torch.tensor([0.0, 1e-3, 0.0]))  # a fixed element must not move
    assert not box.contains(torch.tensor([1.01, 0.0, 0.0]))
    torch.testing.assert_close(
        box.project(torch.tensor([3.0, -1.0, -5.0])), torch.tensor([1.0, 0.0, -2.0])
    )


def test_perturbations_stay_in_their_bounds(x: Tensor, box: Box) -> None:
    objective = _domain_mean(_network())
    deltas = {
        "fgsm": fgsm(objective, x, box),
        "pgd": pgd(objective, x, box, steps=4),
        "pgd from a corner": pgd(objective, x, box, steps=4, start=_corners(x, box, 1)[0]),
        "pgd, large steps": pgd(objective, x, box, steps=3, step_size=5.0),
        **{f"corner {i}": d for i, d in enumerate(_corners(x, box, 3))},
    }
    for name, delta in deltas.items():
        assert delta.shape == x.shape, name
        assert box.contains(delta), name
        assert torch.all(delta[:, 2] == 0), name  # the fixed channel does not move
        assert torch.any(delta[:, :2] != 0), name


def test_random_corners_are_on_the_corners_and_reproducible(x: Tensor, box: Box) -> None:
    first, second = _corners(x, box, 2)
    torch.testing.assert_close(first.abs(), box.radius, rtol=0, atol=0)
    assert not torch.equal(first, second)  # independent draws
    torch.testing.assert_close(_corners(x, box, 1, seed=0)[0], first, rtol=0, atol=0)
    signs = torch.sign(first[:, 0])
    assert 0.3 < (signs > 0).double().mean() < 0.7  # fair signs (120 draws)


def test_fgsm_is_the_first_order_ascent_direction(x: Tensor, box: Box) -> None:
    """f(x + h d) - f(x) = h <grad, d> + O(h^2), FGSM maximises <grad, d> over the box's corners."""
    objective = _domain_mean(_network())
    f0, grad = gradient(objective, x)
    direction = fgsm(objective, x, box)
    torch.testing.assert_close(direction, box.radius * torch.sign(grad), rtol=0, atol=0)
    slope = (grad * direction).flatten(1).sum(1)
    assert torch.all(slope > 0)
    h = 1e-4
    gain = objective(x + h * direction).detach() - f0
    torch.testing.assert_close(gain, h * slope, rtol=1e-3, atol=0)
    for corner in _corners(x, box, 8):
        assert torch.all((grad * corner).flatten(1).sum(1) <= slope)
        assert torch.all(objective(x + h * corner).detach() - f0 <= gain + 1e-12)


def test_fgsm_beats_random_corners_at_full_radius_on_a_linear_model(x: Tensor, box: Box) -> None:
    torch.manual_seed(2)
    weights = torch.randn(1, C, H, W, dtype=torch.float64)

    def objective(v: Tensor) -> Tensor:
        return (weights * v).flatten(1).sum(1)

    best = objective(x + fgsm(objective, x, box)) - objective(x)
    assert torch.all(best > 0)
    for corner in _corners(x, box, 16):
        assert torch.all(objective(x + corner) - objective(x) <= best + 1e-12)


def test_fgsm_gain_is_non_negative_on_a_convex_objective(x: Tensor, box: Box) -> None:
    torch.manual_seed(5)
    conv = nn.Conv2d(C, 2, 3, padding=1).double()

    def objective(v: Tensor) -> Tensor:  # convex in v: a sum of squares of a linear map
        return conv(v).pow(2).mean(dim=(1, 2, 3))

    with torch.no_grad():
        gain = objective(x + fgsm(objective, x, box)) - objective(x)
        pgd_gain = objective(x + pgd(objective, x, box, steps=5)) - objective(x)
    assert torch.all(gain >= 0)
    assert torch.all(pgd_gain >= gain)


def test_pgd_keeps_the_best_iterate_and_beats_fgsm(x: Tensor, box: Box) -> None:
    objective = _domain_mean(_network())
    with torch.no_grad():
        fgsm_value = objective(x + fgsm(objective, x, box))
        for steps in (1, 3, 6):
            assert torch.all(objective(x + pgd(objective, x, box, steps=steps)) >= fgsm_value)


def test_pgd_improves_on_fgsm_when_the_optimum_is_inside_the_box() -> None:
    """f = -(x - 0.3)^2 on |delta| <= 1 at x = 0: FGSM overshoots to 1, PGD comes back, and
    an iterate worse than an earlier one is not returned."""

    def objective(v: Tensor) -> Tensor:
        return -(v - 0.3).pow(2).sum(1)

    x, box = torch.zeros(1, 1, dtype=torch.float64), Box(torch.ones(1, 1, dtype=torch.float64))
    fgsm_value = objective(x + fgsm(objective, x, box))
    pgd_value = objective(x + pgd(objective, x, box, steps=5))
    torch.testing.assert_close(fgsm_value, torch.tensor([-0.49], dtype=torch.float64))
    assert pgd_value.item() > fgsm_value.item() + 0.3
    # one step of 2.5 radii overshoots to -1 (f = -1.69): the better start is kept
    torch.testing.assert_close(objective(x + pgd(objective, x, box, steps=1)), fgsm_value)


def test_pgd_starts_where_it_is_told(x: Tensor, box: Box) -> None:
    net = _network()
    reference = net(x).detach()

    def change(v: Tensor) -> Tensor:  # zero gradient at delta = 0: FGSM and PGD cannot leave it
        return (net(v) - reference).pow(2).mean(dim=(1, 2, 3))

    assert torch.all(fgsm(change, x, box) == 0)
    assert torch.all(pgd(change, x, box, steps=3) == 0)
    start = _corners(x, box, 1)[0]
    seen: list[Tensor] = []

    def recording(v: Tensor) -> Tensor:
        seen.append(v.detach().clone())
        return change(v)

    delta = pgd(recording, x, box, steps=3, start=3 * start)  # projected back into the box
    torch.testing.assert_close(seen[0], x + start, rtol=0, atol=1e-15)
    assert box.contains(delta)
    with torch.no_grad():
        assert torch.all(change(x + delta) >= change(x + start))
        assert torch.all(change(x + delta) > 0)


def test_batch_samples_are_independent(x: Tensor, box: Box) -> None:
    objective = _domain_mean(_network())
    together = pgd(objective, x, box, steps=3)
    for i in range(x.shape[0]):
        alone = pgd(objective, x[i : i + 1], Box(box.radius[i : i + 1]), steps=3)
        torch.testing.assert_close(together[i : i + 1], alone)


def test_integrated_gradients_completeness(x: Tensor) -> None:
    objective = _domain_mean(_network())
    baseline = torch.zeros(1, C, H, W, dtype=torch.float64)
    with torch.no_grad():
        total = objective(x) - objective(baseline)
    errors = []
    for steps in (2, 8, 32):
        attributions = integrated_gradients(objective, x, baseline, steps=steps)
        assert attributions.shape == x.shape
        errors.append((attributions.flatten(1).sum(1) - total).abs().max().item())
    assert errors[-1] <= 1e-3 * total.abs().max().item()
    assert errors[2] < errors[1] < errors[0]  # the midpoint rule converges


def test_integrated_gradients_are_exact_for_a_linear_model(x: Tensor) -> None:
    weights = torch.randn(
        1, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    baseline = torch.full((1, C, 1, 1), 0.5, dtype=torch.float64)

    def objective(v: Tensor) -> Tensor:
        return (weights * v).flatten(1).sum(1)

    attributions = integrated_gradients(objective, x, baseline, steps=1)
    torch.testing.assert_close(attributions, weights * (x - baseline))


def test_integrated_gradients_are_zero_for_ignored_or_unmoved_channels(x: Tensor) -> None:
    net = _network()

    def objective(v: Tensor) -> Tensor:  # channel 2 is ignored
        return net(torch.cat([v[:, :2], torch.zeros_like(v[:, 2:])], dim=1)).mean(dim=(1, 2, 3))

    baseline = torch.randn(1, C, 1, 1, dtype=torch.float64).expand(1, C, H, W).clone()
    x = x.clone()
    x[:, 1] = baseline[:, 1]  # channel 1 equals its baseline
    attributions = integrated_gradients(objective, x, baseline, steps=8)
    assert torch.all(attributions[:, 1:] == 0)
    assert torch.any(attributions[:, 0] != 0)


def test_gradient_leaves_x_alone_and_works_with_grad_disabled(x: Tensor) -> None:
    weights = torch.randn(
        1, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )

    def objective(v: Tensor) -> Tensor:
        return (weights * v.pow(2)).flatten(1).sum(1)

    before = x.clone()
    with torch.no_grad():
        value, grad = gradient(objective, x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)
    assert not x.requires_grad and x.grad is None
    assert not value.requires_grad and not grad.requires_grad
    torch.testing.assert_close(value, objective(x))
    torch.testing.assert_close(grad, 2 * weights * x)
    with torch.no_grad():  # the attacks too
        assert torch.any(fgsm(objective, x, Box(torch.full_like(x, 0.1))) != 0)


def test_gradient_of_a_tensor_made_in_inference_mode(x: Tensor) -> None:
    with torch.inference_mode():
        frozen = x * 1.0
    net = _network()
    _, grad = gradient(_domain_mean(net), frozen)
    _, expected = gradient(_domain_mean(net), x)
    torch.testing.assert_close(grad, expected)
