"""The mailbox against a model: No loss and No duplicate effects.

A Hypothesis state machine drives the synchronous SQL core (the engine of ``SqliteMailbox``)
on a real file, transaction by transaction, and compares every answer with a plain model. The
``crash`` rule copies the database files as they are on disk, possibly in the middle of a
transaction, abandons the connection and reopens from the copy: the reopened mailbox must hold
exactly what was committed; the ``rollback`` rule abandons the open transaction (as after a
full disk) and carries on with what was committed. The ``async_session`` rule runs the real
Trio shell (group commit and its closing commit) on the same file. The same machine without
the crash rules checks the in-memory core, and once more with dedupe keys that collide all the
time. Each sender ("a", "b") may hold ``SENDER_CAPACITY`` of a priority's ``CAPACITY``: the
model refuses past that share (after a restart too, since it counts pending envelopes).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import attrs
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actr_trio import _mailbox_sqlcore
from actr_trio._lanes import Priority
from actr_trio._mailbox import (
    OVERLOADED,
    SENDER_SHARE,
    Accept,
    Accepted,
    DeadLetter,
    Duplicate,
    MailboxCore,
    Outcome,
    Refused,
    StoredEnvelope,
    UnknownEnvelope,
)
from actr_trio._mailbox_memory import MemoryCore
from actr_trio._mailbox_sqlite import SqliteCore, SqliteMailbox

CAPACITY = 3
SENDER_CAPACITY = 2  # each sender's share of a priority
DEAD_CAPACITY = 2
WINDOW = 60.0

keys = st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([str(n) for n in range(6)]))
items = st.lists(
    st.builds(
        lambda key, priority, data: Accept(key[0], key[1], priority, data),
        keys,
        st.sampled_from(Priority),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=4,
)
responses = st.none() | st.binary(max_size=8)

Key = tuple[str, str]


@attrs.define
class Model:
    """What the mailbox must hold: plain dicts, no cleverness."""

    queue: dict[int, StoredEnvelope] = attrs.Factory(dict)
    # key -> ("pending" | "done" | "dead", response, finished_at)
    seen: dict[Key, tuple[str, bytes | None, float]] = attrs.Factory(dict)
    dead: list[DeadLetter] = attrs.Factory(list)
    last_id: int = 0

    def copy(self) -> Model:
        return Model(dict(self.queue), dict(self.seen), list(self.dead), self.last_id)

    def accept(self, batch: Sequence[Accept], now: float) -> list[Outcome]:
        out: list[Outcome] = []
        for it in batch:
            key = (it.caller, it.request_id)
            state, response, finished_at = self.seen.get(key, ("new", None, 0.0))
            if state == "pending":
                out.append(Duplicate(None, pending=True))
            elif state == "dead":
                out.append(Duplicate(None, pending=False, dead_lettered=True))
            elif state == "done" and now - finished_at <= WINDOW:
                out.append(Duplicate(response, pending=False))
            elif sum(e.priority == it.priority for e in self.queue.values()) >= CAPACITY:
                out.append(Refused(OVERLOADED))
            elif (
                sum(
                    e.priority == it.priority and e.caller == it.caller for e in self.queue.values()
                )
                >= SENDER_CAPACITY
            ):
                out.append(Refused(SENDER_SHARE))
            else:
                out.append(
                    Accepted(
                        self._queue(it.caller, it.request_id, it.priority, it.data, attempts=1)
                    )
                )
        return out

    def _queue(
        self, caller: str, request_id: str, priority: Priority, data: bytes, *, attempts: int = 0
    ) -> StoredEnvelope:
        # The first run is counted by the accept (ACCEPTED_ATTEMPTS); a redriven one starts at 0.
        self.last_id += 1
        env = StoredEnvelope(self.last_id, caller, request_id, priority, data, attempts)
        self.queue[env.id] = env
        self.seen[(caller, request_id)] = ("pending", None, 0.0)
        return env

    def complete(self, envelope_id: int, response: bytes | None, now: float) -> bool:
        env = self.queue.pop(envelope_id, None)
        if env is not None:
            self.seen[(env.caller, env.request_id)] = ("done", response, now)
        return env is not None

    def dead_letter(self, envelope_id: int, reason: str, now: float) -> None:
        env = self.queue.pop(envelope_id)
        self.dead.append(DeadLetter(env, reason, now))
        self.seen[(env.caller, env.request_id)] = ("dead", None, 0.0)
        if len(self.dead) > DEAD_CAPACITY:
            dropped = self.dead.pop(0).envelope
            self.seen[(dropped.caller, dropped.request_id)] = ("done", None, now)

    def redrive(self, envelope_id: int | None) -> list[StoredEnvelope]:
        chosen = [d for d in self.dead if envelope_id in (None, d.envelope.id)]
        self.dead = [d for d in self.dead if d not in chosen]
        return [
            self._queue(e.caller, e.request_id, e.priority, e.data)
            for e in (d.envelope for d in chosen)
        ]

    def purge(self, now: float) -> int:
        for d in self.dead:
            self.seen[(d.envelope.caller, d.envelope.request_id)] = ("done", None, now)
        n, self.dead = len(self.dead), []
        return n


class MemoryCoreMachine(RuleBasedStateMachine):
    """The in-memory core against the model (no transactions, no crashes)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000.0
        self.model = Model()
        self.core: MailboxCore = self.open_core()

    def open_core(self) -> MailboxCore:
        return MemoryCore(
            capacity=CAPACITY,
            dedupe_window=WINDOW,
            dead_letter_capacity=DEAD_CAPACITY,
            sender_capacity=SENDER_CAPACITY,
        )

    def write(self) -> None:
        """Called before each mutating rule (the SQLite machine opens a transaction)."""

    @rule(batch=items)
    def accept(self, batch: list[Accept]) -> None:
        self.write()
        assert self.core.accept(batch, self.now) == self.model.accept(batch, self.now)

    @rule(data=st.data(), response=responses)
    def complete(self, data: st.DataObject, response: bytes | None) -> None:
        self.write()
        envelope_id = data.draw(st.sampled_from([*self.model.queue, self.model.last_id + 1]))
        expected = self.model.complete(envelope_id, response, self.now)
        assert self.core.complete(envelope_id, response, self.now) == expected

    @precondition(lambda self: self.model.queue)
    @rule(data=st.data())
    def begin_attempt(self, data: st.DataObject) -> None:
        self.write()
        envelope_id = data.draw(st.sampled_from(sorted(self.model.queue)))
        env = self.model.queue[envelope_id]
        self.model.queue[envelope_id] = attrs.evolve(env, attempts=env.attempts + 1)
        assert self.core.begin_attempt(envelope_id) == env.attempts + 1

    @precondition(lambda self: self.model.queue)
    @rule(data=st.data(), reason=st.sampled_from(["poison", "too many attempts"]))
    def dead_letter(self, data: st.DataObject, reason: str) -> None:
        self.write()
        envelope_id = data.draw(st.sampled_from(sorted(self.model.queue)))
        self.model.dead_letter(envelope_id, reason, self.now)
        self.core.dead_letter(envelope_id, reason, self.now)

    @rule()
    def unknown_ids_are_refused(self) -> None:
        self.write()
        unknown = self.model.last_id + 1
        for call in (
            lambda: self.core.begin_attempt(unknown),
            lambda: self.core.dead_letter(unknown, "x", self.now),
            lambda: self.core.redrive(unknown),
        ):
            try:
                call()
            except UnknownEnvelope:
                pass
            else:
                raise AssertionError("expected UnknownEnvelope")

    @rule(data=st.data())
    def redrive(self, data: st.DataObject) -> None:
        self.write()
        choice = data.draw(st.sampled_from([None, *(d.envelope.id for d in self.model.dead)]))
        assert self.core.redrive(choice) == self.model.redrive(choice)

    @rule()
    def purge(self) -> None:
        self.write()
        assert self.core.purge_dead_letters(self.now) == self.model.purge(self.now)

    @rule(seconds=st.sampled_from([0.5, 1.0, 30.0, WINDOW, WINDOW + 1]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def prune(self) -> None:
        self.write()
        self.core.maybe_prune(self.now)

    @invariant()
    def holds_what_the_model_holds(self) -> None:
        assert self.core.pending() == list(self.model.queue.values())
        assert self.core.dead_letters() == self.model.dead
        stats = self.core.statistics()
        assert stats.dead_letters == len(self.model.dead)
        assert dict(stats.pending_by_priority) == {
            p: sum(e.priority == p for e in self.model.queue.values()) for p in Priority
        }
        # The dedupe table is bounded: never more than the keys the model still remembers.
        assert stats.dedupe_entries <= len(self.model.seen)


class SqliteCoreMachine(MemoryCoreMachine):
    """The SQL core on a real file, with commits, crashes and reopening."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mailbox-machine-"))
        self.generation = 0
        self.in_transaction = False
        super().__init__()
        self.committed = Model()

    @property
    def path(self) -> Path:
        return self.directory / str(self.generation) / "mailbox.sqlite3"

    def open_core(self) -> MailboxCore:
        return SqliteCore.open(
            self.path,
            capacity=CAPACITY,
            dedupe_window=WINDOW,
            dead_letter_capacity=DEAD_CAPACITY,
            sender_capacity=SENDER_CAPACITY,
        )

    @property
    def sql(self) -> SqliteCore:
        assert isinstance(self.core, SqliteCore)
        return self.core

    def write(self) -> None:
        if not self.in_transaction:
            self.sql.begin()
            self.in_transaction = True

    @rule()
    def commit(self) -> None:
        if self.in_transaction:
            self.sql.commit()
            self.in_transaction = False
        self.committed = self.model.copy()

    @rule(data=st.data())
    def complete_many(self, data: st.DataObject) -> None:
        """A group commit's completions, in one statement (repeats and unknown ids too)."""
        self.write()
        ids = st.sampled_from([*self.model.queue, self.model.last_id + 1])
        pairs = data.draw(st.lists(st.tuples(ids, responses), max_size=5))
        expected = sum(self.model.complete(i, response, self.now) for i, response in pairs)
        assert self.sql.complete_many(pairs, self.now) == expected

    @rule()
    def rollback(self) -> None:
        """Abandon the open transaction (what the writer does when the disk is full): the
        counts, the shares and the ids go back to what was committed."""
        if self.in_transaction:
            self.sql.rollback()
            self.in_transaction = False
        self.model = self.committed.copy()

    @rule()
    def crash(self) -> None:
        """Copy the files as they are now (maybe mid-transaction) and carry on from the copy."""
        old_path = self.path
        self.generation += 1
        self.path.parent.mkdir()
        for suffix in ("", "-wal"):
            source = old_path.with_name(old_path.name + suffix)
            if source.exists():
                shutil.copyfile(source, self.path.with_name(self.path.name + suffix))
        self.sql.close()  # abandons the open transaction; the copy is what survives
        shutil.rmtree(old_path.parent)
        self.in_transaction = False
        with closing(sqlite3.connect(self.path)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        self.core = self.open_core()
        self.model = self.committed.copy()

    @rule(batch=items, complete_first=st.booleans())
    def async_session(self, batch: list[Accept], complete_first: bool) -> None:
        """Run the Trio shell on the file: accepts, then queued completions closing commits."""
        self.commit()
        self.sql.close()
        mailbox = SqliteMailbox(
            self.path,
            capacity=CAPACITY,
            dedupe_window=WINDOW,
            clock=lambda: self.now,
            dead_letter_capacity=DEAD_CAPACITY,
            sender_capacity=SENDER_CAPACITY,
        )
        done = sorted(self.model.queue)[:1] if complete_first else []

        async def session() -> list[Outcome]:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    await nursery.start(mailbox.run)
                    outcomes = await mailbox.accept(batch)
                    for envelope_id in done:
                        mailbox.complete(envelope_id, b"async")
                    nursery.cancel_scope.cancel()  # run() commits the completions as it closes
            return outcomes

        assert trio.run(session) == self.model.accept(batch, self.now)
        for envelope_id in done:
            self.model.complete(envelope_id, b"async", self.now)
        self.committed = self.model.copy()
        self.core = self.open_core()

    def teardown(self) -> None:
        self.sql.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @initialize()
    def start_empty(self) -> None:
        assert self.core.pending() == []


class CollidingSqliteCoreMachine(SqliteCoreMachine):
    """The same with dedupe keys that collide all the time (two keys for every request): the
    rows that could not take their key must be found, deduplicated and pruned all the same."""

    def __init__(self) -> None:
        self.real_key_function = _mailbox_sqlcore.dedupe_key_function
        _mailbox_sqlcore.dedupe_key_function = lambda salt: (
            lambda caller, request_id: ord(request_id[-1]) % 2
        )
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            _mailbox_sqlcore.dedupe_key_function = self.real_key_function


MemoryCoreMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None
)
SqliteCoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
CollidingSqliteCoreMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
TestMemoryCore = MemoryCoreMachine.TestCase
TestSqliteCore = SqliteCoreMachine.TestCase
TestCollidingSqliteCore = CollidingSqliteCoreMachine.TestCase
