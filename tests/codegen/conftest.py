"""Fixtures for the generator tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_proto(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_proto("name.proto", text)`` writes under ``tmp_path/protos`` and returns the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / "protos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
