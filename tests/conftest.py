"""Suite-wide guards: no thread or child process outlives its test, and no hang at exit.

A leaked non-daemon thread (aiortc's codec threads were the case in point) makes the interpreter
wait for it in ``threading._shutdown`` after every test has passed, so CI runs out of time with
nothing to show. Here the test that leaks fails instead, naming the thread; and should anything
still hold the process at exit, a watchdog prints every thread's stack and exits non-zero.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Seconds a test's threads and processes get to finish after it (teardown is bounded: a
# thread still running past this is stuck, not slow).
SETTLE = 10.0
# Seconds the interpreter may take to exit once pytest is done.
EXIT_WATCHDOG = 60


def _child_processes() -> set[int]:
    """Live (not zombie) child processes of this process."""
    children = set()
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        state, ppid = fields[0], int(fields[1])
        if ppid == me and state != "Z":
            children.add(int(stat.parent.name))
    return children


def _lingering(before: set[threading.Thread]) -> list[threading.Thread]:
    deadline = time.monotonic() + SETTLE
    for thread in threading.enumerate():
        if thread in before or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threading.enumerate() if t not in before and not t.daemon and t.is_alive()]


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes() -> Iterator[None]:
    threads_before = set(threading.enumerate())
    children_before = _child_processes()
    yield
    leaked = _lingering(threads_before)
    assert not leaked, f"threads outlived the test: {[t.name for t in leaked]}"
    deadline = time.monotonic() + SETTLE
    while (children := _child_processes() - children_before) and time.monotonic() < deadline:
        time.sleep(0.05)  # a process the test stopped may still be exiting
    assert not children, f"child processes outlived the test: {sorted(children)}"


def pytest_unconfigure(config: pytest.Config) -> None:
    # Past this point nothing of ours should run: if the interpreter is still alive after
    # EXIT_WATCHDOG seconds, print every thread's stack and exit with an error.
    if sys.platform != "win32":
        faulthandler.dump_traceback_later(EXIT_WATCHDOG, exit=True)


@pytest.fixture(params=["direct", "wire"])
def envelope_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per path envelopes take between the nodes of one process: handed over
    as Python objects ("direct", what ``LocalRealm`` does by default) and encoded through the
    loopback transport ("wire", as between processes), so each guarantee is checked on both.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("envelope_path")``."""
    from actr_trio.testing import LocalRealm

    monkeypatch.setattr(LocalRealm, "DEFAULT_DIRECT", request.param == "direct")
    return str(request.param)
