"""Metres per unit of the length units that CF projection coordinates carry (m, km and their
spellings): one table for the grids, the GeoTIFF mask writer and the map projections.

Physical quantities (K, mm day-1, ...) go through the pint registry of
:mod:`climdl.data.units`; this table sits below the data layer because the grid code needs it.
"""

from __future__ import annotations

METRES_PER_UNIT: dict[str, float] = {
    **dict.fromkeys(("m", "metre", "meter", "metres", "meters"), 1.0),
    **dict.fromkeys(("km", "kilometre", "kilometer", "kilometres", "kilometers"), 1000.0),
}
"""Lower-case unit spelling -> metres per unit."""


def metres_per_unit(units: object) -> float | None:
    """Metres per unit of a length unit, or None for an unknown (or missing) one.

    Args:
        units: the unit text (a ``units`` attribute); case and surrounding blanks do not matter.

    Returns:
        1.0 for metres, 1000.0 for kilometres, None otherwise.
    """
    return METRES_PER_UNIT.get(str(units).strip().lower())
