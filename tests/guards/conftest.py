"""Fixtures of the inputkill and socketwatch tests."""

from __future__ import annotations

from typing import Iterator

import pytest
from guard_helpers import Cleanup


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    """Kills at the end of the test every process it was told about."""
    tracker = Cleanup()
    try:
        yield tracker
    finally:
        tracker.finish()
