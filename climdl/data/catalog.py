"""The data catalog: named datasets described in ``data_catalog/*.yaml``.

An entry knows where a dataset lives, its layout (the CORDEX ML-Bench tree, or explicit
paths/globs for one's own archive), its experiments, periods and GCMs, and how its variables
map to climdl's canonical names. Opening an entry returns a lazily loaded, Dask-chunked
``xr.Dataset`` through :func:`climdl.data.reader.open_dataset`, without reading data.

Catalog files are searched in ``$CLIMDL_CATALOG`` (folders or files, ``os.pathsep``-separated),
the packaged catalog (the repository's ``data_catalog/``, shipped as ``climdl.data_catalog``) and
``~/.config/climdl/catalog/``; a later entry with the same name does not replace an earlier one.
Paths may use ``${VAR}``, ``${VAR:-default}`` and ``{cache}`` (``$CLIMDL_CACHE`` or
``~/.cache/climdl``). YAML is read with the safe loader.
"""

from __future__ import annotations

import glob
import importlib.resources
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xarray as xr
import yaml

from climdl.data._coords import check_bbox_values
from climdl.errors import ConfigError, DataError

__all__ = ["CatalogEntry", "cache_dir", "catalog_paths", "expand", "get_entry", "load_catalog"]

Part = Literal["predictors", "target", "static"]
_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_ML_BENCH_EXPERIMENT_DIRS = {
    "ESD_pseudo_reality": ("ESD_pseudo_reality", "ESD_pseudo-reality"),
    "Emulator_hist_future": ("Emulator_hist_future", "Emulator_hist-future"),
}


def cache_dir() -> Path:
    """Where generated data (the embedded sample) are cached.

    Returns:
        ``$CLIMDL_CACHE``, else ``~/.cache/climdl``.
    """
    return Path(os.environ.get("CLIMDL_CACHE", Path.home() / ".cache" / "climdl")).expanduser()


def expand(text: str) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``{cache}`` and ``~`` in a catalog path.

    Args:
        text: the path as written in the catalog.

    Returns:
        The expanded path.

    Raises:
        ConfigError: a ``${VAR}`` without default whose variable is not set.
    """

    def env(m: re.Match[str]) -> str:
        value = os.environ.get(m["name"])
        if value is None and m["default"] is None:
            raise ConfigError(
                f"the catalog path {text!r} needs the environment variable {m['name']}; "
                f"set it to the folder where the data are."
            )
        return value if value is not None else str(m["default"])

    return os.path.expanduser(_ENV.sub(env, text).replace("{cache}", str(cache_dir())))


@dataclass
class CatalogEntry:
    """One dataset of the catalog (see ``data_catalog/README.md`` for every key).

    Attributes:
        name: the entry's name.
        description: one line shown by ``climdl catalog list``.
        layout: ``mlbench`` (the CORDEX ML-Bench tree) or ``files`` (explicit ``paths``).
        domain: ``ALPS``, ``SA``, ``NZ`` or one's own name.
        root: folder of the data (``${VAR}``, ``${VAR:-default}``, ``~`` and ``{cache}`` expanded).
        rcm: the regional climate model that produced the data.
        gcm_train: the GCM driving the training data.
        gcm_transfer: the GCM of the transferability test.
        scenario: the emission scenario of the future periods.
        experiments: training experiment -> its training periods.
        test_periods: test period name -> the label used in file names.
        paths: layout ``files``: part -> path/glob (or a list), with ``{gcm}``/``{period}``/
            ``{experiment}``/``{kind}`` fields.
        variables: canonical name -> variable name in the files, for names climdl does not
            recognise.
        assume_units: units of variables whose files lack a units attribute.
        bbox: ``[lon_min, lon_max, lat_min, lat_max]`` (degrees): the target and static fields
            (the regional model's domain) are cut to the cells whose centres lie inside, before
            anything is read; the predictors keep their own, larger domain.
        generate: ``{years, seed}``: the entry is the embedded sample, made on first use.
        download: what to tell a user whose data are missing.
        source_file: the catalog file that defined the entry.
    """

    name: str
    description: str = ""
    layout: Literal["mlbench", "files"] = "files"
    domain: str | None = None
    root: str | None = None
    rcm: str | None = None
    gcm_train: str | None = None
    gcm_transfer: str | None = None
    scenario: str | None = None
    experiments: dict[str, list[str]] = field(default_factory=dict)
    test_periods: dict[str, str] = field(default_factory=dict)
    #: layout "files": part -> path/glob or list of them (with {gcm}/{period}/{experiment} fields)
    paths: dict[str, Any] = field(default_factory=dict)
    #: canonical name -> variable name in the files, for names climdl does not recognise
    variables: dict[str, str] = field(default_factory=dict)
    #: units of variables whose files lack a units attribute
    assume_units: dict[str, str] = field(default_factory=dict)
    #: [lon_min, lon_max, lat_min, lat_max]: the target and static fields are cut to it
    bbox: list[float] | None = None
    #: how to make the data when they are missing (the embedded sample): {years, seed}
    generate: dict[str, int] | None = None
    download: str | None = None
    source_file: str = ""

    # ------------------------------------------------------------------ locations
    def root_path(self, ensure: bool = True) -> Path:
        """Folder of the dataset; generates the embedded sample on first use.

        Args:
            ensure: generate the embedded sample when it is missing (entries with ``generate``).

        Returns:
            The folder (for ``mlbench``, the domain folder inside ``root``).

        Raises:
            ConfigError: the entry has no ``root``, or it needs an unset environment variable.
            DataError: the folder does not exist (and cannot be generated).
        """
        if self.root is None:
            raise ConfigError(f"catalog entry {self.name!r} has no 'root'.")
        root = Path(expand(self.root))
        if self.layout == "mlbench":
            root = _mlbench_domain_dir(root, self.domain or "")
        if not root.exists():
            if self.generate is not None and ensure:
                self._generate(root)
            else:
                hint = f" {self.download}" if self.download else ""
                raise DataError(f"the data of catalog entry {self.name!r} are not at {root}.{hint}")
        return root

    def _generate(self, root: Path) -> None:
        from climdl.data.sample import write_sample

        assert self.generate is not None
        base = root.parent.parent  # write_sample adds <DOMAIN>/<DOMAIN>_domain
        write_sample(
            base,
            domain=self.domain or "ALPS",
            years=int(self.generate.get("years", 1)),
            seed=int(self.generate.get("seed", 0)),
            overwrite=True,
        )

    def files(
        self,
        part: Part,
        *,
        experiment: str | None = None,
        period: str | None = None,
        kind: Literal["perfect", "imperfect"] = "perfect",
        gcm: str | None = None,
    ) -> list[Path]:
        """Files of one part of the dataset; ``period`` selects a test period, else training.

        Args:
            part: ``predictors``, ``target`` or ``static``.
            experiment: the training experiment (layout ``mlbench``: needed for training data).
            period: a test period (see ``test_periods``); None: the training data.
            kind: the test predictors, ``perfect`` (upscaled RCM) or ``imperfect`` (GCM).
            gcm: the driving GCM (default: ``gcm_train``).

        Returns:
            The matching files, sorted.

        Raises:
            ConfigError: an unknown experiment or period, or no paths for ``part``.
            DataError: the data are missing (no root, or no file matches).
        """
        root = self.root_path()
        gcm = gcm or self.gcm_train or "*"
        if self.layout == "mlbench":
            pattern: str | list[str] = self._mlbench_pattern(
                root, part, experiment, period, kind, gcm
            )
        else:
            spec = self.paths.get(part)
            if spec is None:
                raise ConfigError(f"catalog entry {self.name!r} lists no paths for {part!r}.")
            fields = {
                "gcm": gcm,
                "period": period or "*",
                "experiment": experiment or "*",
                "kind": kind,
            }
            specs = spec if isinstance(spec, list) else [spec]
            pattern = [str(root / expand(str(s)).format(**fields)) for s in specs]
        found = sorted(
            {
                Path(p)
                for pat in ([pattern] if isinstance(pattern, str) else pattern)
                for p in glob.glob(pat)
            }
        )
        if not found:
            raise DataError(f"no {part} files for catalog entry {self.name!r} match {pattern}.")
        return found

    def _mlbench_pattern(
        self,
        root: Path,
        part: Part,
        experiment: str | None,
        period: str | None,
        kind: str,
        gcm: str,
    ) -> str:
        if period is not None:
            if period not in self.test_periods:
                raise ConfigError(
                    f"unknown test period {period!r} for {self.name!r}; choose one of "
                    f"{', '.join(self.test_periods)}."
                )
            base = root / "test" / period
            label = self.test_periods[period]
            if part == "predictors":
                return str(base / "predictors" / kind / f"{gcm}_{label}.nc")
            if part == "target":
                return str(base / "target" / f"pr_tasmax_{gcm}_{label}.nc")
            experiment = experiment or next(iter(self.experiments), None)
        exp_dir = self._experiment_dir(root, experiment)
        if part == "static":
            return str(exp_dir / "predictors" / "Static_fields.nc")
        if part == "predictors":
            return str(exp_dir / "predictors" / f"{gcm}_*.nc")
        return str(exp_dir / "target" / f"pr_tasmax_{gcm}_*.nc")

    def _experiment_dir(self, root: Path, experiment: str | None) -> Path:
        if experiment is None:
            raise ConfigError(
                f"say which experiment of {self.name!r} to use: {', '.join(self.experiments)}."
            )
        if experiment not in self.experiments:
            raise ConfigError(
                f"unknown experiment {experiment!r} for {self.name!r}; choose one of "
                f"{', '.join(self.experiments)}."
            )
        for spelling in _ML_BENCH_EXPERIMENT_DIRS.get(experiment, (experiment,)):
            if (root / "train" / spelling).is_dir():
                return root / "train" / spelling
        return root / "train" / experiment

    # ------------------------------------------------------------------ opening
    def open(
        self,
        part: Part,
        *,
        experiment: str | None = None,
        period: str | None = None,
        kind: Literal["perfect", "imperfect"] = "perfect",
        gcm: str | None = None,
        variables: Sequence[str] | None = None,
        chunks: Mapping[str, int | str] | None = None,
    ) -> xr.Dataset:
        """Open one part lazily as a canonical, Dask-chunked ``xr.Dataset`` (no data read).

        Args:
            part: ``predictors``, ``target`` or ``static``.
            experiment: the training experiment (layout ``mlbench``: needed for training data).
            period: a test period (see ``test_periods``); None: the training data.
            kind: the test predictors, ``perfect`` (upscaled RCM) or ``imperfect`` (GCM).
            gcm: the driving GCM (default: ``gcm_train``).
            variables: canonical names to return (default: all recognised).
            chunks: Dask chunks per dimension (default: a year of time steps).

        Returns:
            The dataset with canonical names, units and coordinates.

        Raises:
            ConfigError: an unknown experiment or period, or no paths for ``part``.
            DataError: the data are missing (no root, or no file matches).
        """
        from climdl.data.reader import open_dataset

        files = self.files(part, experiment=experiment, period=period, kind=kind, gcm=gcm)
        ds = open_dataset(
            files,
            variables,
            chunks=chunks,
            assume_units=self.assume_units or None,
            rename=self.variables or None,
            bbox=self.bbox if part in ("target", "static") else None,
        )
        ds.attrs.setdefault("climdl_catalog_entry", self.name)
        return ds

    def describe(self) -> str:
        """A human-readable summary: layout, experiments, periods, where the data are.

        Returns:
            Several lines, one fact each.
        """
        lines = [f"{self.name}: {self.description}", f"  layout: {self.layout}"]
        for key in ("domain", "rcm", "gcm_train", "gcm_transfer", "scenario", "root"):
            if getattr(self, key):
                lines.append(f"  {key}: {getattr(self, key)}")
        try:
            lines.append(f"  resolved root: {self.root_path(ensure=False)}")
        except (ConfigError, DataError) as exc:
            lines.append(f"  resolved root: not available ({exc})")
        for exp, periods in self.experiments.items():
            lines.append(f"  experiment {exp}: train {', '.join(periods)}")
        for period, label in self.test_periods.items():
            lines.append(f"  test period {period}: {label}")
        for part, spec in self.paths.items():
            lines.append(f"  {part}: {spec}")
        if self.generate:
            lines.append(f"  generated on first use: {self.generate}")
        if self.download:
            lines.append(f"  download: {self.download}")
        lines.append(f"  defined in: {self.source_file}")
        return "\n".join(lines)


def _mlbench_domain_dir(root: Path, domain: str) -> Path:
    """Accept the benchmark root, ``<root>/<DOMAIN>`` or ``<root>/<DOMAIN>/<DOMAIN>_domain``."""
    for cand in (root, root / f"{domain}_domain", root / domain / f"{domain}_domain"):
        if (cand / "train").is_dir() or (cand / "test").is_dir():
            return cand
    return root / domain / f"{domain}_domain" if root.name != f"{domain}_domain" else root


def catalog_paths() -> list[Path]:
    """YAML files of the catalog, in search order.

    Returns:
        The files of ``$CLIMDL_CATALOG``, the packaged catalog and ``~/.config/climdl/catalog/``.
    """
    dirs: list[Path] = [
        Path(p) for p in os.environ.get("CLIMDL_CATALOG", "").split(os.pathsep) if p
    ]
    # the packaged catalog (the repository's data_catalog/, shipped as climdl.data_catalog)
    dirs.append(Path(str(importlib.resources.files("climdl.data_catalog"))))
    dirs.append(Path.home() / ".config" / "climdl" / "catalog")
    files: list[Path] = []
    for d in dirs:
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files.extend(sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")))
    return files


_FIELDS = set(CatalogEntry.__dataclass_fields__) - {"name", "source_file"}


def load_catalog(files: Sequence[Path] | None = None) -> dict[str, CatalogEntry]:
    """All entries of the catalog files (each file maps entry names to their settings).

    Args:
        files: the catalog files to read; None: :func:`catalog_paths`.

    Returns:
        Entry name -> entry; the first definition of a name wins.

    Raises:
        ConfigError: a file that is not valid YAML, or an entry with unknown keys.
    """
    entries: dict[str, CatalogEntry] = {}
    for path in files if files is not None else catalog_paths():
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:  # one line: the problem and where (python tags too)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"catalog file {path} is not valid YAML{where}: {problem}.") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"catalog file {path} must map entry names to settings.")
        for name, spec in doc.items():
            if not isinstance(spec, dict):
                raise ConfigError(
                    f"catalog entry {name!r} in {path} must be a mapping of settings."
                )
            unknown = set(spec) - _FIELDS
            if unknown:
                raise ConfigError(
                    f"catalog entry {name!r} in {path} has unknown keys "
                    f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(_FIELDS))}."
                )
            if spec.get("bbox") is not None:
                try:
                    spec = {**spec, "bbox": list(check_bbox_values(spec["bbox"]))}
                except (DataError, TypeError) as exc:
                    raise ConfigError(f"catalog entry {name!r} in {path}: {exc}") from None
            if name not in entries:
                entries[name] = CatalogEntry(name=str(name), source_file=str(path), **spec)
    return entries


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry called ``name``, or a clear error listing the known ones.

    Args:
        name: the entry's name.

    Returns:
        The entry (its data are not opened).

    Raises:
        ConfigError: no entry of that name, or an invalid catalog file.
    """
    cat = load_catalog()
    if name not in cat:
        raise ConfigError(
            f"no catalog entry {name!r}; known entries: {', '.join(sorted(cat)) or 'none'}."
        )
    return cat[name]
