"""One node per ``data_dir``: the ``node.lock`` file.

A node holds an exclusive ``flock`` on ``data_dir/node.lock`` from before its mailbox opens until
it has stopped; the file holds the holder's pid, for the message a second node gets. The kernel
releases the lock when the holder's process dies, so a lock file left behind by a crash never
blocks the next start (its stale pid is simply overwritten). ``flock`` locks belong to the open
file, not the process, so two nodes in one process exclude each other too.

On Windows (no ``flock``) no lock is taken; SQLite's exclusive lock on the mailbox still refuses
a second node there, with a less helpful message.

The directory and its files are private to the user running the node: a ``data_dir`` the node
creates is mode 0700, and every file it writes there is 0600 (files from older versions are
tightened when opened). An existing directory keeps its mode; one that other users may write to
draws a warning, since they could replace the node's identity.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from ._logging import NODE
from .errors import ConfigError, DataDirInUse

if sys.platform != "win32":
    import fcntl

LOCK_FILE: Final = "node.lock"
#: Mode of a data_dir the node creates: only its owner may list, read or change it.
DIR_MODE: Final = 0o700
#: Mode of every file the node writes into its data_dir.
FILE_MODE: Final = 0o600
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


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) with the last one at mode 0700; no-op if it exists.

    Raises:
        OSError: it cannot be created.
    """
    # mkdir's mode applies to the last component only; parents get the usual umask default.
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and only its owner may read or write it (mode 0600).

    For files a library creates with the umask (SQLite): creating it first, empty, at 0600,
    makes SQLite keep that mode (its WAL file copies the database's).

    Raises:
        OSError: it cannot be created or its mode changed.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        _tighten(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 (a crash leaves old or new, whole).

    Raises:
        OSError: it cannot be written.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        _tighten(fd)  # a .tmp left by an older version may be 0644
        os.write(fd, data)
    finally:
        os.close(fd)
    tmp.replace(path)


def _tighten(fd: int) -> None:
    if sys.platform != "win32" and stat.S_IMODE(os.fstat(fd).st_mode) & ~FILE_MODE:
        os.fchmod(fd, FILE_MODE)


def _warn_if_shared(data_dir: Path) -> None:
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    # Writable by others (and not sticky): they could replace identity.json or the node key.
    if mode & 0o022 and not mode & stat.S_ISVTX:
        logging.getLogger(NODE).warning(
            "data_dir %s is writable by other users (mode %04o): they could replace the "
            "node's identity; run 'chmod 700 %s'",
            data_dir,
            mode,
            data_dir,
        )


def _lock(data_dir: Path) -> int:
    path = data_dir / LOCK_FILE
    try:
        make_private_dir(data_dir)
        _warn_if_shared(data_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise ConfigError(f"data_dir {data_dir}: cannot create {LOCK_FILE}: {exc}") from exc
    try:
        _tighten(fd)  # a lock file left by an older version may be 0644
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
