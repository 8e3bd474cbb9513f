"""Fixtures for the unit tests (helpers live in support.py)."""
from __future__ import annotations

import pytest

from .support import Memory, make_memory


@pytest.fixture
def mem() -> Memory:
    """A 64-frame machine with one empty address space."""
    return make_memory()
