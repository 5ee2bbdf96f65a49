"""Parsing ``--eps`` bounds against a model's channels and units, and the radii they give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from climdl.data.spec import EmulatorSpec
from climdl.data.variables import G0
from climdl.errors import ConfigError
from climdl.sensitivity.bounds import (
    DEFAULT_EMULATOR_BOUNDS,
    Bound,
    describe,
    parse_bounds,
    radius,
)
from climdl.tasks.checkpoint import read_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "emulator-0.1.ckpt"


@pytest.fixture(scope="module")
def spec() -> EmulatorSpec:
    """The spec of the sample emulator: its predictor channels and their units."""
    return EmulatorSpec.from_dict(read_checkpoint(FIXTURE)["climdl"]["spec"])


@pytest.fixture
def channels(spec: EmulatorSpec) -> tuple[str, ...]:
    return tuple(spec.variables)


@pytest.fixture
def units(spec: EmulatorSpec) -> dict[str, str]:
    return dict(spec.units)


def test_defaults_parse_on_the_sample_emulator(channels, units) -> None:
    bounds = parse_bounds(DEFAULT_EMULATOR_BOUNDS, channels, units, defaults=True)
    assert list(bounds) == list(channels)  # every predictor is bounded, in model order
    for channel, bound in bounds.items():
        assert bound.channel == channel
        family = channel.split("_")[0]
        expected = {"t": (0.5, 0.0), "q": (0.0, 0.05), "z": (20.0, 0.0)}.get(family, (0.5, 0.0))
        assert (bound.absolute, bound.relative) == pytest.approx(expected)
    assert units["q_850"] == "kg kg-1" and bounds["q_850"].text == "5 %"
    assert units["z_500"] == "m2 s-2" and bounds["z_500"].text == "20 m2 s-2"


def test_defaults_skip_families_the_model_lacks(channels, units) -> None:
    few = ("t_850", "u_850")
    bounds = parse_bounds(DEFAULT_EMULATOR_BOUNDS, few, units, defaults=True)
    assert list(bounds) == ["t_850", "u_850"]
    with pytest.raises(ConfigError, match="'q'"):
        parse_bounds(DEFAULT_EMULATOR_BOUNDS, few, units)


@pytest.mark.parametrize(
    ("text", "channel", "absolute"),
    [
        ("t=500 mK", "t_500", 0.5),
        ("t=0.5 degC", "t_500", 0.5),  # a difference: the offset of degC cancels
        ("z=2 dam2 s-2", "z_500", 200.0),
        ("z=2 m", "z_500", 2 * G0),  # geopotential height, as climdl converts z inputs
        ("u=1 km h-1", "u_850", 1 / 3.6),
        ("v=3.6 km/h", "v_850", 1.0),
        ("q=0.1 g kg-1", "q_700", 1e-4),
        ("q=1e-4 1", "q_700", 1e-4),
        ("t=0.5K", "t_700", 0.5),
    ],
)
def test_units_are_converted_to_the_channel_units(channels, units, text, channel, absolute):
    bound = parse_bounds(text, channels, units)[channel]
    assert bound.absolute == pytest.approx(absolute)
    assert bound.relative == 0.0


@pytest.mark.parametrize("text", ["q=5 %", "q=5%", "q=5 percent"])
def test_percent_is_relative(channels, units, text) -> None:
    bound = parse_bounds(text, channels, units)["q_500"]
    assert (bound.absolute, bound.relative, bound.text) == (0.0, pytest.approx(0.05), "5 %")


def test_channel_key_wins_over_its_family(channels, units) -> None:
    for text in ("t=0.5 K; t_850=2 K", "t_850=2 K, t=0.5 K"):  # whatever the order
        bounds = parse_bounds(text, channels, units)
        assert bounds["t_850"].absolute == 2.0 and bounds["t_850"].text == "2 K"
        assert bounds["t_500"].absolute == bounds["t_700"].absolute == 0.5
    held = parse_bounds("t=0.5 K, t_850=0 K", channels, units)  # 0 holds a channel fixed
    assert sorted(held) == ["t_500", "t_700"]


def test_unbounded_channels_are_fixed(channels, units) -> None:
    bounds = parse_bounds("t_850=0.5 K", channels, units)
    assert list(bounds) == ["t_850"]


def test_several_keys_share_a_bound(channels, units) -> None:
    bounds = parse_bounds("u=v=0.5 m s-1", channels, units)
    assert sorted(bounds) == sorted(c for c in channels if c[0] in "uv")
    assert {b.absolute for b in bounds.values()} == {0.5}
    mixed = parse_bounds("u_850 = t_850 = 1 %", channels, units)
    assert {c: b.relative for c, b in mixed.items()} == {"t_850": 0.01, "u_850": 0.01}


def test_dimensionless_channel_takes_unit_one() -> None:
    bounds = parse_bounds(
        "B2=B3=0.01 1; B10=0.5 K", ["B2", "B3", "B10"], {"B2": "1", "B3": "1", "B10": "K"}
    )
    assert [b.absolute for b in bounds.values()] == pytest.approx([0.01, 0.01, 0.5])
    with pytest.raises(ConfigError, match="B10"):
        parse_bounds("B10=0.01 1", ["B2", "B10"], {"B2": "1", "B10": "K"})


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and "\n" not in message
    assert not any(
        message[i + 2].isupper() for i in range(len(message) - 2) if message[i : i + 2] == ". "
    )


@pytest.mark.parametrize(
    ("text", "offending", "says"),
    [
        ("t=0.5 K, w=1 m s-1", "w=1 m s-1", "neither a channel nor a family"),
        ("t_925=0.5 K", "t_925=0.5 K", "neither a channel nor a family"),
        ("t=-0.5 K", "t=-0.5 K", "negative"),
        ("t=nan K", "t=nan K", "not a finite number"),
        ("t=inf K", "t=inf K", "not a finite number"),
        ("t=0.5", "t=0.5", "no unit"),
        ("t=5 m", "t=5 m", "cannot be converted to the units of t_500 (K)"),
        ("u=0.5 K", "u=0.5 K", "cannot be converted to the units of u_500 (m s-1)"),
        ("t=0.5 furlongs-ish", "t=0.5 furlongs-ish", "cannot parse"),
        ("t 0.5 K", "t 0.5 K", "not of the form name=value unit"),
        ("t=K", "t=K", "does not start with a number"),
        ("=0.5 K", "=0.5 K", "not of the form name=value unit"),
        ("t=", "t=", "not of the form name=value unit"),
        ("t=0.5 K, t=1 K", "t=1 K", "an earlier item bounds"),
        ("t=0 K, q=0 %", "t=0 K, q=0 %", "every input channel fixed"),
        ("", "''", "every input channel fixed"),
    ],
)
def test_mistakes_are_one_sentence_naming_the_item(channels, units, text, offending, says) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bounds(text, channels, units)
    message = str(info.value)
    assert says in message
    assert offending in message
    _one_sentence(message)


def test_defaults_flag_still_refuses_a_set_that_fixes_everything(units) -> None:
    with pytest.raises(ConfigError, match="every input channel fixed"):
        parse_bounds(DEFAULT_EMULATOR_BOUNDS, ["orog"], {"orog": "m"}, defaults=True)


def test_radius_shape_and_values(channels, units) -> None:
    bounds = parse_bounds("t=0.5 K, q_850=10 %", channels, units)
    x = torch.randn(2, len(channels), 3, 4, dtype=torch.float64)
    x[0, channels.index("q_850"), 0, 0] = float("nan")  # a missing value does not move
    r = radius(x, bounds, channels)
    assert r.shape == x.shape and r.dtype == x.dtype
    for i, channel in enumerate(channels):
        if channel.startswith("t_"):
            assert torch.all(r[:, i] == 0.5)
        elif channel == "q_850":
            expected = 0.1 * x[:, i].abs()
            expected[0, 0, 0] = 0.0
            torch.testing.assert_close(r[:, i], expected)
        else:
            assert torch.all(r[:, i] == 0)


def test_radius_is_detached_and_checks_shapes(channels, units) -> None:
    bounds = parse_bounds("q=5 %", channels, units)
    x = torch.rand(1, len(channels), 2, 2, requires_grad=True)
    assert not radius(x, bounds, channels).requires_grad
    with pytest.raises(ValueError, match="channels"):
        radius(x[:, :3], bounds, channels)
    with pytest.raises(ValueError, match="q_500"):
        radius(x[:, :1], bounds, channels[:1])


def test_describe_lists_bounds_in_channel_order_and_parses_back(channels, units) -> None:
    bounds = parse_bounds("q=5 %, t_850=500 mK, u=v=0.5 m s-1, t_500=0.25 K", channels, units)
    text = describe(bounds)
    assert text.startswith("t_500=0.25 K; t_850=500 mK; u_500=0.5 m s-1;")
    assert text.endswith("q_700=5 %; q_850=5 %")
    assert parse_bounds(text, channels, units) == bounds
    assert describe({"b": Bound("b", 0.01, 0.0, "0.01 1")}) == "b=0.01 1"
