"""One number per diagnostic, and the comparison table of models with the best value marked.

The CORDEX ML-Bench evaluation asks that every diagnostic reduce to a single value, e.g. the
RMSE over all dimensions or the bias of an index as the spatial mean of its absolute values.
Each :class:`Row` holds that number for every model (the emulator and each baseline), the rule
that says which is best, and optionally the truth's own value for reference. For an ensemble
prediction the value is the mean over its members and ``spread`` their std, shown as
``"v ± s"`` and written as a ``spread`` entry (JSON) or column (CSV) only when a row has one,
so a deterministic evaluation's files keep their layout.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr

Better = Literal["lower", "higher", "one", "zero"]
#: How each rule scores a value (smaller score is better).
_SCORE = {
    "lower": lambda v: v,
    "higher": lambda v: -v,
    "one": lambda v: abs(v - 1.0),
    "zero": lambda v: abs(v),
}
BETTER_TEXT = {
    "lower": "lower is better",
    "higher": "higher is better",
    "one": "closest to 1 is best",
    "zero": "closest to 0 is best",
}


@dataclass
class Row:
    """One diagnostic of one variable reduced to one number per model."""

    variable: str
    key: str  #: machine name, e.g. ``rmse``, ``rmse_DJF``, ``bias_txx``
    label: str  #: human description, e.g. "RMSE (DJF)"
    units: str
    better: Better
    reduction: str  #: how the field became one number
    values: dict[str, float] = field(default_factory=dict)
    reference: float | None = None  #: the truth's own value (indices), for scale
    #: for an ensemble: the std over its members of their values (``values`` has their mean)
    spread: dict[str, float] = field(default_factory=dict)

    def best(self, tol: float = 1e-12) -> list[str]:
        """The model(s) with the best value (ties all marked); none unless two models have one."""
        scored = {m: _SCORE[self.better](v) for m, v in self.values.items() if _finite(v)}
        if len(scored) < 2:
            return []
        top = min(scored.values())
        return [m for m, s in scored.items() if s <= top + tol * max(1.0, abs(top))]


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def spatial_mean_abs(da: xr.DataArray) -> float:
    """Spatial mean of the absolute values (NaNs skipped): the benchmark's bias summary."""
    v = np.abs(np.asarray(da.values, dtype=np.float64))
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def spatial_mean(da: xr.DataArray) -> float:
    """Mean over all points (NaNs and infinities skipped)."""
    v = np.asarray(da.values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def models_of(rows: Sequence[Row]) -> list[str]:
    """The models in the rows, in first-seen order."""
    out: dict[str, None] = {}
    for r in rows:
        out.update(dict.fromkeys(r.values))
    return list(out)


def fmt(v: float | None) -> str:
    """A value with 4 significant digits (NaN as a dash)."""
    if not _finite(v):
        return "-"
    assert v is not None
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def cell(row: Row, model: str) -> str:
    """The table cell of ``model``: its value, ``"v ± s"`` for an ensemble with a spread."""
    s = row.spread.get(model)
    return f"{fmt(row.values.get(model))} ± {fmt(s)}" if _finite(s) else fmt(row.values.get(model))


def _has_spread(rows: Sequence[Row]) -> bool:
    return any(r.spread for r in rows)


def to_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Long format: one record per (row, model); a ``spread`` field when a row has one."""
    out = []
    spread = _has_spread(rows)
    for r in rows:
        best = set(r.best())
        for model, value in r.values.items():
            rec = {
                "variable": r.variable,
                "diagnostic": r.key,
                "label": r.label,
                "model": model,
                "value": value if _finite(value) else None,
                "units": r.units,
                "better": r.better,
                "best": model in best,
                "reference": r.reference if _finite(r.reference) else None,
                "reduction": r.reduction,
            }
            if spread:
                s = r.spread.get(model)
                rec["spread"] = s if _finite(s) else None
            out.append(rec)
    return out


def to_json(rows: Sequence[Row], meta: Mapping[str, Any]) -> str:
    """JSON text: ``{"meta": ..., "summary": {variable: {diagnostic: {...}}}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = asdict(r)
        d["values"] = {m: (v if _finite(v) else None) for m, v in r.values.items()}
        d["reference"] = r.reference if _finite(r.reference) else None
        d["best"] = r.best()
        if r.spread:  # ensembles only: deterministic summaries keep their layout
            d["spread"] = {m: (v if _finite(v) else None) for m, v in r.spread.items()}
        else:
            d.pop("spread")
        nested.setdefault(r.variable, {})[r.key] = d
    return json.dumps({"meta": dict(meta), "summary": nested}, indent=2, default=str)


def to_csv(rows: Sequence[Row]) -> str:
    """CSV text of :func:`to_records`."""
    buf = io.StringIO()
    records = to_records(rows)
    cols = [
        "variable",
        "diagnostic",
        "label",
        "model",
        "value",
        "units",
        "better",
        "best",
        "reference",
        "reduction",
    ]
    if _has_spread(rows):
        cols.insert(cols.index("value") + 1, "spread")
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(rec)
    return buf.getvalue()


def to_markdown(rows: Sequence[Row], *, variable: str | None = None) -> str:
    """A Markdown comparison table; the best value of each row in bold."""
    sel = [r for r in rows if variable is None or r.variable == variable]
    models = models_of(sel)
    head = ["variable", "diagnostic", "units", "truth", *models, "best is"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sel:
        best = set(r.best())
        cells = [f"**{cell(r, m)}**" if m in best else cell(r, m) for m in models]
        ref = fmt(r.reference) if r.reference is not None else ""
        texts = [r.variable, r.label, r.units, ref, *cells, BETTER_TEXT[r.better]]
        lines.append("| " + " | ".join(t.replace("|", "\\|") for t in texts) + " |")
    return "\n".join(lines) + "\n"
