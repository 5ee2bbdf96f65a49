"""Damaged-file fuzzing for the CLI: the case type, byte-level damage, and the judge.

Every ``climdl`` command given a damaged file must end in a result or in one sentence with
exit 2, never a traceback, a crash or a hang (issue 13). Used by ``tests/safety/test_fuzz.py``
(NetCDF targets and predictors) and ``tests/cli/test_clouds_cli.py`` (satellite scenes).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from climdl.cli import main

SEED = 20261206
"""The corpus seed: the damage is deterministic, so a failure reproduces."""


@dataclass(frozen=True)
class Case:
    """One damaged file: ``name`` says what was done to it."""

    name: str
    path: Path


def byte_damage(data: bytes, rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    """Damage at the byte level: truncations and bit flips at seeded positions.

    Args:
        data: the clean file's bytes.
        rng: the seeded generator that picks the flipped bits.

    Returns:
        An iterator of (case name, damaged bytes): 7 truncations, 8 bit flips, zeros and text.
    """
    n = len(data)
    for frac in (0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.999):
        yield f"truncated-{frac}", data[: int(n * frac)]
    for k in range(8):
        buf = bytearray(data)
        # the header (first 4 KiB) is where a flip changes the structure, not just a value
        where = rng.integers(0, min(n, 4096) if k < 5 else n, size=1 + k)
        for w in where:
            buf[int(w)] ^= 1 << int(rng.integers(0, 8))
        yield f"bitflip-{k}", bytes(buf)
    yield "zeros", b"\0" * n
    yield "text", b"CDF\x01 this is not a netcdf file\n" * 10


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue().strip()


def _judge(case: Case, rc: int, err: str) -> str | None:
    """Why the outcome breaks the promise, or None."""
    if rc == 0:
        return None
    if rc != 2:
        return f"{case.name}: exit {rc}: {err[-300:]}"
    lines = [ln for ln in err.splitlines() if ln.startswith("climdl: error:")]
    if len(lines) != 1 or "Traceback" in err:
        return f"{case.name}: not one sentence: {err[-300:]}"
    return None


def run_cases(cases: list[Case], argv: Callable[[Case], list[str]]) -> tuple[int, list[str]]:
    """Run ``climdl`` once per case and judge each outcome.

    Args:
        cases: the damaged files.
        argv: the command-line arguments for one case.

    Returns:
        The number of cases run and one line per case that broke the promise (empty if none).
    """
    bad: list[str] = []
    for case in cases:
        try:
            rc, err = _cli(argv(case))
        except BaseException as exc:  # a traceback reached the user
            bad.append(f"{case.name}: {type(exc).__name__}: {exc}"[:300])
            continue
        why = _judge(case, rc, err)
        if why:
            bad.append(why)
    return len(cases), bad
