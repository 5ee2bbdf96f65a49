"""Shapes, checks and invariants of the plain networks in climdl.models (small widths: fast on CPU)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from climdl.errors import ConfigError
from climdl.models import (
    ConvBlock,
    DeepESD,
    DouryUNet,
    InterpolationBaseline,
    ResidualConvBlock,
    fit_linear,
    make_block,
    sampling_grid,
)

SMALL: dict[str, Any] = {
    "base_filters": 4,
    "max_filters": 16,
    "scalar_mlp": (8, 16),
    "extra_filters": 4,
}


def small_unet(**kwargs: Any) -> DouryUNet:
    return DouryUNet(**{"in_channels": 3, **SMALL, **kwargs})


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- blocks -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "residual"])
@pytest.mark.parametrize("cin", [3, 8])
def test_blocks_keep_spatial_size(kind: Any, cin: int) -> None:
    block = make_block(kind, cin, 8)
    assert isinstance(block, ConvBlock if kind == "plain" else ResidualConvBlock)
    assert block(torch.randn(2, cin, 5, 7)).shape == (2, 8, 5, 7)


def test_make_block_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="block kind"):
        make_block("dense", 3, 8)  # type: ignore[arg-type]


# ---- DouryUNet ----------------------------------------------------------------------------


@pytest.mark.parametrize(("out", "n_up"), [(64, 6), (128, 7)])
def test_unet_doury_examples(out: int, n_up: int) -> None:
    m = small_unet(in_size=(16, 16), out_size=(out, out))
    assert len(m.encoder) == 4
    assert len(m.decoder) == n_up
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 1, out, out)


def test_unet_trims_20x16_with_valid_entry_conv() -> None:
    m = small_unet(in_size=(20, 16), out_size=(64, 64))
    assert m.trimmed_size == 16
    conv = m.entry[0]
    assert isinstance(conv, nn.Conv2d)
    assert conv.kernel_size == (7, 3)
    assert m.entry(torch.randn(1, 3, 20, 16)).shape[-2:] == (16, 16)
    assert m(torch.randn(2, 3, 20, 16)).shape == (2, 1, 64, 64)


def test_unet_non_power_of_two_input() -> None:
    # 12 x 12 -> S = 8: 3 levels down
    m = small_unet(in_size=(12, 12), out_size=(32, 32))
    assert len(m.encoder) == 3
    assert m(torch.randn(2, 3, 12, 12)).shape == (2, 1, 32, 32)


def test_unet_joint_two_channel_output() -> None:
    m = small_unet(out_channels=2, out_size=(32, 32))
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 2, 32, 32)


def test_unet_scalars_change_output() -> None:
    torch.manual_seed(0)
    # train mode: BatchNorm uses batch statistics (an untrained net in eval mode, with running
    # stats still at mean 0 / var 1, shrinks the signal at every layer to ~1e-4)
    m = small_unet(n_scalars=5, out_size=(32, 32)).train()
    x = torch.randn(4, 3, 16, 16)
    s = torch.randn(4, 5)
    with torch.no_grad():
        a = m(x, s)
        b = m(x, torch.randn(4, 5))
    assert a.shape == (4, 1, 32, 32)
    assert (a - b).abs().max() > 1e-2 * a.std()


def test_unet_empty_scalar_mlp_concatenates_raw_scalars() -> None:
    m = small_unet(n_scalars=5, scalar_mlp=(), out_size=(32, 32))
    assert m(torch.randn(2, 3, 16, 16), torch.randn(2, 5)).shape == (2, 1, 32, 32)


def test_unet_residual_blocks() -> None:
    m = small_unet(block="residual", out_size=(32, 32))
    assert any(isinstance(mod, ResidualConvBlock) for mod in m.modules())
    assert not any(isinstance(mod, ConvBlock) for mod in m.modules())
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 1, 32, 32)


def test_unet_filters_capped() -> None:
    m = small_unet(out_size=(32, 32))
    widths = [stage.block.out_channels for stage in m.encoder]
    assert widths == [8, 16, 16, 16]


@pytest.mark.parametrize("n_scalars", [0, 4])
def test_unet_stages_cover_all_parameters(n_scalars: int) -> None:
    m = small_unet(n_scalars=n_scalars, out_size=(64, 64))
    in_stages = {id(p) for stage in m.stages() for p in stage.parameters()}
    assert in_stages == {id(p) for p in m.parameters()}
    # every parameter in exactly one stage
    assert sum(n_params(s) for s in m.stages()) == n_params(m)


def test_unet_backward() -> None:
    m = small_unet(n_scalars=4, out_size=(32, 32))
    out = m(torch.randn(2, 3, 16, 16), torch.randn(2, 4))
    out.square().mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert m.head.weight.grad is not None and m.head.weight.grad.abs().sum() > 0


def test_unet_deterministic_with_seed() -> None:
    x = torch.randn(2, 3, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = small_unet(out_size=(32, 32)).eval()
        with torch.no_grad():
            outs.append(m(x))
    assert torch.equal(outs[0], outs[1])


def test_unet_compiles_without_graph_breaks() -> None:
    torch._dynamo.reset()
    m = small_unet(n_scalars=2, out_size=(32, 32)).eval()
    x, s = torch.randn(2, 3, 16, 16), torch.randn(2, 2)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, s), m(x, s))


def test_unet_full_size_parameter_count_and_forward() -> None:
    m = DouryUNet(15, n_scalars=32, in_size=(16, 16), out_size=(128, 128)).eval()
    assert n_params(m) == 20_888_193
    with torch.no_grad():
        assert m(torch.randn(1, 15, 16, 16), torch.randn(1, 32)).shape == (1, 1, 128, 128)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out_size": (96, 96)}, "power of two"),
        ({"out_size": (8, 8)}, "at least 16"),
        ({"out_size": (64, 128)}, "square"),
        ({"in_size": (1, 16)}, "at least 2 x 2"),
        ({"in_channels": 0}, "in_channels"),
        ({"n_scalars": -1}, "n_scalars"),
        ({"block": "dense"}, "block kind"),
        ({"scalar_mlp": (8, 0)}, "scalar_mlp"),
    ],
)
def test_unet_bad_config_raises(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        small_unet(**kwargs)


@pytest.mark.parametrize(
    ("x_shape", "scalars", "match"),
    [
        ((2, 4, 16, 16), (2, 3), "input channels"),
        ((2, 3, 20, 16), (2, 3), "16 x 16 inputs"),
        ((3, 16, 16), (2, 3), "4-D"),
        ((2, 3, 16, 16), None, "no 1-D inputs"),
        ((2, 3, 16, 16), (2, 4), "scalars of shape"),
        ((2, 3, 16, 16), (1, 3), "scalars of shape"),
    ],
)
def test_unet_bad_forward_shapes_raise(
    x_shape: tuple[int, ...], scalars: tuple[int, int] | None, match: str
) -> None:
    m = small_unet(n_scalars=3, out_size=(16, 16))
    s = None if scalars is None else torch.randn(*scalars)
    with pytest.raises(ConfigError, match=match):
        m(torch.randn(*x_shape), s)


def test_unet_scalars_given_to_model_without_scalars_raise() -> None:
    m = small_unet(out_size=(16, 16))
    with pytest.raises(ConfigError, match="scalars of shape"):
        m(torch.randn(2, 3, 16, 16), torch.randn(2, 3))
    # an empty [B, 0] tensor is fine
    assert m(torch.randn(2, 3, 16, 16), torch.randn(2, 0)).shape == (2, 1, 16, 16)


# ---- DeepESD ------------------------------------------------------------------------------


def deepesd_param_count(
    cin: int,
    cout: int,
    hw: tuple[int, int],
    out: tuple[int, int],
    filters: tuple[int, ...],
    ns: int,
) -> int:
    convs, c = 0, cin
    for f in filters:
        convs += (c * 9 + 1) * f
        c = f
    return convs + (c * hw[0] * hw[1] + ns + 1) * cout * out[0] * out[1]


@pytest.mark.parametrize(
    ("cin", "cout", "hw", "out", "filters", "ns"),
    [(4, 1, (16, 16), (32, 32), (50, 25, 10), 0), (3, 2, (20, 16), (24, 40), (6, 5, 4), 3)],
)
def test_deepesd_shape_and_parameter_count(
    cin: int,
    cout: int,
    hw: tuple[int, int],
    out: tuple[int, int],
    filters: tuple[int, ...],
    ns: int,
) -> None:
    m = DeepESD(cin, cout, in_size=hw, out_size=out, filters=filters, n_scalars=ns)
    assert n_params(m) == deepesd_param_count(cin, cout, hw, out, filters, ns)
    s = torch.randn(2, ns) if ns else None
    assert m(torch.randn(2, cin, *hw), s).shape == (2, cout, *out)


def test_deepesd_reference_size_parameter_count() -> None:
    # 15 predictors, 16 x 16 -> 128 x 128: the dense layer dominates (counted, not built)
    assert deepesd_param_count(15, 1, (16, 16), (128, 128), (50, 25, 10), 0) == 41_979_759


def test_deepesd_scalars_change_output() -> None:
    m = DeepESD(2, in_size=(8, 8), out_size=(4, 4), filters=(4, 4, 2), n_scalars=2)
    x = torch.randn(1, 2, 8, 8)
    assert not torch.allclose(m(x, torch.zeros(1, 2)), m(x, torch.ones(1, 2)))


@pytest.mark.parametrize(
    ("x_shape", "scalars", "match"),
    [
        ((2, 3, 8, 8), None, "input channels"),
        ((2, 2, 8, 9), None, "8 x 8 inputs"),
        ((2, 2, 8, 8), (2, 1), "scalars of shape"),
    ],
)
def test_deepesd_bad_forward_shapes_raise(
    x_shape: tuple[int, ...], scalars: tuple[int, int] | None, match: str
) -> None:
    m = DeepESD(2, in_size=(8, 8), out_size=(4, 4), filters=(4, 4, 2))
    s = None if scalars is None else torch.randn(*scalars)
    with pytest.raises(ConfigError, match=match):
        m(torch.randn(*x_shape), s)


@pytest.mark.parametrize(
    "kwargs",
    [{"filters": ()}, {"filters": (4, 0)}, {"out_size": (0, 4)}, {"n_scalars": -2}],
)
def test_deepesd_bad_config_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DeepESD(2, **{"in_size": (8, 8), "out_size": (4, 4), **kwargs})


# ---- InterpolationBaseline ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolation_constant_stays_constant(mode: Any) -> None:
    m = InterpolationBaseline(channel=1, out_size=(64, 64), mode=mode)
    x = torch.randn(2, 3, 16, 16)
    x[:, 1] = 7.5
    y = m(x)
    assert y.shape == (2, 1, 64, 64)
    torch.testing.assert_close(y, torch.full_like(y, 7.5))
    assert n_params(m) == 0


def test_interpolation_sampling_grid_exact_for_linear_ramp() -> None:
    src_lat = np.arange(30.0, 62.0, 2.0)  # 16 points, ascending
    src_lon = np.arange(-10.0, 22.0, 2.0)
    lat2d, lon2d = np.meshgrid(src_lat, src_lon, indexing="ij")

    def ramp(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return 3.0 * lat - 0.5 * lon + 1.0

    # a rotated, irregular "Lambert-like" target inside the domain
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(24), np.arange(20), indexing="ij")
    dst_lat = 35.0 + 0.8 * i + 0.3 * j + rng.uniform(-0.1, 0.1, i.shape)
    dst_lon = -5.0 + 0.9 * j - 0.2 * i + rng.uniform(-0.1, 0.1, i.shape)
    grid = sampling_grid(src_lat, src_lon, dst_lat, dst_lon)
    assert grid.shape == (24, 20, 2)
    assert grid.abs().max() <= 1.0
    m = InterpolationBaseline(channel=0, sample_grid=grid)
    assert m.out_size == (24, 20)
    x = torch.as_tensor(ramp(lat2d, lon2d), dtype=torch.float64)[None, None]
    y = m(x.float())
    expected = torch.as_tensor(ramp(dst_lat, dst_lon), dtype=torch.float32)
    torch.testing.assert_close(y[0, 0], expected, atol=2e-4, rtol=0)


def test_sampling_grid_descending_lat_and_wrapped_lon() -> None:
    src_lat = np.arange(60.0, 28.0, -2.0)  # descending
    src_lon = np.arange(0.0, 40.0, 2.0)
    dst_lat = np.array([[59.0, 31.0]])
    dst_lon = np.array([[361.0, 10.0 - 360.0]])  # wrap to 1 and 10
    grid = sampling_grid(src_lat, src_lon, dst_lat, dst_lon)
    # lat 59 is 0.5 rows below row 0 (60); lon 1 is 0.5 columns right of column 0
    assert torch.allclose(grid[0, 0], torch.tensor([-1 + 2 * 0.5 / 19, -1 + 2 * 0.5 / 15]))
    assert torch.allclose(grid[0, 1], torch.tensor([-1 + 2 * 5 / 19, -1 + 2 * 14.5 / 15]))


def test_sampling_grid_outside_domain_raises() -> None:
    with pytest.raises(ConfigError, match="outside"):
        sampling_grid(np.arange(4.0), np.arange(4.0), np.array([[5.0]]), np.array([[1.0]]))


def test_lapse_rate_correction_sign() -> None:
    m = InterpolationBaseline(out_size=(8, 8))
    x = torch.full((1, 1, 4, 4), 280.0)
    orog_coarse = torch.full((4, 4), 500.0)
    orog_fine = torch.full((8, 8), 500.0)
    orog_fine[0, 0] = 1500.0  # 1000 m higher: colder by 6.5 K
    orog_fine[1, 1] = 0.0  # 500 m lower: warmer by 3.25 K
    y = m(x, orog_fine=orog_fine, orog_coarse=orog_coarse)[0, 0]
    assert y[0, 0].item() == pytest.approx(280.0 - 6.5)
    assert y[1, 1].item() == pytest.approx(280.0 + 3.25)
    assert y[2, 2].item() == pytest.approx(280.0)
    with pytest.raises(ConfigError, match="both"):
        m(x, orog_fine=orog_fine)
    with pytest.raises(ConfigError, match="orog_fine"):
        m(x, orog_fine=torch.zeros(4, 4), orog_coarse=orog_coarse)


def test_fit_linear_global_and_per_pixel() -> None:
    torch.manual_seed(0)
    pred = torch.randn(50, 4, 5)
    a = torch.linspace(0.5, 2.0, 20).reshape(4, 5)
    b = torch.linspace(-3.0, 3.0, 20).reshape(4, 5)
    scale, offset = fit_linear(pred, a * pred + b, per_pixel=True)
    torch.testing.assert_close(scale, a, atol=1e-5, rtol=0)
    torch.testing.assert_close(offset, b, atol=1e-5, rtol=0)
    scale, offset = fit_linear(pred, 2.0 * pred - 1.0)
    assert scale.shape == () and offset.shape == ()
    assert scale.item() == pytest.approx(2.0) and offset.item() == pytest.approx(-1.0)
    # NaN targets (sea) are ignored; an all-NaN pixel gets NaN coefficients
    target = 2.0 * pred - 1.0
    target[:, 0, 0] = float("nan")
    target[::2, 1, 1] = float("nan")
    scale, offset = fit_linear(pred, target, per_pixel=True)
    assert torch.isnan(scale[0, 0]) and torch.isnan(offset[0, 0])
    assert scale[1, 1].item() == pytest.approx(2.0)
    with pytest.raises(ConfigError):
        fit_linear(pred, target[:10])


def test_interpolation_fit_linear_in_place() -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 2, 4, 4)
    m = InterpolationBaseline(channel=1, out_size=(8, 8))
    target = 1.5 * m(x) + 10.0
    m.fit_linear_(x, target, per_pixel=True)
    assert m.scale.shape == (8, 8)
    torch.testing.assert_close(m(x), target, atol=1e-4, rtol=0)
    assert set(m.state_dict()) == {"scale", "offset"}


def test_interpolation_bad_config_raises() -> None:
    with pytest.raises(ConfigError):
        InterpolationBaseline(mode="nearest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        InterpolationBaseline(channel=3, in_channels=3)
    with pytest.raises(ConfigError):
        InterpolationBaseline(out_size=(8, 8), scale=torch.ones(4, 4))
    with pytest.raises(ConfigError):
        InterpolationBaseline(sample_grid=torch.zeros(8, 8, 3))
    with pytest.raises(ConfigError, match="channels"):
        InterpolationBaseline(channel=2, out_size=(8, 8))(torch.randn(1, 2, 4, 4))


def test_interpolation_by_index_is_cell_centred() -> None:
    # align_corners=False: output centres 0..3 sit at input positions -0.25, 0.25, 0.75, 1.25,
    # clamped to the border cells
    m = InterpolationBaseline(out_size=(2, 4))
    x = torch.tensor([[[[0.0, 4.0]]]])
    y = m(x)[0, 0, 0]
    assert math.isclose(y[0].item(), 0.0) and math.isclose(y[-1].item(), 4.0)
    assert math.isclose(y[1].item(), 1.0) and math.isclose(y[2].item(), 3.0)
