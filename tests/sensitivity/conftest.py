"""Shared by the sensitivity tests: one torch thread per module (tiny convolutions run far faster
on one thread than on two contended ones, and one thread count gives the same float sums in
every run), restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Torch on one thread for the module, the caller's count restored after it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
