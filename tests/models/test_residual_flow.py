"""The flow-matching residual network and its Heun ODE sampler."""

from __future__ import annotations

import pytest
import torch

from climdl.errors import ConfigError
from climdl.models import ResidualFlowNet, heun_sample


def _net(**kwargs: object) -> ResidualFlowNet:
    torch.manual_seed(0)
    options: dict[str, object] = {"depth": 2, "base_filters": 4, "max_filters": 8}
    options.update(kwargs)
    return ResidualFlowNet(2, 5, 3, **options)  # type: ignore[arg-type]


def test_shapes_and_zero_initialised_output() -> None:
    net = _net(block="residual")
    x, cond = torch.randn(3, 2, 16, 24), torch.randn(3, 5, 16, 24)
    v = net(x, cond, torch.rand(3), torch.randn(3, 3))
    assert v.shape == x.shape and torch.equal(v, torch.zeros_like(v))
    torch.nn.init.normal_(net.out.weight)
    v = net(x, cond, torch.rand(3), torch.randn(3, 3))
    assert v.shape == x.shape and v.abs().sum() > 0


def test_time_and_scalars_modulate_the_field() -> None:
    net = _net()
    for p in net.parameters():  # FiLM and output start at zero: give them values
        if p.dim() >= 1:
            torch.nn.init.normal_(p, std=0.1)
    net.eval()
    x, cond, aux = torch.randn(1, 2, 8, 8), torch.randn(1, 5, 8, 8), torch.randn(1, 3)
    a = net(x, cond, torch.tensor([0.1]), aux)
    assert not torch.allclose(a, net(x, cond, torch.tensor([0.9]), aux))
    assert not torch.allclose(a, net(x, cond, torch.tensor([0.1]), aux + 1))


def test_grid_must_divide_by_two_to_the_depth() -> None:
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*depth = 8"):
        ResidualFlowNet(1, 1, depth=3, size=(128, 100))
    net = _net()
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*depth = 4"):
        net(torch.zeros(1, 2, 10, 8), torch.zeros(1, 5, 10, 8), torch.zeros(1), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="1-D inputs"):
        net(torch.zeros(1, 2, 8, 8), torch.zeros(1, 5, 8, 8), torch.zeros(1))


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_heun_is_exact_on_a_constant_field(steps: int) -> None:
    z = torch.randn(4, 1, 3, 3)
    c = torch.linspace(-1, 1, 9).view(1, 1, 3, 3)
    calls: list[float] = []

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t[0]))
        return c.expand_as(x).to(torch.bfloat16)

    x1 = heun_sample(v, z, steps)
    assert x1.dtype == torch.float32
    torch.testing.assert_close(x1, z + c.to(torch.bfloat16).float())
    assert len(calls) == 2 * steps - 1 and calls[0] == 0.0


def test_heun_is_second_order_on_a_time_dependent_field() -> None:
    # dx/dt = 2t: x(1) = x(0) + 1; Heun is exact on a field linear in t, the last (Euler) step
    # errs by h^2, so the error shrinks as 1/K^2 (4x from 4 to 8 steps)
    z = torch.zeros(1, 1)
    errors = [float((heun_sample(lambda x, t: 2 * t[:, None], z, k) - 1).abs()) for k in (4, 8)]
    assert errors[1] < errors[0] / 3.5


def test_heun_needs_a_step() -> None:
    with pytest.raises(ConfigError, match="at least 1 step"):
        heun_sample(lambda x, t: x, torch.zeros(1), 0)
