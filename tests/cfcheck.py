"""The CF conformance check the tests share: errors of the IOOS compliance checker's CF-1.10 suite."""

from __future__ import annotations

import json
from pathlib import Path


def cf_errors(path: Path) -> list[str]:
    """Errors (high-priority messages, not warnings) of ``compliance-checker --test cf:1.10``."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    out = path.with_suffix(".cf.json")
    ComplianceChecker.run_checker(
        str(path), ["cf:1.10"], 0, "normal", output_filename=str(out), output_format="json"
    )
    report = json.loads(out.read_text())["cf:1.10"]
    return [m for item in report.get("high_priorities", []) for m in item["msgs"]]
