"""Examples are tests: every program in ``examples/`` runs in both modes and prints what it shows.

Each example runs as ``python -m examples.<name> [--local]`` from the repo root, in a subprocess
bounded by :data:`TIMEOUT`: the default mode starts its own signaling server on 127.0.0.1 and a
worker process and talks over WebRTC; ``--local`` runs on a LocalRealm. The assertions read the
printed result, so an example that stopped showing what its README says fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from actr_trio.codegen import generate

pytestmark = pytest.mark.integration

REPO: Final = Path(__file__).resolve().parents[2]
# Per example run. The networked durable example is the slow one (about 40 s): its sender only
# notices the SIGKILLed receiver when ICE consent fails, then reconnects.
TIMEOUT: Final = 60

MODES: Final = pytest.mark.parametrize(
    "mode", [pytest.param((), id="webrtc"), pytest.param(("--local",), id="local")]
)


def run_example(name: str, mode: tuple[str, ...]) -> str:
    """Run ``examples.<name>``; its stdout, after checking it exited with status 0."""
    proc = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", *mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    expected = "LocalRealm" if mode else "WebRTC"
    assert expected in proc.stdout.splitlines()[0], proc.stdout
    return proc.stdout


@MODES
def test_echo(mode: tuple[str, ...]) -> None:
    out = run_example("echo", mode)
    for text in ("hello", "actr", "trio"):
        assert re.search(rf"echo\('{text}'\) -> '{text}' from examples:echo#\d+@", out), out
    assert "ping(7) -> 7" in out


def test_echo_generated_code_is_up_to_date(tmp_path: Path) -> None:
    committed = REPO / "examples" / "echo" / "_gen"
    generate([REPO / "protos" / "examples" / "echo.proto"], out_dir=tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    kept = {p.name: p.read_bytes() for p in committed.iterdir() if p.is_file()}
    assert kept == fresh, (
        "examples/echo/_gen is stale: run `actr-trio codegen protos/examples/echo.proto "
        "-I protos/examples -o examples/echo/_gen`"
    )


@MODES
def test_chat(mode: tuple[str, ...]) -> None:
    out = run_example("chat", mode)
    received = re.findall(r"^  \[lobby\] (.*)$", out, re.MULTILINE)
    history = re.search(r"^history of 'lobby': \[(.*)\]$", out, re.MULTILINE)
    assert history is not None, out
    assert len(received) == 5, out
    assert "received back over the stream, in order: True" in out
    assert history.group(1) == ", ".join(repr(text) for text in received)


@MODES
def test_priority(mode: tuple[str, ...]) -> None:
    out = run_example("priority", mode)
    handled = re.search(r"^told .* handled:\n  (.*)$", out, re.MULTILINE)
    assert handled is not None, out
    order = handled.group(1).split()
    # Every job was queued behind the paused one: HIGH first, then NORMAL, each in send order.
    assert order == ["H0", "H1", "H2", "H3"] + [f"n{i:02}" for i in range(20)], out
    assert "the HIGH jobs overtook 20 queued NORMAL jobs" in out


@MODES
def test_media(mode: tuple[str, ...]) -> None:
    out = run_example("media", mode)
    counted = re.search(r"viewer counted (\d+) of 30 frames \(64x48\)", out)
    assert counted is not None, out
    frames = int(counted.group(1))
    if mode:
        assert frames == 30, out  # the loopback transport delivers every frame
    else:
        assert 0 < frames <= 30, out  # RTP may lose a few


@MODES
def test_durable(mode: tuple[str, ...]) -> None:
    out = run_example("durable", mode)
    assert "restarting it on the same data dir" in out
    assert "(same ActrId: True)" in out
    assert re.search(r"^200 acked, 200 handled", out, re.MULTILINE), out
    assert "lost 0, duplicates 0" in out
