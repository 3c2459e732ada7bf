"""Unit tests of the mailbox: every method on both implementations, on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actr_trio._config import Config
from actr_trio._lanes import Priority
from actr_trio._mailbox import (
    OVERLOADED,
    PRUNE_INTERVAL,
    Accept,
    Accepted,
    DeadLetter,
    Duplicate,
    Mailbox,
    MailboxError,
    Refused,
    StoredEnvelope,
    UnknownEnvelope,
    open_mailbox,
)
from actr_trio._mailbox_memory import MemoryMailbox
from actr_trio._mailbox_sqlite import SqliteMailbox

WINDOW = 60.0


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Factory = Callable[..., Mailbox]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Factory:
    def make(**kwargs: Any) -> Mailbox:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("dedupe_window", WINDOW)
        if request.param == "sqlite":
            return SqliteMailbox(tmp_path / "data" / "mailbox.sqlite3", **kwargs)
        return MemoryMailbox(**kwargs)

    return make


@asynccontextmanager
async def running(mailbox: Mailbox) -> AsyncIterator[Mailbox]:
    """Run the mailbox's writer for the block, then cancel it (which closes the mailbox)."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(mailbox.run)
            try:
                yield mailbox
            finally:
                nursery.cancel_scope.cancel()


def item(n: int | str, priority: Priority = Priority.NORMAL, caller: str = "peer") -> Accept:
    return Accept(caller, f"r{n}", priority, f"payload {n}".encode())


def accepted(outcome: object) -> StoredEnvelope:
    assert isinstance(outcome, Accepted), outcome
    return outcome.envelope


async def test_accept_returns_outcomes_in_order_with_increasing_ids(make: Factory) -> None:
    async with running(make()) as mb:
        outcomes = await mb.accept([item(1), item(2, Priority.HIGH), item(3, Priority.LOW)])
        envelopes = [accepted(o) for o in outcomes]
        assert [e.request_id for e in envelopes] == ["r1", "r2", "r3"]
        assert [e.id for e in envelopes] == sorted(e.id for e in envelopes)
        assert envelopes[1] == StoredEnvelope(
            envelopes[1].id, "peer", "r2", Priority.HIGH, b"payload 2", 1
        )
        assert await mb.accept([]) == []
        assert await mb.pending() == envelopes
        stats = mb.statistics()
        assert (stats.accepted, stats.replayed, stats.pending) == (3, 3, 3)
        assert dict(stats.pending_by_priority) == {
            Priority.HIGH: 1,
            Priority.NORMAL: 1,
            Priority.LOW: 1,
        }


async def test_duplicate_in_the_same_batch_and_while_pending(make: Factory) -> None:
    async with running(make()) as mb:
        first, second = await mb.accept([item(1), item(1)])
        accepted(first)
        assert second == Duplicate(None, pending=True)
        assert await mb.accept([item(1)]) == [Duplicate(None, pending=True)]
        # Same request id from another caller is another request.
        accepted((await mb.accept([item(1, caller="other")]))[0])
        assert mb.statistics().duplicates == 2


async def test_complete_removes_and_stores_the_response(make: Factory) -> None:
    async with running(make()) as mb:
        call, tell, keep = (accepted(o) for o in await mb.accept([item(1), item(2), item(3)]))
        mb.complete(call.id, b"answer")
        mb.complete(tell.id, None)
        mb.complete(999_999, b"unknown ids are ignored")
        await mb.flush()
        assert await mb.pending() == [keep]
        assert await mb.accept([item(1), item(2)]) == [
            Duplicate(b"answer", pending=False),
            Duplicate(None, pending=False),
        ]
        assert mb.statistics().completed == 2


async def test_begin_attempt_counts_and_is_visible_in_pending(make: Factory) -> None:
    async with running(make()) as mb:
        env = accepted((await mb.accept([item(1)]))[0])
        assert env.attempts == 1  # the first run is counted by the accept itself
        assert await mb.begin_attempt(env.id) == 2
        assert await mb.begin_attempt(env.id) == 3
        assert [e.attempts for e in await mb.pending()] == [3]
        with pytest.raises(UnknownEnvelope):
            await mb.begin_attempt(env.id + 100)


async def test_dead_letter_redrive_and_purge(make: Factory, clock: FakeClock) -> None:
    async with running(make()) as mb:
        a, b, c = (accepted(o) for o in await mb.accept([item(1), item(2), item(3)]))
        await mb.begin_attempt(a.id)
        await mb.dead_letter(a.id, "poison")
        clock.now += 1
        await mb.dead_letter(b.id, "raised")
        assert await mb.pending() == [c]
        assert await mb.dead_letters() == [
            DeadLetter(StoredEnvelope(a.id, "peer", "r1", a.priority, a.data, 2), "poison", 1000.0),
            DeadLetter(b, "raised", 1001.0),
        ]
        assert mb.statistics().dead_letters == 2
        with pytest.raises(UnknownEnvelope):
            await mb.dead_letter(a.id, "twice")
        # A retry of a dead-lettered request is not queued again.
        assert await mb.accept([item(1)]) == [Duplicate(None, pending=False, dead_lettered=True)]

        (again,) = await mb.redrive(a.id)
        assert (again.request_id, again.attempts, again.data) == ("r1", 0, a.data)
        assert again.id > c.id  # a new id, at the end of the queue
        assert await mb.pending() == [c, again]
        assert await mb.accept([item(1)]) == [Duplicate(None, pending=True)]
        with pytest.raises(UnknownEnvelope):
            await mb.redrive(a.id)

        await mb.dead_letter(c.id, "x")
        redriven = await mb.redrive()
        assert [e.request_id for e in redriven] == ["r2", "r3"]  # dead-letter order
        assert await mb.dead_letters() == []

        for env in redriven:
            await mb.dead_letter(env.id, "again")
        assert await mb.purge_dead_letters() == 2
        assert await mb.purge_dead_letters() == 0
        assert await mb.dead_letters() == []
        # Purged keys stay duplicates for the window, then may be accepted anew.
        assert await mb.accept([item(2)]) == [Duplicate(None, pending=False)]
        clock.now += WINDOW + 1
        accepted((await mb.accept([item(2)]))[0])


async def test_dead_letter_table_is_bounded(make: Factory) -> None:
    async with running(make(dead_letter_capacity=2)) as mb:
        envelopes = [accepted(o) for o in await mb.accept([item(n) for n in range(3)])]
        for env in envelopes:
            await mb.dead_letter(env.id, "poison")
        assert [d.envelope.request_id for d in await mb.dead_letters()] == ["r1", "r2"]
        stats = mb.statistics()
        assert (stats.dead_letters, stats.dead_letters_dropped) == (2, 1)


async def test_dedupe_window_and_pruning(make: Factory, clock: FakeClock) -> None:
    async with running(make()) as mb:
        envelopes = [accepted(o) for o in await mb.accept([item(n) for n in range(10)])]
        for env in envelopes:
            mb.complete(env.id, b"done")
        await mb.flush()
        assert mb.statistics().dedupe_entries == 10
        clock.now += WINDOW  # still inside the window
        assert await mb.accept([item(0)]) == [Duplicate(b"done", pending=False)]
        clock.now += max(1.0, PRUNE_INTERVAL)  # now outside: expired rows are pruned
        accepted((await mb.accept([item(1)]))[0])
        await mb.flush()
        # r1 is pending again; the other nine finished rows expired and were dropped.
        assert mb.statistics().dedupe_entries == 1


async def test_capacity_is_per_priority(make: Factory) -> None:
    async with running(make(capacity=2)) as mb:
        outcomes = await mb.accept([item(1), item(2), item(3), item(4, Priority.HIGH)])
        assert outcomes[2] == Refused(OVERLOADED)
        accepted(outcomes[3])
        # A retry of a pending envelope is a duplicate, not a refusal.
        assert await mb.accept([item(1)]) == [Duplicate(None, pending=True)]
        mb.complete(accepted(outcomes[0]).id, None)
        # Completions queued before an accept free capacity for it.
        accepted((await mb.accept([item(3)]))[0])
        stats = mb.statistics()
        assert (stats.refused, stats.duplicates) == (1, 1)
        assert dict(stats.pending_by_priority)[Priority.NORMAL] == 2


async def test_cancelled_accept_before_queueing_has_no_effect(make: Factory) -> None:
    async with running(make()) as mb:
        with trio.CancelScope() as scope:
            scope.cancel()
            await mb.accept([item(1)])
        assert await mb.pending() == []


async def test_statistics_are_frozen_and_hashable(make: Factory) -> None:
    async with running(make()) as mb:
        await mb.accept([item(1)])
        stats = mb.statistics()
        assert hash(stats) == hash(mb.statistics())
        assert stats.durable is isinstance(mb, SqliteMailbox)


# -- SQLite only -------------------------------------------------------------------------------


def sqlite_mailbox(path: Path, clock: FakeClock, **kwargs: Any) -> SqliteMailbox:
    return SqliteMailbox(path, clock=clock, dedupe_window=WINDOW, **kwargs)


async def test_sqlite_survives_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "mailbox.sqlite3"
    async with running(sqlite_mailbox(path, clock)) as mb:
        a, b, c = (accepted(o) for o in await mb.accept([item(1), item(2), item(3)]))
        await mb.begin_attempt(b.id)
        await mb.dead_letter(c.id, "poison")
        transactions = mb.statistics().transactions
        mb.complete(a.id, b"answer")
    # The completion was only queued: closing the mailbox committed it.
    assert mb.statistics().transactions == transactions + 1
    async with running(sqlite_mailbox(path, clock)) as mb:
        pending = await mb.pending()
        assert [(e.id, e.request_id, e.attempts) for e in pending] == [(b.id, "r2", 2)]
        assert [d.envelope.id for d in await mb.dead_letters()] == [c.id]
        assert await mb.accept([item(1), item(2), item(3)]) == [
            Duplicate(b"answer", pending=False),
            Duplicate(None, pending=True),
            Duplicate(None, pending=False, dead_lettered=True),
        ]
        # Ids are never reused, also after a restart.
        assert accepted((await mb.accept([item(4)]))[0]).id > c.id
        stats = mb.statistics()
        assert (stats.replayed, stats.dead_letters, stats.pending) == (1, 1, 2)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_group_commit_batches_concurrent_accepts(tmp_path: Path, clock: FakeClock) -> None:
    async with running(sqlite_mailbox(tmp_path / "m.sqlite3", clock)) as mb:
        before = mb.statistics().transactions
        await mb.accept([item("lone")])
        # A lone accept commits at once, in exactly one transaction (no timer).
        assert mb.statistics().transactions == before + 1
        results: list[object] = []

        async def one(n: int) -> None:
            results.extend(await mb.accept([item(n)]))

        async with trio.open_nursery() as nursery:
            for n in range(1000):
                nursery.start_soon(one, n)
        assert len({accepted(o).id for o in results}) == 1000
        transactions = mb.statistics().transactions - before - 1
        print(f"1000 concurrent accepts: {transactions} transactions")
        assert transactions <= 20, transactions
        assert mb.statistics().accepted == 1001


async def test_completions_share_the_next_transaction(tmp_path: Path, clock: FakeClock) -> None:
    async with running(sqlite_mailbox(tmp_path / "m.sqlite3", clock)) as mb:
        envelopes = [accepted(o) for o in await mb.accept([item(n) for n in range(100)])]
        before = mb.statistics().transactions
        for env in envelopes:
            mb.complete(env.id, None)
        await mb.flush()
        assert mb.statistics().transactions == before + 1
        assert mb.statistics().completed == 100


async def test_sqlite_closed_after_run_ends(tmp_path: Path, clock: FakeClock) -> None:
    mb = sqlite_mailbox(tmp_path / "m.sqlite3", clock)
    async with running(mb):
        pass
    with pytest.raises(MailboxError):
        await mb.accept([item(1)])
    with pytest.raises(MailboxError):
        mb.complete(1, None)
    with pytest.raises(RuntimeError):
        await mb.run()


async def test_sqlite_full_synchronous(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "full.sqlite3"
    async with running(sqlite_mailbox(path, clock, synchronous="FULL")) as mb:
        accepted((await mb.accept([item(1)]))[0])
    async with running(sqlite_mailbox(path, clock)) as mb:
        assert [e.request_id for e in await mb.pending()] == ["r1"]


async def test_sqlite_open_failure_fails_queued_callers(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "not-a-db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    mb = sqlite_mailbox(path, clock)
    failed = trio.Event()

    async def early_caller() -> None:
        with pytest.raises(MailboxError):
            await mb.accept([item(1)])
        failed.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(early_caller)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(MailboxError, match="cannot open mailbox"):
                await mb.run()
            await failed.wait()  # the queued caller was not left hanging


async def test_sqlite_failed_commit_keeps_nothing_and_ends_run(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "m.sqlite3"
    async with running(sqlite_mailbox(path, clock)) as mb:
        first = accepted((await mb.accept([item(1)]))[0])
    mb = sqlite_mailbox(path, clock)
    # data=None breaks the table's NOT NULL constraint: a real failure inside the transaction.
    bad = Accept("peer", "bad", Priority.NORMAL, None)  # type: ignore[arg-type]
    with trio.fail_after(10), pytest.RaisesGroup(MailboxError):
        async with trio.open_nursery() as nursery:
            await nursery.start(mb.run)
            mb.complete(first.id, b"rolled back")
            with pytest.raises(MailboxError, match="NOT NULL"):
                await mb.accept([item(2), bad])
    with pytest.raises(MailboxError):
        await mb.flush()
    async with running(sqlite_mailbox(path, clock)) as mb:
        # Nothing of the failed batch was kept: r2 absent, r1's completion undone (replayed).
        assert [e.request_id for e in await mb.pending()] == ["r1"]


async def test_sqlite_file_is_used_by_one_mailbox_at_a_time(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "m.sqlite3"
    async with running(sqlite_mailbox(path, clock)):
        with trio.fail_after(10), pytest.raises(MailboxError, match="locked"):
            await sqlite_mailbox(path, clock).run()
    async with running(sqlite_mailbox(path, clock)) as mb:  # free again once closed
        await mb.accept([item(1)])


def test_open_mailbox_picks_by_data_dir(tmp_path: Path) -> None:
    memory = open_mailbox(Config())
    assert isinstance(memory, MemoryMailbox)
    assert memory.statistics().durable is False
    durable = open_mailbox(Config(data_dir=tmp_path / "node", mailbox_synchronous="FULL"))
    assert isinstance(durable, SqliteMailbox)
    assert durable.path == tmp_path / "node" / "mailbox.sqlite3"
    assert durable.synchronous == "FULL"


async def test_open_mailbox_creates_the_data_dir(tmp_path: Path) -> None:
    mb = open_mailbox(Config(data_dir=tmp_path / "a" / "b"))
    async with running(mb):
        await mb.accept([item(1)])
    assert (tmp_path / "a" / "b" / "mailbox.sqlite3").is_file()


async def test_release_attempts_gives_back_the_accept_time_count(make: Factory) -> None:
    async with running(make()) as mb:
        a, b = (accepted(o) for o in await mb.accept([item(1), item(2)]))
        await mb.begin_attempt(b.id)
        await mb.release_attempts([a.id, b.id, a.id + 100])  # unknown ids are ignored
        assert [(e.id, e.attempts) for e in await mb.pending()] == [(a.id, 0), (b.id, 1)]
        await mb.release_attempts([a.id])  # never below zero
        assert [(e.id, e.attempts) for e in await mb.pending()] == [(a.id, 0), (b.id, 1)]
