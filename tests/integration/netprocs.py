"""Process helpers for the integration tests (imported by conftest and tests)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

HERE = Path(__file__).resolve().parent


class Processes:
    """Starts processes and guarantees they are gone at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[trio.Process] = []

    async def start(self, *argv: str) -> trio.Process:
        proc = await trio.lowlevel.open_process([*argv], stdout=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    async def stop_all(self) -> None:
        with trio.CancelScope(shield=True):
            for proc in self.procs:
                proc.terminate()
            with trio.move_on_after(15):
                for proc in self.procs:
                    await proc.wait()
            for proc in self.procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


async def read_line_matching(proc: trio.Process, predicate: Callable[[str], bool]) -> str:
    """The first stdout line of ``proc`` for which ``predicate`` holds (bound it by the caller)."""
    assert proc.stdout is not None
    buffer = b""
    while True:
        data = await proc.stdout.receive_some()
        if not data:
            raise EOFError("process closed its stdout")
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            text = line.decode()
            if predicate(text):
                return text


def netnode_argv(name: str, url: str, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "netnode.py"), name, "--signaling", url, *extra]


#: The network lanes the multi-process tests run on (the ``lane`` fixture's parameters).
LANES = ("webrtc", "websocket")
#: Where a node takes direct WebSocket links on the WebSocket lane (any free loopback port).
LISTEN = "127.0.0.1:0"


def lane_argv(lane: str) -> list[str]:
    """The node-process options (netnode.py, tracenode.py, netsender.py) for ``lane``: on the
    WebSocket lane the node listens, so peers that find its address link to it directly (they
    prefer that to WebRTC); on the WebRTC lane it advertises nothing."""
    return ["--listen", LISTEN] if lane == "websocket" else []


def lane_options(lane: str) -> dict[str, str]:
    """The ``network_config`` options for a node of this process on ``lane`` (see lane_argv)."""
    return {"listen": LISTEN} if lane == "websocket" else {}
