"""A node's data_dir is private: created 0700, every file in it 0600, whatever the umask."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from actr_trio import ActrType, Context, Workload, route
from actr_trio._datadir import private_file, write_private_file
from actr_trio.testing import LocalRealm


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def file_modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir() if p.is_file()}


def set_modes(directory: Path, dir_mode: int, file_mode: int | None = None) -> None:
    directory.chmod(dir_mode)
    if file_mode is not None:
        for path in directory.iterdir():
            path.chmod(file_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: anything created without an explicit mode would be world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
async def test_a_new_data_dir_and_every_file_in_it_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "nodes" / "echo"
    async with LocalRealm() as realm, realm.start(Echo(), data_dir=data_dir) as echo:
        await echo.call(
            echo.actr_id, "demo.Echo.Echo", b"hi"
        )  # the mailbox has written (and its WAL exists)
        assert mode(data_dir) == 0o700
        modes = file_modes(data_dir)
        # SQLite made the WAL file itself, copying the database file's mode.
        assert {"identity.json", "node.lock", "mailbox.sqlite3", "mailbox.sqlite3-wal"} <= set(
            modes
        )
        assert modes == dict.fromkeys(modes, 0o600)
    modes = file_modes(data_dir)
    assert modes == dict.fromkeys(modes, 0o600)


async def test_files_left_readable_by_an_older_version_are_tightened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalRealm() as realm:
        async with realm.start(Echo(), data_dir=tmp_path):
            pass
        # What an older version left: the directory and its files readable by everyone.
        set_modes(tmp_path, 0o755, 0o644)
        async with realm.start(Echo(), data_dir=tmp_path):
            modes = file_modes(tmp_path)
            assert modes == dict.fromkeys(modes, 0o600)
    # An existing directory keeps its mode (it may be shared on purpose); readable is no alarm.
    assert mode(tmp_path) == 0o755
    assert not [r for r in caplog.records if "writable by other users" in r.getMessage()]


async def test_a_data_dir_others_may_write_to_draws_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_modes(tmp_path, 0o777)
    try:
        async with LocalRealm() as realm, realm.start(Echo(), data_dir=tmp_path):
            pass
    finally:
        set_modes(tmp_path, 0o700)
    (warning,) = [r for r in caplog.records if "writable by other users" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert f"chmod 700 {tmp_path}" in warning.getMessage()


@pytest.mark.usefixtures("permissive_umask")
def test_private_files_are_created_and_replaced_at_0600(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_private_file(path, b"one")
    assert (path.read_bytes(), mode(path)) == (b"one", 0o600)
    path.chmod(0o666)
    write_private_file(path, b"two")
    assert (path.read_bytes(), mode(path)) == (b"two", 0o600)
    assert not (tmp_path / "f.tmp").exists()
    other = tmp_path / "g"
    private_file(other)
    assert (other.read_bytes(), mode(other)) == (b"", 0o600)
    other.write_bytes(b"kept")
    other.chmod(0o644)
    private_file(other)
    assert (other.read_bytes(), mode(other)) == (b"kept", 0o600)
