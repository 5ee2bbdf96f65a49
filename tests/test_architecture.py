"""The import layers of docs/architecture.md hold, and the check that enforces them bites.

The contracts live in pyproject.toml (``[tool.importlinter]``) and run in ``make lint``. The
first test runs them on the package; the second copies the package, adds a forbidden import
(an upward one, one between independent siblings, a job importing a training DataModule, a cycle
between two sibling modules) and checks that ``lint-imports`` names it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO as ROOT

# the lint-imports entry point, run with this interpreter (cwd goes first on sys.path)
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
    "--no-cache",
]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LINT, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold() -> None:
    """Imports point down the layers and no package has a cycle between its modules."""
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("module", "added", "expected"),
    [
        # the data layer reaching up to the command line
        ("data/units.py", "import climdl.cli", "climdl.data is not allowed to import climdl.cli"),
        # the two independent job packages importing each other
        (
            "evaluation/summary.py",
            "import climdl.inference.parts",
            "climdl.evaluation is not allowed to import climdl.inference",
        ),
        # inference rebuilding its inputs from the training DataModule module
        (
            "inference/job.py",
            "import climdl.data.emulator_data",
            "climdl.inference is not allowed to import climdl.data.emulator_data",
        ),
        # a cycle inside a package: netcdf already imports oserrors
        ("io/oserrors.py", "import climdl.io.netcdf", "No cycles are allowed in climdl.io"),
    ],
)
def test_contracts_catch_a_forbidden_import(
    tmp_path: Path, module: str, added: str, expected: str
) -> None:
    """A scratch copy of the package with one forbidden import fails the check, naming it."""
    shutil.copytree(
        ROOT / "climdl",
        tmp_path / "climdl",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nc", "*.npz", "LICENSE*"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "climdl" / module
    target.write_text(target.read_text() + f"\n{added}  # noqa: E402\n")
    run = _lint(tmp_path)
    assert run.returncode != 0
    assert expected in run.stdout, run.stdout + run.stderr
