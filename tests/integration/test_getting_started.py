"""docs/getting-started.md works: its two programs talk over WebRTC through a real signaling server.

The page shows ``examples/getting_started/server.py`` and ``caller.py`` in full (a unit test
checks the page and the files agree); here they run as a newcomer runs them, each in its own
process, in a scratch directory (the server's ``./echo-data`` lands there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import trio
from netprocs import Processes, read_line_matching

pytestmark = pytest.mark.integration

PROGRAMS: Final = Path(__file__).resolve().parents[2] / "examples" / "getting_started"
# Bounds: server start (imports + registration), the caller's whole run, the server's exit.
START_BOUND: Final = 30
CALLER_BOUND: Final = 90
STOP_BOUND: Final = 30


async def _read_rest(proc: trio.Process) -> str:
    assert proc.stdout is not None
    chunks = []
    while data := await proc.stdout.receive_some():
        chunks.append(data)
    return b"".join(chunks).decode()


async def test_getting_started_two_processes(
    processes: Processes, signaling_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = await trio.lowlevel.open_process(
        [sys.executable, str(PROGRAMS / "server.py"), signaling_url],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    processes.procs.append(server)  # stopped by the fixture whatever happens
    with trio.fail_after(START_BOUND):
        ready = await read_line_matching(server, lambda line: "echo server ready" in line)
    assert "acme:echo#" in ready

    with trio.fail_after(CALLER_BOUND):
        caller = await trio.run_process(
            [sys.executable, str(PROGRAMS / "caller.py"), signaling_url],
            capture_stdout=True,
            capture_stderr=True,
            cwd=tmp_path,
            env=env,
            check=False,
        )
    out = caller.stdout.decode()
    assert caller.returncode == 0, f"{out}\n{caller.stderr.decode()}"
    for text in ("hello", "actr", "trio"):
        assert f"{text!r} -> {text!r}" in out, out
    assert out.rstrip().endswith("caller done"), out

    server.terminate()  # what Ctrl-C would do: a graceful shutdown
    with trio.fail_after(STOP_BOUND):
        rest = await _read_rest(server)
        assert await server.wait() == 0, rest
    assert "echoing b'hello'" in rest, rest
    assert rest.rstrip().endswith("echo server stopped"), rest
    assert (tmp_path / "echo-data" / "identity.json").is_file()
