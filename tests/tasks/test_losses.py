"""Losses of climdl.tasks.losses: NaN masking, gradients, the Doury loss, gamma fits, Bernoulli-gamma."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from climdl.errors import ConfigError, DataError
from climdl.preprocess.gamma import fit_gamma
from climdl.tasks.losses import (
    LOSS_NAMES,
    DouryAsymmetricLoss,
    bernoulli_gamma_mean,
    bernoulli_gamma_nll,
    bernoulli_gamma_sample,
    channels_per_target,
    masked_mae,
    masked_mse,
    valid_fraction,
)


def _with_nans(
    seed: int = 0, shape: tuple[int, ...] = (4, 8, 8)
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g)
    target[torch.rand(shape, generator=g) < 0.3] = float("nan")
    target[:, 0, :] = float("nan")  # a "sea" row
    return torch.randn(shape, generator=g), target


@pytest.mark.parametrize(
    ("loss", "plain"),
    [(masked_mse, torch.nn.functional.mse_loss), (masked_mae, torch.nn.functional.l1_loss)],
)
def test_masked_losses_equal_plain_losses_on_valid_points(loss, plain) -> None:
    pred, target = _with_nans()
    mask = torch.isfinite(target)
    assert torch.allclose(loss(pred, target), plain(pred[mask], target[mask]))
    assert torch.allclose(
        loss(pred, target.nan_to_num(0.0).where(mask, torch.nan)), loss(pred, target)
    )


@given(st.integers(0, 10_000), st.floats(0.0, 0.95))
@settings(max_examples=25, deadline=None)
def test_masked_mse_property(seed: int, frac: float) -> None:
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    keep = torch.rand(2, 5, 6, generator=g) >= frac
    keep.view(-1)[0] = True
    target = target.where(keep, torch.nan)
    assert torch.allclose(masked_mse(pred, target), ((pred - target)[keep] ** 2).mean())
    assert math.isclose(float(valid_fraction(target)), float(keep.float().mean()), rel_tol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [masked_mse, masked_mae, DouryAsymmetricLoss(torch.full((8, 8), 0.8), torch.full((8, 8), 6.0))],
)
def test_gradient_flows_and_is_zero_at_masked_points(loss) -> None:
    pred, target = _with_nans()
    target = target.abs() * 10
    pred = pred.clone()
    pred[~torch.isfinite(target)] = float("nan")  # even a NaN prediction there must not leak
    pred.requires_grad_(True)
    loss(pred, target).backward()
    assert pred.grad is not None
    mask = torch.isfinite(target)
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~mask] == 0).all()
    assert (pred.grad[mask] != 0).any()


@pytest.mark.parametrize("loss", [masked_mse, masked_mae, DouryAsymmetricLoss(0.8, 6.0)])
def test_all_nan_batch_gives_zero_with_grad(loss) -> None:
    pred = torch.randn(2, 4, 4, requires_grad=True)
    out = loss(pred, torch.full((2, 4, 4), float("nan")))
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert pred.grad is not None and (pred.grad == 0).all()
    out = bernoulli_gamma_nll(
        torch.randn(2, 3, 4, 4, requires_grad=True), torch.full((2, 4, 4), float("nan"))
    )
    assert out.item() == 0.0 and out.grad_fn is not None


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ"):
        masked_mse(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))


def test_doury_penalises_under_estimation_of_heavy_rain() -> None:
    loss = DouryAsymmetricLoss(torch.full((2, 2), 0.8), torch.full((2, 2), 6.0))
    y = torch.full((1, 2, 2), 40.0)
    under, over = loss(y - 10, y), loss(y + 10, y)
    assert math.isclose(float(over), 10.0, rel_tol=1e-6)
    w = float(loss.weight(y)[0, 0, 0])
    assert w > 0.9
    assert math.isclose(float(under), 10.0 * (1 + w), rel_tol=1e-5)


def test_doury_equals_mae_for_light_rain() -> None:
    g = torch.Generator().manual_seed(1)
    loss = DouryAsymmetricLoss(
        torch.rand(6, 6, generator=g) + 0.5, torch.rand(6, 6, generator=g) * 9 + 1
    )
    y = torch.rand(3, 6, 6, generator=g)  # all <= 1 mm/day: w = cdf(0)^2 = 0
    pred = torch.randn(3, 6, 6, generator=g) * 5
    assert (loss.weight(y) == 0).all()
    assert torch.allclose(loss(pred, y), masked_mae(pred, y))


def test_doury_per_grid_point_weights_and_checkpoint() -> None:
    loss = DouryAsymmetricLoss(torch.tensor([[0.8, 0.8]]), torch.tensor([[2.0, 20.0]]))
    w = loss.weight(torch.full((1, 1, 2), 15.0))
    assert w[0, 0, 0] > 0.9 > 0.5 > w[0, 0, 1]  # 15 mm/day is extreme in a dry place only
    state = loss.state_dict()
    assert set(state) == {"gamma_shape", "gamma_scale"}
    fresh = DouryAsymmetricLoss(torch.ones(1, 2), torch.ones(1, 2))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight(torch.full((1, 1, 2), 15.0)), w)
    with pytest.raises(DataError, match="grid"):
        loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ConfigError):
        DouryAsymmetricLoss(-1.0, 1.0)


@pytest.mark.parametrize(("k", "theta", "threshold"), [(0.7, 8.0, 0.0), (2.5, 3.0, 1.0)])
def test_fit_gamma_recovers_parameters(k: float, theta: float, threshold: float) -> None:
    rng = np.random.default_rng(42)
    samples = threshold + rng.gamma(k, theta, size=(20_000, 3, 2))
    samples[rng.random(samples.shape) < 0.4] = 0.0  # dry days
    samples[:, 2, 1] = np.nan  # a masked point
    samples[:100, 0, 0] = np.nan  # gaps
    shape, scale = fit_gamma(torch.from_numpy(samples), threshold=threshold)
    assert shape.shape == scale.shape == (3, 2) and shape.dtype == torch.float32
    assert torch.allclose(shape, torch.tensor(k), rtol=0.1)
    assert torch.allclose(scale, torch.tensor(theta), rtol=0.1)
    x = samples[:, 1, 0]
    mle_shape, _, mle_scale = scipy.stats.gamma.fit(x[x > threshold] - threshold, floc=0)
    assert math.isclose(
        float(shape[1, 0]), mle_shape, rel_tol=1e-4
    )  # exact MLE, not an approximation
    assert math.isclose(float(scale[1, 0]), mle_scale, rel_tol=1e-4)


def test_fit_gamma_falls_back_to_domain_fit_and_rejects_wrong_units() -> None:
    rng = np.random.default_rng(0)
    samples = 1.0 + rng.gamma(1.5, 4.0, size=(3000, 2, 2))
    samples[:, 1, 1] = 0.0
    samples[:5, 1, 1] = [3.0, 4.0, 5.0, 9.0, 2.0]  # 5 wet days only
    shape, scale = fit_gamma(samples, threshold=1.0)
    dom_shape, dom_scale = fit_gamma(samples.reshape(-1, 1), threshold=1.0)  # all values pooled
    assert torch.isfinite(shape).all() and (shape > 0).all()
    assert torch.allclose(shape[1, 1], dom_shape[0]) and torch.allclose(scale[1, 1], dom_scale[0])
    assert not torch.allclose(shape[0, 0], dom_shape[0], rtol=1e-4)  # others keep their own fit
    with pytest.raises(DataError, match="mm/day"):
        fit_gamma(torch.rand(100, 4, 4) * 1e-4)  # kg m-2 s-1
    loss = DouryAsymmetricLoss.from_samples(samples)
    assert loss.gamma_shape.shape == (2, 2)


def _bg_params(p: float, a: float, b: float, shape: tuple[int, ...]) -> torch.Tensor:
    vals = torch.tensor([math.log(p / (1 - p)), math.log(a), math.log(b)])
    return vals.view(1, 3, *([1] * (len(shape) - 1))).expand(shape[0], 3, *shape[1:]).clone()


def test_bernoulli_gamma_nll_is_minimal_at_truth_and_mean_matches() -> None:
    p, a, b, t = 0.35, 0.8, 6.0, 0.1
    rng = np.random.default_rng(3)
    n = (20_000, 2, 2)
    y = np.where(rng.random(n) < p, t + rng.gamma(a, b, size=n), 0.0)
    y[:, 0, 0] = np.nan
    target = torch.from_numpy(y).float()
    truth = bernoulli_gamma_nll(_bg_params(p, a, b, n), target, wet_threshold=t)
    for dp, da, db in [
        (1.2, 1, 1),
        (0.8, 1, 1),
        (1, 1.2, 1),
        (1, 0.8, 1),
        (1, 1, 1.2),
        (1, 1, 0.8),
    ]:
        other = bernoulli_gamma_nll(_bg_params(p * dp, a * da, b * db, n), target, wet_threshold=t)
        assert other > truth
    assert torch.isfinite(truth)
    mean = bernoulli_gamma_mean(_bg_params(p, a, b, (1, 2, 2)), wet_threshold=t)
    assert math.isclose(float(mean[0, 0, 0]), p * (t + a * b), rel_tol=1e-5)
    assert math.isclose(float(mean[0, 0, 0]), float(np.nanmean(y)), rel_tol=0.05)
    assert torch.allclose(
        bernoulli_gamma_mean(_bg_params(p, a, b, (1, 2, 2)), 0.0), torch.tensor(p * a * b)
    )


def test_bernoulli_gamma_sample_statistics_and_generator() -> None:
    p, a, b = 0.4, 0.6, 5.0
    params = _bg_params(p, a, b, (20_000, 2, 2))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    s = bernoulli_gamma_sample(params, generator=g1, wet_threshold=0.0)
    assert torch.equal(s, bernoulli_gamma_sample(params, generator=g2, wet_threshold=0.0))
    assert s.shape == (20_000, 2, 2) and (s >= 0).all()
    assert math.isclose(float((s > 0).float().mean()), p, abs_tol=0.01)
    assert math.isclose(float(s.mean()), p * a * b, rel_tol=0.05)
    wet = s[s > 0].double()
    assert math.isclose(float(wet.var()), a * b * b, rel_tol=0.1)  # gamma variance α β²
    big = bernoulli_gamma_sample(_bg_params(0.5, 4.0, 2.0, (20_000, 1)), generator=g1)
    assert math.isclose(float(big[big > 0].mean()), 0.1 + 8.0, rel_tol=0.03)


def test_bernoulli_gamma_gradients_are_finite_and_masked() -> None:
    g = torch.Generator().manual_seed(0)
    params = (torch.randn(2, 3, 5, 5, generator=g) * 3).requires_grad_(True)
    target = torch.rand(2, 5, 5, generator=g) * 30
    target[target < 8] = 0.0
    target[:, 0] = float("nan")
    loss = bernoulli_gamma_nll(params, target.unsqueeze(1))  # [B, 1, H, W] target also accepted
    loss.backward()
    assert params.grad is not None and torch.isfinite(params.grad).all()
    assert (params.grad[:, :, 0] == 0).all() and (params.grad[:, :, 1:] != 0).any()
    with pytest.raises(ValueError, match=r"\[B, 3"):
        bernoulli_gamma_nll(torch.zeros(2, 2, 5, 5), target)


def test_bf16_inputs_work() -> None:
    pred, target = _with_nans()
    target = target.abs() * 10
    ref = [masked_mse(pred, target), masked_mae(pred, target)]
    pb = pred.bfloat16().requires_grad_(True)
    tb = target.bfloat16()
    doury = DouryAsymmetricLoss(torch.full((8, 8), 0.8), torch.full((8, 8), 6.0)).to(torch.bfloat16)
    for loss, r in zip([masked_mse, masked_mae], ref, strict=True):
        out = loss(pb, tb).detach()
        assert out.dtype == torch.float32 and math.isclose(out.item(), r.item(), rel_tol=0.02)
    out = doury(pb, tb)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert pb.grad is not None and pb.grad.dtype == torch.bfloat16 and torch.isfinite(pb.grad).all()
    params = torch.randn(2, 3, 8, 8).bfloat16().requires_grad_(True)
    nll = bernoulli_gamma_nll(params, tb[:2].clamp_min(0))
    nll.backward()
    assert nll.dtype == torch.float32 and torch.isfinite(nll)
    assert bernoulli_gamma_mean(params).dtype == torch.float32
    assert torch.isfinite(bernoulli_gamma_sample(params)).all()


def test_loss_names() -> None:
    assert set(LOSS_NAMES) == {"mse", "mae", "doury_asymmetric", "bernoulli_gamma"}
    assert channels_per_target("bernoulli_gamma") == 3
    assert [channels_per_target(n) for n in ("mse", "mae", "doury_asymmetric")] == [1, 1, 1]
    with pytest.raises(ConfigError, match="choose one of"):
        channels_per_target("huber")


@pytest.mark.gpu
def test_losses_on_cuda() -> None:
    dev = torch.device("cuda")
    pred, target = (t.to(dev) for t in _with_nans())
    target = target.abs() * 10
    shape, scale = fit_gamma(target.repeat(50, 1, 1) + 1.0)
    assert shape.device.type == "cuda"
    doury = DouryAsymmetricLoss(shape, scale).to(dev)
    pb = pred.bfloat16().requires_grad_(True)
    for loss in (masked_mse, masked_mae, doury):
        out = loss(pb, target)
        assert out.device.type == "cuda" and torch.isfinite(out)
        out.backward()
    params = torch.randn(4, 3, 8, 8, device=dev, requires_grad=True)
    bernoulli_gamma_nll(params, target.clamp_min(0)).backward()
    g = torch.Generator(device=dev).manual_seed(0)
    assert torch.isfinite(bernoulli_gamma_sample(params, generator=g)).all()
