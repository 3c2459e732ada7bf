"""pytest fixtures for actr_trio users (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._realm import LocalRealm


@pytest.fixture
async def local_realm() -> AsyncIterator[LocalRealm]:
    """A :class:`LocalRealm` for one test (needs pytest-trio)."""
    async with LocalRealm() as realm:
        yield realm
