"""Paths the tests read: the repository, its configs and notebooks, and the stored fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
NOTEBOOKS = REPO / "notebooks"
FIXTURES = REPO / "tests" / "fixtures"
SHARED = REPO.parent / "shared"
"""The workspace's shared folder beside the repository (tests that need it skip without it)."""
