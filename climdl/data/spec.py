"""The emulator spec: what a trained emulator needs besides its weights, typed and versioned.

The data module computes it (names, units, grids, orography, training statistics), the
downscaling task completes it with the parts it fits (pr gamma laws, the tasmax baseline), the
checkpoint stores it (:meth:`EmulatorSpec.to_dict`: plain types and tensors, so checkpoints load
with ``torch.load(weights_only=True)``) and inference rebuilds the model from it alone
(:meth:`EmulatorSpec.from_dict`). Layouts written by older climdl versions are upgraded by
:func:`migrate_layout`, one step per schema version; a newer layout is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from climdl.data.spec_checks import (
    exact_keys,
    forcing_columns,
    malformed,
    names,
    shaped,
    size,
    vector,
)
from climdl.errors import DataError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BaselineCoefficients",
    "Coordinate",
    "EmulatorSpec",
    "EmulatorStats",
    "Grid",
    "GridMapping",
    "Step",
    "migrate_layout",
]

SCHEMA_VERSION = 1
"""Layout version written by :meth:`EmulatorSpec.to_dict` (0: climdl 0.1, no version key)."""

Step = Callable[[dict[str, Any]], dict[str, Any]]


def migrate_layout(
    layout: Mapping[str, Any], steps: Sequence[Step], latest: int, what: str
) -> dict[str, Any]:
    """Upgrade a stored spec layout to version ``latest``, one step per version.

    Args:
        layout: the stored dictionary (``schema_version`` missing means 0).
        steps: ``steps[v]`` turns a version-``v`` layout into version ``v + 1``.
        latest: the version this climdl writes.
        what: the spec's name in messages (``emulator``, ``segmenter``).

    Returns:
        A new dictionary in the ``latest`` layout (the input is not changed).
    """
    if not isinstance(layout, Mapping):
        raise DataError(f"the {what} spec is not a dictionary but a {type(layout).__name__}.")
    out = dict(layout)
    version = out.get("schema_version", 0)
    if type(version) is not int or version < 0:  # a bool is no version
        raise DataError(f"the {what} spec has an invalid schema version {version!r}.")
    if version > latest:
        raise DataError(
            f"the {what} spec has schema version {version}, newer than the version {latest} "
            "this climdl reads; upgrade climdl to use this checkpoint."
        )
    while version < latest:
        out = steps[version](out)
        version += 1
        out["schema_version"] = version
    return out


# ----------------------------------------------------------------------------- grids
@dataclass(frozen=True, eq=False)
class Coordinate:
    """One grid coordinate: dimension names, values (float64) and its CF attributes.

    Attributes:
        dims: the coordinate's dimension names.
        values: its values (float64 tensor).
        attrs: its CF attributes.
    """

    dims: tuple[str, ...]
    values: Tensor
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", names(self.dims, "grid coordinate dims"))
        if not isinstance(self.values, Tensor) or self.values.ndim != len(self.dims):
            raise DataError(f"a grid coordinate on {list(self.dims)} has values of another rank.")


@dataclass(frozen=True, eq=False)
class GridMapping:
    """The CF grid-mapping variable of a projected grid: its name and attributes.

    Attributes:
        name: the grid-mapping variable's name.
        attrs: its CF attributes.
    """

    name: str
    attrs: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Grid:
    """A horizontal grid: coordinates by name (``lat``, ``lon``, ``x``, ``y``; ``rlat``, ``rlon``
    on a rotated pole), grid mapping.

    Attributes:
        coords: the coordinates by name.
        mapping: the grid mapping of a projected grid, or None.
    """

    coords: dict[str, Coordinate]
    mapping: GridMapping | None = None

    def __post_init__(self) -> None:
        if not self.coords:
            raise DataError("a grid in the spec has no coordinates.")

    @property
    def shape(self) -> tuple[int, int] | None:
        """(rows, columns), from 1-D ``y``/``x``, 2-D ``lat``, or 1-D ``lat``/``lon``."""
        c = self.coords
        if "y" in c and "x" in c and c["y"].values.ndim == 1 and c["x"].values.ndim == 1:
            return (c["y"].values.numel(), c["x"].values.numel())
        if "lat" in c and c["lat"].values.ndim == 2:
            return (int(c["lat"].values.shape[0]), int(c["lat"].values.shape[1]))
        if "lat" in c and "lon" in c and c["lat"].values.ndim == 1:
            return (c["lat"].values.numel(), c["lon"].values.numel())
        return None

    def coord(self, name: str) -> Coordinate:
        """The coordinate ``name`` (DataError if the grid has none)."""
        if name not in self.coords:
            raise DataError(f"the grid has no {name} coordinate (it has {sorted(self.coords)}).")
        return self.coords[name]

    def same_as(self, other: Grid, atol: float = 1e-6) -> bool:
        """Same coordinate names, shapes and values (the grid mapping is not compared)."""
        if sorted(self.coords) != sorted(other.coords):
            return False
        return all(
            a.values.shape == other.coords[k].values.shape
            and torch.allclose(a.values, other.coords[k].values, atol=atol)
            for k, a in self.coords.items()
        )

    @property
    def axes(self) -> tuple[str, str] | None:
        """(rows, columns) dimension names of a curvilinear grid: the dims of its 2-D ``lat``
        (``rlat``/``rlon`` on a rotated pole, ``y``/``x`` on a projection); None otherwise."""
        lat = self.coords.get("lat")
        if lat is None or len(lat.dims) != 2:
            return None
        return (lat.dims[0], lat.dims[1])

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> Grid:
        """The grid of a dataset: its lat/lon/x/y coordinates, the 1-D axes of a curvilinear
        grid's 2-D lat/lon (``rlat``/``rlon`` of a rotated pole) and the grid-mapping variable."""
        coords: dict[str, Coordinate] = {}
        names = ["lat", "lon", "x", "y"]
        if "lat" in ds.coords and ds["lat"].ndim == 2:
            names += [str(d) for d in ds["lat"].dims if d in ds.coords and str(d) not in names]
        for name in names:
            if name in ds.coords:
                c = ds.coords[name]
                coords[name] = Coordinate(
                    tuple(map(str, c.dims)),
                    torch.from_numpy(np.array(c.values, dtype=np.float64)),  # writable copy
                    {
                        k: (v.item() if hasattr(v, "item") else v)
                        for k, v in c.attrs.items()
                        if isinstance(v, (str, int, float))
                    },
                )
        mapping = None
        for vname, var in ds.variables.items():
            if "grid_mapping_name" in var.attrs:
                attrs = {
                    k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in var.attrs.items()
                }
                mapping = GridMapping(str(vname), attrs)
        return cls(coords, mapping)

    def to_dict(self) -> dict[str, Any]:
        """Plain layout: ``{name: {dims, values, attrs}, "grid_mapping": {name, attrs}}``."""
        out: dict[str, Any] = {
            k: {"dims": list(c.dims), "values": c.values, "attrs": dict(c.attrs)}
            for k, c in self.coords.items()
        }
        if self.mapping is not None:
            out["grid_mapping"] = {"name": self.mapping.name, "attrs": dict(self.mapping.attrs)}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grid:
        """The inverse of :meth:`to_dict`."""
        try:
            coords = {
                str(k): Coordinate(v["dims"], v["values"], dict(v.get("attrs", {})))
                for k, v in d.items()
                if k != "grid_mapping"
            }
            gm = d.get("grid_mapping")
            mapping = GridMapping(str(gm["name"]), dict(gm["attrs"])) if gm else None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise malformed("emulator", exc) from exc
        return cls(coords, mapping)


# ----------------------------------------------------------------------------- statistics
@dataclass(frozen=True, eq=False)
class EmulatorStats:
    """Training statistics: per-channel means and standard deviations (1-D tensors).

    ``moments_*``: statistics of the daily spatial means and stds of each predictor (first all
    means, then all stds); ``y_log_*``: of ``log1p`` of the targets; ``pr_gamma_*``: per-pixel
    gamma laws of wet-day precipitation, fitted by the task when ``pr`` is a target.

    Attributes:
        x_mean: predictor means ``[C_in]``.
        x_std: predictor standard deviations ``[C_in]``.
        moments_mean: means of the daily spatial moments ``[2 * C_in]``.
        moments_std: standard deviations of the daily spatial moments ``[2 * C_in]``.
        y_mean: target means ``[C_out]``.
        y_std: target standard deviations ``[C_out]``.
        y_log_mean: means of ``log1p`` of the targets ``[C_out]``.
        y_log_std: standard deviations of ``log1p`` of the targets ``[C_out]``.
        aux_mean: means of the 1-D inputs.
        aux_std: standard deviations of the 1-D inputs.
        pr_gamma_shape: gamma shape per target pixel ``[H, W]``, or None.
        pr_gamma_scale: gamma scale per target pixel ``[H, W]``, or None.
    """

    x_mean: Tensor
    x_std: Tensor
    moments_mean: Tensor
    moments_std: Tensor
    y_mean: Tensor
    y_std: Tensor
    y_log_mean: Tensor
    y_log_std: Tensor
    aux_mean: Tensor
    aux_std: Tensor
    pr_gamma_shape: Tensor | None = None
    pr_gamma_scale: Tensor | None = None

    def to_dict(self) -> dict[str, Tensor]:
        """Plain layout (the gamma entries only when fitted)."""
        return {
            k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not None
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmulatorStats:
        """The inverse of :meth:`to_dict`."""
        fields = list(cls.__dataclass_fields__)
        required = [k for k in fields if "gamma" not in k]
        exact_keys(d, required, "emulator spec's statistics", optional=fields)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True, eq=False)
class BaselineCoefficients:
    """The fitted linear map (scale, offset) of the tasmax interpolation baseline.

    Attributes:
        scale: the multiplier, a scalar or ``[H, W]`` tensor.
        offset: the offset (K), same shape.
    """

    scale: Tensor
    offset: Tensor


# ----------------------------------------------------------------------------- the spec
def _upgrade_0_to_1(d: dict[str, Any]) -> dict[str, Any]:
    """climdl 0.1 wrote the same keys, leaving out the optional ones it had not filled."""
    d.setdefault("forcing_table", None)
    d.setdefault("tasmax_baseline", None)
    d.setdefault("orography", None)
    return d


MIGRATIONS: tuple[Step, ...] = (_upgrade_0_to_1,)
"""``MIGRATIONS[v]`` upgrades a version-``v`` emulator layout to ``v + 1``."""


@dataclass(frozen=True, eq=False)
class EmulatorSpec:
    """Everything a downscaling model needs besides its weights (see the module docstring).

    Attributes:
        variables: predictor names, in channel order.
        targets: target names, in channel order.
        aux_names: names of the 1-D inputs (day of year, forcing series).
        units: canonical units of every predictor and target.
        target_attrs: string CF attributes of each target (for the outputs).
        in_size: coarse grid (rows, columns).
        out_size: target grid (rows, columns).
        coarse_grid: the predictors' grid.
        target_grid: the targets' grid.
        stats: training statistics.
        calendar: the training data's calendar.
        orography: fine orography ``[H, W]`` (m), or None.
        forcing_table: yearly forcing series (``{"year": [...], name: [...]}``), or None.
        tasmax_baseline: fitted tasmax baseline coefficients, or None.
    """

    variables: tuple[str, ...]
    targets: tuple[str, ...]
    aux_names: tuple[str, ...]
    units: dict[str, str]
    target_attrs: dict[str, dict[str, str]]
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    coarse_grid: Grid
    target_grid: Grid
    stats: EmulatorStats
    calendar: str
    orography: Tensor | None = None
    forcing_table: dict[str, list[float]] | None = None
    tasmax_baseline: BaselineCoefficients | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise sequences to tuples (the dataclass is frozen)
        set_(self, "variables", names(self.variables, "variables"))
        set_(self, "targets", names(self.targets, "targets"))
        set_(self, "aux_names", names(self.aux_names, "aux_names", allow_empty=True))
        set_(self, "in_size", size(self.in_size, "in_size"))
        set_(self, "out_size", size(self.out_size, "out_size"))
        self._check_names()
        n_in, n_out, s = len(self.variables), len(self.targets), self.stats
        for name, n in (
            ("x_mean", n_in),
            ("x_std", n_in),
            ("moments_mean", 2 * n_in),
            ("moments_std", 2 * n_in),
            ("y_mean", n_out),
            ("y_std", n_out),
            ("y_log_mean", n_out),
            ("y_log_std", n_out),
            ("aux_mean", len(self.aux_names)),
            ("aux_std", len(self.aux_names)),
        ):
            vector(getattr(s, name), n, name)
        if (s.pr_gamma_shape is None) != (s.pr_gamma_scale is None):
            raise DataError("the spec has a pr gamma shape or scale without the other.")
        if s.pr_gamma_shape is not None:
            shaped(s.pr_gamma_shape, [self.out_size], "pr gamma shape")
            shaped(s.pr_gamma_scale, [self.out_size], "pr gamma scale")
        if self.orography is not None:
            shaped(self.orography, [self.out_size], "orography")
        for grid, hw, what in (
            (self.coarse_grid, self.in_size, "coarse grid"),
            (self.target_grid, self.out_size, "target grid"),
        ):
            if grid.shape is not None and grid.shape != hw:
                raise DataError(f"the spec's {what} is {grid.shape}, not {hw} as its data.")
        if self.forcing_table is not None:
            set_(self, "forcing_table", forcing_columns(self.forcing_table))
        base = self.tasmax_baseline
        if base is not None:
            if not isinstance(base, BaselineCoefficients):
                raise DataError("the spec's tasmax baseline is not a (scale, offset) pair.")
            for what, t in (("scale", base.scale), ("offset", base.offset)):
                shaped(t, [(), self.out_size], f"tasmax baseline {what}")

    def _check_names(self) -> None:
        """A unit string for every variable and target; string attributes for each target."""
        units, attrs = self.units, self.target_attrs
        if not isinstance(units, Mapping) or not all(
            isinstance(units.get(n), str) for n in (*self.variables, *self.targets)
        ):
            raise DataError(
                "the spec's units must give a unit string for every variable and target."
            )
        if not isinstance(attrs, Mapping) or set(attrs) != set(self.targets):
            got = sorted(map(str, attrs)) if isinstance(attrs, Mapping) else type(attrs).__name__
            raise DataError(
                f"the spec's target_attrs are for {got}, not the targets {list(self.targets)}."
            )
        for n, a in attrs.items():
            if not isinstance(a, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in a.items()
            ):
                raise DataError(f"the spec's target_attrs of {n} must map strings to strings.")
        object.__setattr__(self, "units", dict(units))
        object.__setattr__(self, "target_attrs", {k: dict(v) for k, v in attrs.items()})

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint layout (plain types and tensors), with ``schema_version``.

        Returns:
            Plain types and tensors (loads with ``torch.load(weights_only=True)``).
        """
        base = self.tasmax_baseline
        return {
            "schema_version": SCHEMA_VERSION,
            "variables": list(self.variables),
            "targets": list(self.targets),
            "aux_names": list(self.aux_names),
            "units": dict(self.units),
            "target_attrs": {k: dict(v) for k, v in self.target_attrs.items()},
            "in_size": list(self.in_size),
            "out_size": list(self.out_size),
            "coarse_grid": self.coarse_grid.to_dict(),
            "target_grid": self.target_grid.to_dict(),
            "orography": self.orography,
            "stats": self.stats.to_dict(),
            "calendar": self.calendar,
            "forcing_table": None if self.forcing_table is None else dict(self.forcing_table),
            "tasmax_baseline": None
            if base is None
            else {"scale": base.scale, "offset": base.offset},
        }

    @classmethod
    def from_dict(cls, layout: Mapping[str, Any]) -> EmulatorSpec:
        """A spec from a stored layout of any known version (see :data:`MIGRATIONS`).

        Args:
            layout: what :meth:`to_dict` wrote (this or an older climdl).

        Returns:
            The spec, validated.

        Raises:
            DataError: a malformed layout, or one newer than this climdl reads.
        """
        d = migrate_layout(layout, MIGRATIONS, SCHEMA_VERSION, "emulator")
        exact_keys(d, _KEYS, "emulator spec")
        try:
            base = d["tasmax_baseline"]
            return cls(
                variables=d["variables"],
                targets=d["targets"],
                aux_names=d["aux_names"],
                units=d["units"],
                target_attrs=d["target_attrs"],
                in_size=d["in_size"],
                out_size=d["out_size"],
                coarse_grid=Grid.from_dict(d["coarse_grid"]),
                target_grid=Grid.from_dict(d["target_grid"]),
                stats=EmulatorStats.from_dict(d["stats"]),
                calendar=str(d["calendar"]),
                orography=d["orography"],
                forcing_table=d["forcing_table"],
                tasmax_baseline=None
                if base is None
                else BaselineCoefficients(base["scale"], base["offset"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise malformed("emulator", exc) from exc


_KEYS = ("schema_version", *EmulatorSpec.__dataclass_fields__)
"""The keys of a current-version emulator layout (:meth:`EmulatorSpec.to_dict`)."""
