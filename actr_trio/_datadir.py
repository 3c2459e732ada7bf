"""One node per ``data_dir``: the ``node.lock`` file.

A node holds an exclusive ``flock`` on ``data_dir/node.lock`` from before its mailbox opens until
it has stopped; the file holds the holder's pid, for the message a second node gets. The kernel
releases the lock when the holder's process dies, so a lock file left behind by a crash never
blocks the next start (its stale pid is simply overwritten). ``flock`` locks belong to the open
file, not the process, so two nodes in one process exclude each other too.

On Windows (no ``flock``) no lock is taken; SQLite's exclusive lock on the mailbox still refuses
a second node there, with a less helpful message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from .errors import ConfigError, DataDirInUse

if sys.platform != "win32":
    import fcntl

LOCK_FILE: Final = "node.lock"
# Bytes read back from the lock file: a pid and a newline fit many times over.
_PID_READ: Final = 32


@contextmanager
def hold_data_dir(data_dir: Path | None) -> Iterator[None]:
    """Hold ``data_dir``'s lock for the block (creating the directory); no-op for ``None``.

    Raises:
        DataDirInUse: another node (in this process or another one) holds it.
        ConfigError: the directory or its lock file cannot be created.
    """
    if data_dir is None or sys.platform == "win32":
        yield
        return
    fd = _lock(data_dir)
    try:
        yield
    finally:
        _unlock(fd)


def _lock(data_dir: Path) -> int:
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"data_dir {data_dir}: cannot create {LOCK_FILE}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DataDirInUse(f"data_dir {data_dir} is in use by another node ({holder})") from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"data_dir {data_dir}: cannot lock {LOCK_FILE}: {exc}") from exc
    # Ours now: whatever pid is in the file is a dead holder's.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # while still holding it: the next reader never sees our stale pid
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    """``pid N`` of the holder, as its file says (empty while it is still writing it)."""
    try:
        text = os.pread(fd, _PID_READ, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if not text.isdigit():
        return "pid unknown"
    if int(text) == os.getpid():
        return f"in this process, pid {text}"
    return f"pid {text}"
