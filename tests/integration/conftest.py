"""Fixtures for integration tests: processes that always stop, a real signaling server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from netprocs import LANES, Processes, read_line_matching


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long fault-injection variants")
    parser.addoption(
        "--flood-seconds",
        type=float,
        default=180.0,
        help="how long the soak's mixed flood (test_soak_flood.py) lasts",
    )


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    """True under ``--soak``: fault tests use their long sizes."""
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def flood_seconds(request: pytest.FixtureRequest) -> float:
    """``--flood-seconds``: the length of the soak's mixed flood."""
    return float(request.config.getoption("--flood-seconds"))


@pytest.fixture(params=LANES)
def lane(request: pytest.FixtureRequest) -> str:
    """The network lane a multi-process test runs on: "webrtc" or "websocket" (netprocs.py's
    lane_argv and lane_options put the nodes on it)."""
    return str(request.param)


@pytest.fixture
async def processes() -> AsyncIterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        await procs.stop_all()


@pytest.fixture
async def signaling_url(processes: Processes, tmp_path: Path) -> str:
    """A real ``actr-trio signaling`` process on 127.0.0.1 (random port); its ws:// URL."""
    proc = await processes.start(
        sys.executable,
        "-m",
        "actr_trio.cli",
        "signaling",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        str(tmp_path / "signaling.sqlite3"),
    )
    with trio.fail_after(30):
        line = await read_line_matching(proc, lambda text: "listening on" in text)
    return line.rsplit(" ", 1)[-1]
