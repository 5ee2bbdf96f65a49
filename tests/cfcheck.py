"""The conformance checks the tests share: errors of the IOOS compliance checker's CF suite, and
the "Required" failures of its CORDEX-CMIP6 suite (plugin ``cc-plugin-cc6``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def _high_priorities(
    path: Path, suite: str, options: dict[str, dict[str, Any]] | None = None
) -> list[str]:
    """High-priority messages of one compliance-checker suite on ``path`` (the JSON report goes
    to a temporary folder, not beside the file)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        ComplianceChecker.run_checker(
            str(path),
            [suite],
            0,
            "normal",
            output_filename=str(out),
            output_format="json",
            options=options,
        )
        report = json.loads(out.read_text())[suite]
    return [m for item in report.get("high_priorities", []) for m in item["msgs"]]


def cf_errors(path: Path, version: str = "1.10") -> list[str]:
    """Errors (high-priority messages, not warnings) of ``compliance-checker --test cf:1.10``."""
    return _high_priorities(path, f"cf:{version}")


def cc6_required(path: Path, tables_dir: Path) -> list[str]:
    """Failures in the "Required" section of ``compliance-checker --test=cc6`` with the plugin's
    ``tables_dir`` option on ``tables_dir`` (offline: the plugin downloads only missing tables)."""
    from cc_plugin_cc6 import __version__

    return _high_priorities(
        path, f"cc6:{__version__}", options={"cc6": {"tables_dir": str(tables_dir)}}
    )
