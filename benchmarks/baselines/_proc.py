"""Child processes for the cross-process baselines: started, read, and always killed."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO

from benchmarks._harness import REPO_ROOT


def read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from a child's pipe, or TimeoutError (never blocks longer than ``timeout``)."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line from child within {timeout:g}s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise EOFError(f"child closed its output (got {buf!r})")
            buf += chunk
    return buf.decode().strip()


@contextlib.contextmanager
def python_child(module: str, args: Sequence[str] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m module args`` with pipes on stdin/stdout; killed and reaped on exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # inherited: the worker's log
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
