"""Fixtures shared by the vision block tests (helpers are in _support.py)."""

from __future__ import annotations

import pytest
import torch

from tests.blocks.vision._support import image_batch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads mostly wait on each other.
    Use it for a whole test module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """The (2, 3, 64, 64) image batch from seed 1, one per test module."""
    return image_batch(64, batch=2)
