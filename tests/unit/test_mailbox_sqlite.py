"""The durable mailbox's own layout and group commit (behaviour shared with the in-memory
mailbox is in test_mailbox.py): one table as queue and dedupe record, one transaction for
everything waiting (bounded, first come first served), migration of a version 1 file, and
dedupe keys that collide."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actr_trio import _mailbox_sqlcore
from actr_trio._lanes import Priority
from actr_trio._logging import MAILBOX
from actr_trio._mailbox import (
    DONE,
    PRUNE_INTERVAL,
    Accept,
    Accepted,
    DeadLetter,
    Duplicate,
    MailboxError,
    Outgoing,
    StoredEnvelope,
)
from actr_trio._mailbox_schema import SCHEMA_VERSION
from actr_trio._mailbox_sqlite import _MAX_BATCH, SqliteMailbox

WINDOW = 60.0


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def mailbox(path: Path, clock: FakeClock, **kwargs: Any) -> SqliteMailbox:
    return SqliteMailbox(path, clock=clock, dedupe_window=WINDOW, **kwargs)


@asynccontextmanager
async def running(mb: SqliteMailbox) -> AsyncIterator[SqliteMailbox]:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(mb.run)
            try:
                yield mb
            finally:
                nursery.cancel_scope.cancel()


def item(n: int | str, caller: str = "peer") -> Accept:
    return Accept(caller, f"r{n}", Priority.NORMAL, f"payload {n}".encode())


def accepted(outcome: object) -> StoredEnvelope:
    assert isinstance(outcome, Accepted), outcome
    return outcome.envelope


def rows(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT id, request_id, state, data, response, finished_at FROM queue ORDER BY id"
        ).fetchall()


# -- one table: the queue row is the dedupe record ---------------------------------------------


async def test_a_handled_request_keeps_its_row_until_the_window_prunes_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "mailbox.sqlite3"
    # (The file is read between sessions: a running mailbox holds it exclusively.)
    async with running(mailbox(path, clock)) as mb:
        call, tell = (accepted(o) for o in await mb.accept([item(1), item(2)]))
    assert rows(path) == [
        (call.id, "r1", 0, b"payload 1", None, None),
        (tell.id, "r2", 0, b"payload 2", None, None),
    ]
    async with running(mailbox(path, clock)) as mb:
        mb.complete(call.id, b"answer")
        mb.complete(tell.id, None)
        await mb.flush()
        assert mb.statistics().dedupe_entries == 2
    # Done: the same row, its payload dropped, its response and time kept.
    assert rows(path) == [
        (call.id, "r1", DONE, b"", b"answer", 1000.0),
        (tell.id, "r2", DONE, b"", None, 1000.0),
    ]
    with closing(sqlite3.connect(path)) as db:
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert tables == {"queue", "dead_letters", "outbox", "meta"}

    clock.now += WINDOW  # restarted, still inside the window: answered from the rows
    async with running(mailbox(path, clock)) as mb:
        assert await mb.accept([item(1), item(2)]) == [
            Duplicate(b"answer", pending=False),
            Duplicate(None, pending=False),
        ]
        assert mb.statistics().accepted == 0
        clock.now += PRUNE_INTERVAL  # now past the window: the next commit prunes them
        await mb.flush()
        assert mb.statistics().dedupe_entries == 0
        # Forgotten: the same request is a new one now.
        assert accepted((await mb.accept([item(1)]))[0]).id > tell.id
    assert [row[1] for row in rows(path)] == ["r1"]


async def test_an_expired_entry_is_accepted_anew_in_its_row(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(mailbox(path, clock)) as mb:
        first = accepted((await mb.accept([item(1)]))[0])
        mb.complete(first.id, b"old answer")
        await mb.flush()
        clock.now += WINDOW + 0.5  # expired, not yet pruned (prune waits PRUNE_INTERVAL)
        again = accepted((await mb.accept([item(1)]))[0])
        assert again.id > first.id
        assert mb.statistics().dedupe_entries == 1
    assert rows(path) == [(again.id, "r1", 0, b"payload 1", None, None)]


# -- group commit -------------------------------------------------------------------------------


async def test_one_transaction_for_concurrent_accepts_and_completions(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with running(mailbox(tmp_path / "m.sqlite3", clock)) as mb:
        handled = [accepted(o) for o in await mb.accept([item(f"h{n}") for n in range(256)])]
        before = mb.statistics()
        outcomes: list[object] = []

        async def one(n: int) -> None:
            outcomes.extend(await mb.accept([item(n)]))

        for env in handled:
            mb.complete(env.id, None)
        async with trio.open_nursery() as nursery:
            for n in range(256):
                nursery.start_soon(one, n)
        after = mb.statistics()
        # 256 accepts and 256 completions, each waiting on its own: one commit, one wakeup.
        assert after.transactions == before.transactions + 1
        assert (after.accepted - before.accepted, after.completed - before.completed) == (256, 256)
        assert len({accepted(o).id for o in outcomes}) == 256


async def test_group_commit_is_bounded_and_first_come_first_served(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with running(mailbox(tmp_path / "m.sqlite3", clock)) as mb:
        before = mb.statistics().transactions
        joined: list[int] = []
        ids: dict[int, int] = {}

        async def one(n: int) -> None:
            joined.append(n)  # accept joins (or queues) before its first yield
            ids[n] = accepted((await mb.accept([item(n)]))[0]).id

        async with trio.open_nursery() as nursery:
            for n in range(3 * _MAX_BATCH):
                nursery.start_soon(one, n)
        # Exactly full batches: those that found the batch full waited their turn, in order.
        assert mb.statistics().transactions == before + 3
        assert [ids[n] for n in joined] == sorted(ids.values())
        # One accept larger than the bound is never split: it commits alone, whole.
        big = await mb.accept([item(f"big{n}") for n in range(_MAX_BATCH + 1)])
        assert all(isinstance(o, Accepted) for o in big)
        assert mb.statistics().transactions == before + 4


async def test_a_caller_cancelled_while_waiting_its_turn_queued_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    mb = mailbox(tmp_path / "m.sqlite3", clock)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # Not running yet: the open batch fills up and stays full.
            nursery.start_soon(mb.accept, [item(f"f{n}") for n in range(_MAX_BATCH)])
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                nursery.start_soon(lambda: _cancel_soon(scope))
                await mb.accept([item("late")])
            assert scope.cancelled_caught
            await nursery.start(mb.run)
            pending = await mb.pending()
            assert len(pending) == _MAX_BATCH
            assert "rlate" not in {e.request_id for e in pending}
            nursery.cancel_scope.cancel()


async def _cancel_soon(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


# -- schema versions ----------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE queue (id INTEGER PRIMARY KEY, caller TEXT NOT NULL, request_id TEXT NOT NULL,
    priority INTEGER NOT NULL, data BLOB NOT NULL, attempts INTEGER NOT NULL);
CREATE TABLE seen (caller TEXT NOT NULL, request_id TEXT NOT NULL, state INTEGER NOT NULL,
    response BLOB, finished_at REAL, PRIMARY KEY (caller, request_id)) WITHOUT ROWID;
CREATE INDEX seen_expiry ON seen (finished_at) WHERE state = 1;
CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL UNIQUE,
    caller TEXT NOT NULL, request_id TEXT NOT NULL, priority INTEGER NOT NULL,
    data BLOB NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE outbox (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL, lane INTEGER NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL,
    deadline_ms INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO queue VALUES (3, 'peer', 'r3', 2, x'03', 2), (7, 'other', 'r7', 3, x'07', 1);
INSERT INTO dead_letters VALUES (1, 5, 'peer', 'r5', 1, x'05', 4, 'poison', 990.0),
    (2, 4, 'peer', 'r4', 2, x'04', 3, 'raised', 995.0);
INSERT INTO seen VALUES ('peer', 'r3', 0, NULL, NULL), ('other', 'r7', 0, NULL, NULL),
    ('peer', 'r5', 2, NULL, NULL), ('peer', 'r4', 2, NULL, NULL),
    ('peer', 'r1', 1, x'aa', 980.0), ('peer', 'r2', 1, NULL, 985.0);
INSERT INTO outbox VALUES (1, 'out1', 'target', 1, 2, x'0102', 0);
INSERT INTO meta VALUES ('last_id', 8);
PRAGMA user_version = 1;
"""


async def test_a_version_1_mailbox_is_migrated_when_opened(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MAILBOX)
    path = tmp_path / "mailbox.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(V1_SCHEMA)
    async with running(mailbox(path, clock)) as mb:
        # Pending envelopes keep their ids and attempts, dead letters their order and reason.
        assert await mb.pending() == [
            StoredEnvelope(3, "peer", "r3", Priority(2), b"\x03", 2),
            StoredEnvelope(7, "other", "r7", Priority(3), b"\x07", 1),
        ]
        assert await mb.dead_letters() == [
            DeadLetter(StoredEnvelope(5, "peer", "r5", Priority(1), b"\x05", 4), "poison", 990.0),
            DeadLetter(StoredEnvelope(4, "peer", "r4", Priority(2), b"\x04", 3), "raised", 995.0),
        ]
        assert await mb.outgoing() == [Outgoing("out1", "target", 1, 2, b"\x01\x02", 0)]
        # Every key is still a duplicate: finished (with the response), pending, dead.
        assert await mb.accept([item(1), item(2), item(3), item(7, caller="other"), item(5)]) == [
            Duplicate(b"\xaa", pending=False),
            Duplicate(None, pending=False),
            Duplicate(None, pending=True),
            Duplicate(None, pending=True),
            Duplicate(None, pending=False, dead_lettered=True),
        ]
        # Ids are never reused: finished entries took ids after every old one.
        assert accepted((await mb.accept([item(9)]))[0]).id > 10
        stats = mb.statistics()
        assert (stats.dead_letters, stats.pending, stats.dedupe_entries) == (2, 3, 7)
        mb.complete(3, b"done")
        (again,) = await mb.redrive(5)
        assert again.request_id == "r5"
    assert "schema 1 migrated to 2 (2 pending, 2 dead letters, 2 finished)" in caplog.text
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert tables == {"queue", "dead_letters", "outbox", "meta"}


async def test_a_newer_schema_is_refused_naming_it(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "mailbox.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with trio.fail_after(10), pytest.raises(MailboxError, match="newer than this actr_trio"):
        await mailbox(path, clock).run()


# -- dedupe keys that collide -------------------------------------------------------------------


@pytest.fixture
def colliding_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (caller, request_id) hashes to one of two keys."""
    monkeypatch.setattr(
        _mailbox_sqlcore,
        "dedupe_key_function",
        lambda salt: lambda caller, request_id: ord(request_id[-1]) % 2,
    )


@pytest.mark.usefixtures("colliding_keys")
async def test_colliding_keys_are_still_exact(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(mailbox(path, clock)) as mb:
        # r1 and r3 share a key, as do r2 and r4: all four are distinct requests.
        envs = [accepted(o) for o in await mb.accept([item(1), item(2), item(3), item(4)])]
        assert await mb.accept([item(1), item(4)]) == [Duplicate(None, pending=True)] * 2
        mb.complete(envs[0].id, b"one")  # the keyed row of r1
        await mb.flush()  # (completions are stamped with their commit's time)
        clock.now += 30
        mb.complete(envs[2].id, b"three")  # r3 (collided: found by its text)
        await mb.flush()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM queue WHERE key IS NULL").fetchone() == (2,)
    clock.now += WINDOW - 29 + PRUNE_INTERVAL  # r1's entry expires and is pruned, r3's not
    async with running(mailbox(path, clock)) as mb:
        await mb.flush()
        assert await mb.accept([item(3)]) == [Duplicate(b"three", pending=False)]
        again = accepted((await mb.accept([item(1)]))[0])  # r1 is new again
        assert again.id > envs[3].id
        assert await mb.accept([item(1), item(3)]) == [
            Duplicate(None, pending=True),
            Duplicate(b"three", pending=False),
        ]
