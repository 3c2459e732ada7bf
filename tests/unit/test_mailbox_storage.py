"""A full or failing disk (issue 13 item 5): the durable mailbox refuses new envelopes with a
storage reason, keeps what it holds and retries writing it, and accepts again once a write
succeeds; the node keeps running and its senders get ``Overloaded``.

"Disk full" is real where it can be: ``PRAGMA max_page_count`` caps the file at its current
size (``SqliteMailbox.limit_pages``), so SQLite itself answers ``SQLITE_FULL``, and lifting the
cap is the space coming back. A cap still lets a completion through (it shrinks its row);
where every write must fail, as on a disk that is full for the WAL too, the commit is made to
fail with the same error (``failing_commits``).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actr_trio import ActrType, Context, Workload, route
from actr_trio._lanes import Priority
from actr_trio._mailbox import (
    STORAGE,
    Accept,
    Accepted,
    MailboxStorageError,
    Outgoing,
    Refused,
    StoredEnvelope,
)
from actr_trio._mailbox_schema import is_storage_error, translate
from actr_trio._mailbox_sqlcore import SqliteCore
from actr_trio._mailbox_sqlite import SqliteMailbox
from actr_trio.errors import Overloaded
from actr_trio.testing import LocalRealm

BIG = 16 * 1024  # a payload that needs new pages (several overflow pages of 4 KiB)
REFUSED = Refused(STORAGE)


def item(n: int | str, caller: str = "peer", size: int = BIG) -> Accept:
    return Accept(caller, f"r{n}", Priority.NORMAL, bytes(size))


def accepted(outcome: object) -> StoredEnvelope:
    assert isinstance(outcome, Accepted), outcome
    return outcome.envelope


@asynccontextmanager
async def running(path: Path, **kwargs: Any) -> AsyncIterator[SqliteMailbox]:
    mb = SqliteMailbox(path, **kwargs)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(mb.run)
            try:
                yield mb
            finally:
                nursery.cancel_scope.cancel()


@pytest.fixture
def failing_commits(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """While ``state["fail"]`` is set, every commit fails as on a full disk (after the
    transaction did its work, so the rollback is real); ``state["attempts"]`` counts them."""
    state = {"fail": 0, "attempts": 0}
    real_commit = SqliteCore.commit

    def commit(core: SqliteCore) -> None:
        if state["fail"]:
            state["attempts"] += 1
            core.rollback()
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = 13  # type: ignore[attr-defined]
            with translate("mailbox commit failed"):
                raise full
        real_commit(core)

    monkeypatch.setattr(SqliteCore, "commit", commit)
    return state


def test_what_counts_as_a_storage_error() -> None:
    def sqlite_error(code: int, message: str = "x") -> sqlite3.Error:
        exc = sqlite3.OperationalError(message)
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        return exc

    assert is_storage_error(sqlite_error(13))  # SQLITE_FULL
    assert is_storage_error(sqlite_error(10))  # SQLITE_IOERR
    assert is_storage_error(sqlite_error(10 | 3 << 8))  # SQLITE_IOERR_WRITE
    assert is_storage_error(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_error(OSError(errno.EIO, "Input/output error"))
    assert not is_storage_error(sqlite_error(19))  # SQLITE_CONSTRAINT: a bug, not the disk
    assert not is_storage_error(sqlite_error(5))  # SQLITE_BUSY
    assert not is_storage_error(OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(MailboxStorageError), translate("commit"):
        raise sqlite_error(13, "database or disk is full")


async def test_a_full_disk_refuses_new_envelopes_keeps_the_rest_and_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(path) as mb:
        # Small rows: updating them in place needs no new page (a row with overflow pages
        # is rewritten whole, which a full file may not take).
        held = [accepted(o) for o in await mb.accept([item(n, size=10) for n in (1, 2, 3)])]
        await mb.limit_pages(0)  # the disk is full now
        assert await mb.accept([item(4), item(5)]) == [REFUSED, REFUSED]
        stats = mb.statistics()
        assert stats.storage_failing
        assert stats.storage_errors >= 1
        assert stats.refused_storage == stats.refused == 2
        assert await mb.accept([item(6)]) == [REFUSED]
        # What it holds is still served: read, counted, completed (a completion shrinks its
        # row: it fits in the capped file).
        assert [e.id for e in await mb.pending()] == [e.id for e in held]
        assert await mb.begin_attempt(held[1].id) == 2
        mb.complete(held[0].id, b"answer")
        await mb.flush()
        assert [e.id for e in await mb.pending()] == [held[1].id, held[2].id]
        # Space comes back: the next write succeeds and accepting resumes at once (the
        # episode ends with the first new envelope written).
        await mb.limit_pages(None)
        assert mb.statistics().storage_failing
        fresh = accepted((await mb.accept([item(4)]))[0])
        stats = mb.statistics()
        assert not stats.storage_failing
        assert (stats.accepted, stats.completed, stats.refused_storage) == (4, 1, 3)
    # Nothing refused was kept; everything accepted was.
    async with running(path) as mb:
        assert [e.request_id for e in await mb.pending()] == ["r2", "r3", "r4"]
        assert (await mb.pending())[-1].id == fresh.id
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_held_work_that_cannot_be_written_waits_and_is_never_lost(
    tmp_path: Path, failing_commits: dict[str, int]
) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(path) as mb:
        a, b, c = (accepted(o) for o in await mb.accept([item(1), item(2), item(3)]))
        failing_commits["fail"] = 1  # nothing can be written, not even a completion
        mb.complete(a.id, b"answer")
        counted: list[int] = []
        written = trio.Event()

        async def count_attempt() -> None:
            counted.append(await mb.begin_attempt(b.id))
            written.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_attempt)
            assert await mb.accept([item(4)]) == [REFUSED]
            with pytest.raises(Overloaded) as refused:
                await mb.record_outgoing(Outgoing("out-1", "peer", 2, 2, b"x", 0))
            assert refused.value.code == STORAGE
            await trio.testing.wait_all_tasks_blocked()
            # The attempt is carried over from batch to batch: its caller waits.
            assert not written.is_set()
            assert failing_commits["attempts"] >= 2
            assert mb.statistics().storage_failing
            failing_commits["fail"] = 0  # space again
            await written.wait()
        assert counted == [2]
        await mb.flush()
        assert [e.id for e in await mb.pending()] == [b.id, c.id]
        assert mb.statistics().storage_errors == failing_commits["attempts"]
        assert accepted((await mb.accept([item(4)]))[0]).request_id == "r4"
        assert not mb.statistics().storage_failing


async def test_a_completion_never_written_is_replayed(
    tmp_path: Path, failing_commits: dict[str, int]
) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(path) as mb:
        a, b = (accepted(o) for o in await mb.accept([item(1), item(2)]))
        failing_commits["fail"] = 1
        mb.complete(a.id, b"answer")
        await trio.testing.wait_all_tasks_blocked()
    # Closed while the disk was still full: the completion was never committed, so the
    # envelope is still there to run again (at least once), not lost.
    failing_commits["fail"] = 0
    async with running(path) as mb:
        assert [e.id for e in await mb.pending()] == [a.id, b.id]


async def test_the_writer_backs_off_while_the_disk_is_full(
    tmp_path: Path, failing_commits: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actr_trio.mailbox")
    async with running(tmp_path / "mailbox.sqlite3") as mb:
        failing_commits["fail"] = 1
        refused = 0
        start = trio.current_time()
        for n in range(300):
            refused += (await mb.accept([item(n, size=10)])) == [REFUSED]
        elapsed = trio.current_time() - start
        assert refused == 300
        # At most one try per backoff (0.05 s, doubling), never one per accept.
        assert failing_commits["attempts"] <= 2 * (2 + elapsed / 0.05), (elapsed, failing_commits)
        failing_commits["fail"] = 0
        await mb.flush()
        accepted((await mb.accept([item("after")]))[0])
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One line for the whole episode (rate-limited), one when writing works again.
    assert len([line for line in lines if "cannot write" in line]) == 1, lines
    assert len([line for line in lines if "writes again" in line]) == 1, lines


class Store(Workload):
    actr_type = ActrType("acme", "store")

    def __init__(self, *, gated: bool = False) -> None:
        self.handled: list[bytes] = []
        self.gate = trio.Event()
        if not gated:
            self.gate.set()

    @route("demo.Store.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        await self.gate.wait()
        self.handled.append(request[:8])
        return b"ok"


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wire"])
async def test_a_node_whose_disk_fills_keeps_running_and_its_senders_get_overloaded(
    tmp_path: Path, direct: bool
) -> None:
    store = Store(gated=True)  # what it accepted stays pending: the file cannot shrink
    payload = b"payload-" + bytes(BIG)
    with trio.fail_after(60):
        async with (
            LocalRealm(direct=direct) as realm,
            realm.start(store, data_dir=tmp_path / "store") as a,
            realm.start(Sender()) as b,
        ):
            mailbox = a.mailbox
            assert isinstance(mailbox, SqliteMailbox)
            await mailbox.limit_pages(0)
            # The file's free pages (if any) take a few envelopes, then the disk is full.
            kept = 0
            with pytest.raises(Overloaded):  # noqa: PT012 - the loop ends with the refusal
                for _ in range(20):
                    await b.tell(a.actr_id, "demo.Store.Put", payload, timeout=0.5)
                    kept += 1
            with pytest.raises(Overloaded):
                await b.call(a.actr_id, "demo.Store.Put", payload, timeout=0.5)
            stats = a.statistics().mailbox
            assert stats.refused_storage > 0
            assert stats.storage_failing
            store.gate.set()  # it still serves what it holds
            await mailbox.limit_pages(None)  # space again
            await b.tell(a.actr_id, "demo.Store.Put", payload, timeout=5)
            assert await b.call(a.actr_id, "demo.Store.Put", payload, timeout=5) == b"ok"
            assert not a.statistics().mailbox.storage_failing
    assert store.handled == [b"payload-"] * (kept + 2)


async def test_a_durable_sender_whose_own_disk_is_full_gets_overloaded(tmp_path: Path) -> None:
    store = Store()
    with trio.fail_after(60):
        async with (
            LocalRealm() as realm,
            realm.start(store) as a,
            realm.start(Sender(), data_dir=tmp_path / "sender") as b,
        ):
            await b.tell(a.actr_id, "demo.Store.Put", b"first")
            mailbox = b.mailbox
            assert isinstance(mailbox, SqliteMailbox)
            await mailbox.limit_pages(0)
            # Its outbox cannot record the request: it is not sent, and the caller is told.
            with pytest.raises(Overloaded) as refused:
                await b.tell(a.actr_id, "demo.Store.Put", bytes(BIG), timeout=5)
            assert refused.value.code == STORAGE
            # A batch is recorded in one operation: one Overloaded, not a group of them.
            with pytest.raises(Overloaded) as refused:
                await b.tell_many(a.actr_id, "demo.Store.Put", [bytes(BIG)] * 3, timeout=5)
            assert refused.value.code == STORAGE
            await mailbox.limit_pages(None)
            await b.tell(a.actr_id, "demo.Store.Put", b"second", timeout=5)
            await b.tell_many(a.actr_id, "demo.Store.Put", [b"third", b"fourth"], timeout=5)
    assert store.handled == [b"first", b"second", b"third", b"fourth"]
