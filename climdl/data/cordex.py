"""The CORDEX-CMIP6 archive's vocabulary: a run's metadata checked against the CV, the DRS.

Emulated regional projections are published beside the dynamical ones under the activity
``ESD`` (empirical-statistical downscaling). The CORDEX-CMIP6 archive specification fixes the
global attributes a file carries, the values they may take (the controlled vocabulary,
``CORDEX-CMIP6_CV.json``), each variable's definition (the CMOR tables, one per frequency), and
where files lie and what they are called (the DRS templates). The tables ship inside the
package (``climdl/data/cordex_cmip6``, BSD-3 licence beside them, from
WCRP-CORDEX/cordex-cmip6-cmor-tables); nothing is downloaded.

What climdl cannot know (who made the run, with which registered model, driven by which
simulation) comes from a small YAML file, ``RUN.yaml``, read safely and checked against the CV
**before any work**: one clear sentence for a missing, unknown or invalid attribute.
:func:`load_run` turns it into a :class:`CordexRun` that carries every required global
attribute the run shares; the writer adds those of each file (``variable_id``,
``creation_date``, ``tracking_id``, ``grid``, ...).

A newer CV (a model registered after this release) can be used with ``cmor_tables: DIR`` in
RUN.yaml: a folder holding ``CORDEX-CMIP6_CV.json`` and ``CORDEX-CMIP6_day.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from climdl.errors import ConfigError

__all__ = [
    "CordexRun",
    "CordexTables",
    "check_period",
    "drs_filename",
    "drs_folder",
    "file_years",
    "load_run",
    "shipped_tables_dir",
]

PREFIX = "CORDEX-CMIP6"
#: RUN.yaml keys the user must give (all but ``contact`` are checked against the CV)
REQUIRED_KEYS = (
    "domain_id",
    "institution_id",
    "source_id",
    "driving_source_id",
    "driving_experiment_id",
    "driving_variant_label",
    "driving_institution_id",
    "contact",
)
#: RUN.yaml keys that may be given, with their defaults (None: left out of the files)
OPTIONAL_KEYS: dict[str, str | None] = {
    "activity_id": "ESD",
    "version_realization": "v1-r1",
    "version": None,  # the DRS folder's version, vYYYYMMDD (default: the day of the run)
    "version_realization_info": None,
    "references": None,
    "comment": None,
    "further_info_url": None,
    "cmor_tables": None,
}
_VERSION = re.compile(r"v\d{8}")
log = logging.getLogger(__name__)
_REALIZATION = re.compile(r"v[1-9]\d*-r[1-9]\d*")
_VARIANT = re.compile(r"r[1-9]\d*i[1-9]\d*p[1-9]\d*f[1-9]\d*")
_DRS_BLOCK = re.compile(r"<([^<>]+)>")
#: what a value that names a folder or a file part may hold (the CV's own values do)
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def shipped_tables_dir() -> Path:
    """The folder of the CV and CMOR tables shipped with climdl (for ``cc6:tables_dir``)."""
    return Path(str(resources.files("climdl.data").joinpath("cordex_cmip6")))


@dataclass(frozen=True)
class CordexTables:
    """The controlled vocabulary and the daily CMOR table, read once from a folder.

    Attributes:
        folder: where they were read.
        cv: the ``CV`` object of ``CORDEX-CMIP6_CV.json``.
        day: the ``variable_entry`` object of ``CORDEX-CMIP6_day.json``.
        coordinates: the ``axis_entry`` object of ``CORDEX-CMIP6_coordinate.json`` (for
            scalar coordinates such as ``height2m``; empty if the folder has none).
        missing_value: the day table's missing value (1e20).
    """

    folder: Path
    cv: Mapping[str, Any]
    day: Mapping[str, Any]
    coordinates: Mapping[str, Any] = field(default_factory=dict)
    missing_value: float = 1e20

    @staticmethod
    def read(folder: Path | None = None) -> CordexTables:
        """The tables of ``folder`` (None: the shipped ones).

        Raises:
            ConfigError: a folder without the CV or the day table, or a file that is not
                the JSON these tables are.
        """
        return _read_tables(str(folder.resolve()) if folder is not None else None)

    def variable(self, name: str) -> Mapping[str, str]:
        """The day table's definition of ``name`` (units, standard_name, cell_methods, ...).

        Raises:
            ConfigError: the table has no such variable.
        """
        entry = self.day.get(name)
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"the CORDEX-CMIP6 day table has no variable {name!r}: only variables of the "
                "CMOR tables can be published in the CORDEX-CMIP6 format."
            )
        return entry


def _load_json(path: Path, what: str) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path.parent} holds no {path.name} ({what}).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not a readable JSON file ({what}): {err}.") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} is not a CMOR table ({what}): its top level is not an object.")
    return data


@cache
def _read_tables(folder: str | None) -> CordexTables:
    base = Path(folder) if folder is not None else shipped_tables_dir()
    cv = _load_json(base / f"{PREFIX}_CV.json", "the controlled vocabulary").get("CV")
    day = _load_json(base / f"{PREFIX}_day.json", "the daily CMOR table")
    coord_file = base / f"{PREFIX}_coordinate.json"
    coords = _load_json(coord_file, "coordinates") if coord_file.is_file() else {}
    if not isinstance(cv, Mapping) or not isinstance(day.get("variable_entry"), Mapping):
        raise ConfigError(f"{base} does not hold CORDEX-CMIP6 tables (no CV or variable_entry).")
    try:
        missing = float(day.get("Header", {}).get("missing_value", 1e20))
    except (TypeError, ValueError):
        missing = 1e20
    axes = coords.get("axis_entry", {})
    return CordexTables(
        base, cv, day["variable_entry"], axes if isinstance(axes, Mapping) else {}, missing
    )


@dataclass(frozen=True)
class CordexRun:
    """A run's CORDEX-CMIP6 identity: every global attribute the run's files share.

    Attributes:
        attrs: the required global attributes known before the run (the user's and those the
            CV gives for them: ``domain``, ``institution``, ``license``, ``source``, ...), in
            the order the files carry them.
        version: the DRS folder's version (``vYYYYMMDD``).
        tables: the CV and CMOR tables checked against.
        source: the RUN.yaml file read (for messages and provenance).
        version_given: whether RUN.yaml named the version (else it is the day of the run, and
            a resumed run keeps the day it started: :meth:`with_version`).
    """

    attrs: Mapping[str, str]
    version: str
    tables: CordexTables
    source: Path
    version_given: bool = True

    def with_version(self, version: str) -> CordexRun:
        """The same run under another DRS version (a resumed run's first day)."""
        return dataclasses.replace(self, version=version)

    @property
    def tables_dir(self) -> Path:
        """The folder of the CV and tables (point ``cc6:tables_dir`` here)."""
        return self.tables.folder

    def realization(self, member: int | None) -> str:
        """``version_realization`` of an ensemble member (0-based; None: the run's own).

        Member k of a generative ensemble is published as realization ``r<base + k>`` of the
        same version: the CORDEX-CMIP6 way of storing several realizations of one model.
        """
        base = self.attrs["version_realization"]
        if member is None:
            return base
        v, r = base.split("-r")
        return f"{v}-r{int(r) + member}"


def _describe(value: object) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def _allowed(values: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _cv_key(tables: CordexTables, key: str, value: str, where: str) -> Mapping[str, Any] | str:
    entries = tables.cv.get(key)
    if not isinstance(entries, Mapping):
        raise ConfigError(f"the CV in {tables.folder} has no {key!r} list.")
    if value not in entries:
        raise ConfigError(
            f"{where}: {key} {value!r} is not in the CORDEX-CMIP6 controlled vocabulary "
            f"(allowed: {_allowed(sorted(entries))})."
        )
    entry: Mapping[str, Any] | str = entries[value]
    return entry


def _first(value: object) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


def load_run(path: str | Path, *, today: dt.date | None = None) -> CordexRun:
    """Read RUN.yaml and check every value against the CV, before any work.

    Args:
        path: the YAML file (a mapping of the keys in :data:`REQUIRED_KEYS` and
            :data:`OPTIONAL_KEYS`).
        today: the day whose ``vYYYYMMDD`` is the default DRS version (None: today, UTC).

    Returns:
        The run's shared global attributes and DRS version.

    Raises:
        ConfigError: an unreadable file, a missing, unknown or malformed key, or a value
            outside the controlled vocabulary (one sentence naming the key and the value).
    """
    source = Path(path)
    where = str(source)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"the run metadata file {source} does not exist.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the run metadata file {source}: {err}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}".rstrip(".") + ".") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} should be a YAML mapping of CORDEX-CMIP6 attributes.")
    unknown = sorted(str(k) for k in raw if k not in REQUIRED_KEYS and k not in OPTIONAL_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
            f"{', '.join((*REQUIRED_KEYS, *OPTIONAL_KEYS))}."
        )
    missing = [k for k in REQUIRED_KEYS if raw.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: required attribute(s) missing: {', '.join(missing)}.")
    values: dict[str, str] = {}
    for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
        v = raw.get(key, OPTIONAL_KEYS.get(key))
        if v is None:
            continue
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{where}: {key} should be a non-empty text, not {_describe(v)}.")
        values[key] = v.strip()

    tables_dir = values.pop("cmor_tables", None)
    if tables_dir is not None:
        folder = Path(tables_dir).expanduser()
        if not folder.is_absolute():
            folder = source.parent / folder
        tables = CordexTables.read(folder)
    else:
        tables = CordexTables.read()
    return _check(values, tables, source, today or dt.datetime.now(dt.timezone.utc).date())


def _check(values: dict[str, str], tables: CordexTables, source: Path, today: dt.date) -> CordexRun:
    where = str(source)
    cv = tables.cv
    for key in ("activity_id", "domain_id", "institution_id", "driving_experiment_id"):
        _cv_key(tables, key, values[key], where)
    for key in (*REQUIRED_KEYS, "activity_id", "version_realization"):
        if key != "contact" and not _SAFE.fullmatch(values[key]):
            raise ConfigError(f"{where}: {key} {values[key]!r} is not a valid DRS component.")
    if not _VARIANT.fullmatch(values["driving_variant_label"]):
        raise ConfigError(
            f"{where}: driving_variant_label {values['driving_variant_label']!r} should look like "
            "r1i1p1f1 (r<k>i<l>p<m>f<n>, each at least 1)."
        )
    if not _REALIZATION.fullmatch(values["version_realization"]):
        raise ConfigError(
            f"{where}: version_realization {values['version_realization']!r} should look like "
            "v1-r1 (v<version>-r<realization>, each at least 1)."
        )
    given = values.pop("version", None)
    version = given or f"v{today:%Y%m%d}"
    if not valid_version(version):
        raise ConfigError(
            f"{where}: version {version!r} should be v followed by a date (vYYYYMMDD)."
        )

    source_entry = _cv_key(tables, "source_id", values["source_id"], where)
    driving = _cv_key(tables, "driving_source_id", values["driving_source_id"], where)
    if not isinstance(source_entry, Mapping) or not isinstance(driving, Mapping):
        raise ConfigError(f"the CV in {tables.folder} has an unexpected source_id structure.")
    activities = source_entry.get("activity_participation")
    if isinstance(activities, list) and values["activity_id"] not in activities:
        log.warning(
            "source_id %s is registered in the CV for %s, not %s: register the emulator in the "
            "CORDEX-CMIP6 CV (and point cmor_tables at the new CV) before publishing",
            values["source_id"],
            "/".join(map(str, activities)),
            values["activity_id"],
        )
    owners = source_entry.get("institution_id", [])
    if values["institution_id"] not in owners:
        raise ConfigError(
            f"{where}: source_id {values['source_id']!r} is registered by "
            f"{_allowed(list(owners))}, not by institution_id {values['institution_id']!r}."
        )
    drivers = driving.get("driving_institution_id", [])
    if values["driving_institution_id"] not in drivers:
        raise ConfigError(
            f"{where}: driving_institution_id {values['driving_institution_id']!r} did not run "
            f"{values['driving_source_id']} (the CV names {_allowed(list(drivers))})."
        )
    if values["driving_experiment_id"] == "evaluation" and (
        values["driving_source_id"] != "ERA5" or values["driving_variant_label"] != "r1i1p1f1"
    ):
        raise ConfigError(
            f"{where}: an evaluation run is driven by ERA5 with driving_variant_label r1i1p1f1."
        )

    domain = _cv_key(tables, "domain_id", values["domain_id"], where)
    experiment = _cv_key(tables, "driving_experiment_id", values["driving_experiment_id"], where)
    attrs: dict[str, str] = {
        "project_id": PREFIX,
        "activity_id": values["activity_id"],
        "mip_era": _first(cv.get("mip_era", ["CMIP6"])),
        "product": _first(cv.get("product", ["model-output"])),
        "Conventions": _first(cv.get("Conventions", ["CF-1.11"])),
        "domain_id": values["domain_id"],
        "domain": str(domain.get("domain", "")) if isinstance(domain, Mapping) else str(domain),
        "institution_id": values["institution_id"],
        "institution": str(_cv_key(tables, "institution_id", values["institution_id"], where)),
        "source_id": values["source_id"],
        "source": _first(source_entry.get("source", values["source_id"])),
        "source_type": str(source_entry.get("source_type", "")),
        "license": str(source_entry.get("license", _first(cv.get("license", [""])))),
        "driving_source_id": values["driving_source_id"],
        "driving_source": str(driving.get("driving_source", "")),
        "driving_institution_id": values["driving_institution_id"],
        "driving_experiment_id": values["driving_experiment_id"],
        "driving_experiment": str(experiment.get("driving_experiment", ""))
        if isinstance(experiment, Mapping)
        else str(experiment),
        "driving_variant_label": values["driving_variant_label"],
        "version_realization": values["version_realization"],
        "contact": values["contact"],
    }
    for key in ("version_realization_info", "references", "comment", "further_info_url"):
        if key in values:
            attrs[key] = values[key]
    return CordexRun(
        {k: v for k, v in attrs.items() if v != ""}, version, tables, source, given is not None
    )


def valid_version(version: str) -> bool:
    """Whether ``version`` is ``v`` and a real date (``v20261207``)."""
    if not _VERSION.fullmatch(version):
        return False
    try:
        dt.datetime.strptime(version[1:], "%Y%m%d")
    except ValueError:
        return False
    return True


#: the years each driving experiment covers (a run outside them is mislabelled)
EXPERIMENT_YEARS: dict[str, tuple[int | None, int | None]] = {
    "historical": (None, 2014),
    **{f"ssp{n}": (2015, None) for n in ("119", "126", "245", "370", "585")},
}


def check_period(run: CordexRun, first: int, last: int) -> None:
    """Refuse a period outside the driving experiment's years (historical ends in 2014, the
    scenarios start in 2015), before any work.

    Raises:
        ConfigError: naming the experiment, its years and the run's.
    """
    exp = run.attrs["driving_experiment_id"]
    lo, hi = EXPERIMENT_YEARS.get(exp, (None, None))
    if (lo is not None and first < lo) or (hi is not None and last > hi):
        span = f"{lo or '...'}-{hi or '...'}"
        raise ConfigError(
            f"{run.source}: driving_experiment_id {exp} covers {span}, but the run spans "
            f"{first}-{last}; downscale each experiment's years on their own (--start/--end)."
        )


def _template(tables: CordexTables, key: str) -> list[str]:
    drs = tables.cv.get("DRS", {})
    text = drs.get(key, "") if isinstance(drs, Mapping) else ""
    blocks = _DRS_BLOCK.findall(str(text))
    if not blocks:
        raise ConfigError(f"the CV in {tables.folder} has no DRS {key}.")
    return blocks


def _fill(blocks: list[str], values: Mapping[str, str]) -> list[str]:
    out = []
    for b in blocks:
        v = values.get(b)
        if v is None or not _SAFE.fullmatch(v):
            raise ConfigError(f"the DRS element {b!r} has no valid value ({v!r}).")
        out.append(v)
    return out


def drs_folder(run: CordexRun, variable: str, member: int | None = None) -> Path:
    """``<project_id>/<activity_id>/.../<variable_id>/<version>``: the DRS folder of a variable
    (relative), every element one path level from the CV's directory template."""
    values = {
        **run.attrs,
        "variable_id": variable,
        "frequency": "day",
        "version": run.version,
        "version_realization": run.realization(member),
    }
    return Path(*_fill(_template(run.tables, "directory_path_template"), values))


def drs_filename(run: CordexRun, variable: str, period: str, member: int | None = None) -> str:
    """``<variable_id>_<domain_id>_..._<frequency>_<period>.nc`` from the CV's file-name
    template; ``period`` is ``YYYYMMDD-YYYYMMDD`` (first and last day in the file)."""
    values = {
        **run.attrs,
        "variable_id": variable,
        "frequency": "day",
        "version_realization": run.realization(member),
    }
    return "_".join([*_fill(_template(run.tables, "filename_template"), values), period]) + ".nc"


def file_years(years: Sequence[int]) -> list[tuple[int, int]]:
    """The archive's split of daily data into files: five years each, ending in years that end
    in 0 or 5 (1981-1985, 1986-1990, ...); the first and last file of a series may be shorter.

    Args:
        years: the calendar years present (any order, repeats allowed).

    Returns:
        ``(first, last)`` year of each file, in order, for the years present only.
    """
    present = sorted(set(years))
    spans: dict[int, list[int]] = {}
    for y in present:
        spans.setdefault((y - 1) // 5, []).append(y)
    return [(v[0], v[-1]) for _, v in sorted(spans.items())]
