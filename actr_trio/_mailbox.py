"""The mailbox: where accepted state-path envelopes wait until their handler has finished.

Invariants (no loss and no duplicate effects, docs/architecture.md):

1. **Accepted means committed.** :meth:`Mailbox.accept` returns only after the transaction that
   holds the envelope committed, so whatever the runtime acknowledges survives a crash
   (SIGKILL with ``synchronous="NORMAL"``, also power loss with ``"FULL"``).
2. **At most once in the queue.** A ``(caller, request_id)`` is queued at most once. A retry of
   one that is pending, dead-lettered, or finished less than ``dedupe_window`` seconds ago is a
   :class:`Duplicate` (carrying the stored response), never queued again.
3. **An envelope leaves the queue** only by :meth:`~Mailbox.complete` (handled) or
   :meth:`~Mailbox.dead_letter`; what is still queued is replayed by :meth:`~Mailbox.pending`.
4. **Bounded.** At most ``capacity`` pending envelopes per priority (then :class:`Refused`), at
   most ``dead_letter_capacity`` dead letters (the oldest is dropped and counted), dedupe rows
   older than ``dedupe_window`` are pruned, and the writer's operation channel is bounded.

This module holds the contract (values, the :class:`Mailbox` protocol and the synchronous
:class:`MailboxCore` protocol), the in-memory implementation and :func:`open_mailbox`. Two
implementations share the semantics: ``SqliteMailbox`` in ``_mailbox_sqlite.py`` (durable: a
sans-IO SQL core driven by one writer task that group-commits in one worker thread) and
:class:`MemoryMailbox` (``data_dir=None``: fast, **not durable**).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias, final

import attrs
import trio

from ._lanes import PRIORITIES_HIGH_FIRST, Priority
from ._logging import MAILBOX
from .errors import ActrError

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "OVERLOADED",
    "Accept",
    "Accepted",
    "DeadLetter",
    "Duplicate",
    "Mailbox",
    "MailboxCore",
    "MailboxError",
    "MailboxStatistics",
    "MemoryCore",
    "MemoryMailbox",
    "Outcome",
    "Refused",
    "StoredEnvelope",
    "UnknownEnvelope",
    "open_mailbox",
]

logger = logging.getLogger(MAILBOX)

#: Reason of :class:`Refused` when a priority already holds ``capacity`` pending envelopes.
OVERLOADED: Final = "overloaded"

#: Seconds of clock time between two prunes of the dedupe table (pruning is a range delete on
#: an index, cheap but not free; once a second keeps the table bounded by rate x window).
PRUNE_INTERVAL: Final = 1.0

# States of a dedupe entry (the ``seen`` table): the key's envelope is queued, finished, or dead.
PENDING: Final = 0
DONE: Final = 1
DEAD: Final = 2


#: ``attempts`` of a newly accepted envelope. The first run is counted by the accept itself,
#: in the same commit, so a handler that kills the process on its first run still counts
#: without a commit of its own before it runs (one commit per envelope saved on the state
#: path). Replays, retries and redriven envelopes are counted by ``begin_attempt`` first.
ACCEPTED_ATTEMPTS: Final = 1


class MailboxError(ActrError):
    """The mailbox cannot do its job: it is closed, or its database failed."""


class UnknownEnvelope(MailboxError, LookupError):
    """No envelope with that id is queued (or dead-lettered, for :meth:`Mailbox.redrive`)."""


@final
@attrs.frozen
class Accept:
    """One decoded inbound request or tell, as handed to :meth:`Mailbox.accept`.

    Attributes:
        caller: ``str(ActrId)`` of the sender.
        request_id: the sender's id for this request; ``(caller, request_id)`` is the dedupe key.
        priority: state-path priority.
        data: the encoded envelope, stored opaque.
    """

    caller: str
    request_id: str
    priority: Priority
    data: bytes


@final
@attrs.frozen
class StoredEnvelope:
    """An envelope in the queue.

    Attributes:
        id: row id, increasing in accept order within the mailbox and never reused.
        attempts: handler attempts counted so far (see :meth:`Mailbox.begin_attempt`).
    """

    id: int
    caller: str
    request_id: str
    priority: Priority
    data: bytes
    attempts: int


@final
@attrs.frozen
class Accepted:
    """The envelope was committed to the queue."""

    envelope: StoredEnvelope


@final
@attrs.frozen
class Duplicate:
    """The same ``(caller, request_id)`` is pending, dead-lettered, or finished within the window.

    Attributes:
        response: the stored response if the original finished and had one; ``None`` while it is
            pending, for tells, and for dead letters.
        pending: the original is still queued (or being handled).
        dead_lettered: the original sits in the dead-letter table.
    """

    response: bytes | None
    pending: bool
    dead_lettered: bool = False


@final
@attrs.frozen
class Refused:
    """Not queued; ``reason`` is :data:`OVERLOADED` (that priority holds ``capacity`` envelopes)."""

    reason: str


Outcome: TypeAlias = Accepted | Duplicate | Refused

REFUSED: Final = Refused(OVERLOADED)
_DUPLICATE_PENDING: Final = Duplicate(None, pending=True)
_DUPLICATE_DEAD: Final = Duplicate(None, pending=False, dead_lettered=True)


@final
@attrs.frozen
class Outgoing:
    """A call or tell this node sent and has no final answer for yet (the sender's outbox).

    A durable node records it before sending and forgets it once answered, refused or past its
    deadline; after a crash the outstanding ones are sent again with the same ``request_id``,
    so the receiver's dedupe table recognises those it already has.
    """

    request_id: str
    target: str
    lane: int
    kind: int
    data: bytes
    deadline_ms: int  # unix milliseconds, 0 = none


@final
@attrs.frozen
class DeadLetter:
    """An envelope moved out of the queue after too many attempts, with why and when."""

    envelope: StoredEnvelope
    reason: str
    at: float


@final
@attrs.frozen
class MailboxStatistics:
    """A snapshot of a mailbox's counters (cumulative since it was opened, unless noted).

    Attributes:
        accepted: envelopes queued by ``accept`` (redriven ones not included).
        completed: envelopes removed by ``complete``.
        pending_by_priority: ``(priority, pending envelopes)`` pairs, highest priority first
            (current, includes the envelope being handled).
        replayed: envelopes returned by ``pending()``.
        duplicates: accepted items reported as :class:`Duplicate`.
        refused: accepted items reported as :class:`Refused`.
        transactions: commits (SQLite: one per group commit; memory: one per operation).
        dead_letters: envelopes currently in the dead-letter table.
        durable: whether accepted envelopes survive a crash.
        dead_letters_dropped: oldest dead letters dropped because the table was full.
        dedupe_entries: current rows of the dedupe table (pending + dead + finished in window).
    """

    accepted: int
    completed: int
    pending_by_priority: tuple[tuple[Priority, int], ...]
    replayed: int
    duplicates: int
    refused: int
    transactions: int
    dead_letters: int
    durable: bool
    dead_letters_dropped: int = 0
    dedupe_entries: int = 0

    @property
    def pending(self) -> int:
        """All pending envelopes, whatever their priority."""
        return sum(n for _, n in self.pending_by_priority)


@attrs.define
class Counters:
    """Mutable counters a core keeps; copied with ``attrs.evolve`` to roll back."""

    accepted: int = 0
    completed: int = 0
    replayed: int = 0
    duplicates: int = 0
    refused: int = 0
    transactions: int = 0
    dead_letters: int = 0
    dead_letters_dropped: int = 0
    dedupe_entries: int = 0
    last_id: int = 0

    def statistics(self, counts: dict[int, int], *, durable: bool) -> MailboxStatistics:
        """Freeze into a :class:`MailboxStatistics`."""
        return MailboxStatistics(
            accepted=self.accepted,
            completed=self.completed,
            pending_by_priority=tuple((p, counts.get(p, 0)) for p in PRIORITIES_HIGH_FIRST),
            replayed=self.replayed,
            duplicates=self.duplicates,
            refused=self.refused,
            transactions=self.transactions,
            dead_letters=self.dead_letters,
            durable=durable,
            dead_letters_dropped=self.dead_letters_dropped,
            dedupe_entries=self.dedupe_entries,
        )


def duplicate_of(
    state: int, response: bytes | None, finished_at: float | None, cutoff: float
) -> Duplicate | None:
    """The dedupe rule, shared by both cores: what a retry of an already seen key gets.

    ``None`` means the key's entry expired (finished before ``cutoff``): accept it anew.
    """
    if state == PENDING:
        return _DUPLICATE_PENDING
    if state == DEAD:
        return _DUPLICATE_DEAD
    if finished_at is not None and finished_at >= cutoff:
        return Duplicate(response, pending=False)
    return None


class MailboxCore(Protocol):
    """The synchronous, sans-IO mailbox semantics that both shells drive.

    ``now`` is the clock reading of the caller; cores never read a clock themselves.
    """

    def accept(self, items: Sequence[Accept], now: float) -> list[Outcome]:
        """Queue each item unless it is a duplicate or its priority is full."""
        ...

    def complete(self, envelope_id: int, response: bytes | None, now: float) -> bool:
        """Remove a queued envelope and remember its response; False if it was not queued."""
        ...

    def pending(self) -> list[StoredEnvelope]:
        """Queued envelopes in id order."""
        ...

    def begin_attempt(self, envelope_id: int) -> int:
        """Count one more attempt and return the count (UnknownEnvelope if not queued)."""
        ...

    def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        """Take back one counted attempt of each queued envelope (those that never ran)."""
        ...

    def dead_letter(self, envelope_id: int, reason: str, now: float) -> None:
        """Move a queued envelope to the dead-letter table (UnknownEnvelope if not queued)."""
        ...

    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    def redrive(self, envelope_id: int | None) -> list[StoredEnvelope]:
        """Queue one (or every) dead letter again under a new id with ``attempts=0``."""
        ...

    def purge_dead_letters(self, now: float) -> int:
        """Forget every dead letter (retries stay duplicates for the window); return how many."""
        ...

    def maybe_prune(self, now: float) -> int:
        """Drop expired dedupe entries, at most once per :data:`PRUNE_INTERVAL`."""
        ...

    def statistics(self) -> MailboxStatistics:
        """Current counters."""
        ...


_Entry: TypeAlias = tuple[int, bytes | None, float | None]
_PENDING_ENTRY: Final[_Entry] = (PENDING, None, None)
_DEAD_ENTRY: Final[_Entry] = (DEAD, None, None)


@final
class MemoryCore:
    """Pure-Python :class:`MailboxCore` on dicts: one dict lookup and two inserts per envelope."""

    def __init__(
        self, *, capacity: int, dedupe_window: float, dead_letter_capacity: int | None = None
    ) -> None:
        self._capacity = capacity
        self._window = dedupe_window
        self._dead_capacity = capacity if dead_letter_capacity is None else dead_letter_capacity
        self._queue: dict[int, StoredEnvelope] = {}  # insertion order == id order
        self._seen: dict[tuple[str, str], _Entry] = {}
        self._done_order: deque[tuple[float, tuple[str, str]]] = deque()
        self._dead: dict[int, DeadLetter] = {}  # insertion order == dead-letter order
        self._counts: dict[int, int] = dict.fromkeys(map(int, Priority), 0)
        self._last_prune = -math.inf
        self.counters = Counters()

    def accept(self, items: Sequence[Accept], now: float) -> list[Outcome]:
        cutoff = now - self._window
        out = [
            self._enter(item.caller, item.request_id, item.priority, item.data, cutoff)
            for item in items
        ]
        self.counters.transactions += 1
        self.maybe_prune(now)
        return out

    def accept_one(
        self, caller: str, request_id: str, priority: Priority, data: bytes, now: float
    ) -> Outcome:
        """:meth:`accept` of one item, without building an :class:`Accept` (the in-process
        route's path: one envelope per tell)."""
        outcome = self._enter(caller, request_id, priority, data, now - self._window)
        self.counters.transactions += 1
        self.maybe_prune(now)
        return outcome

    def _enter(
        self, caller: str, request_id: str, priority: Priority, data: bytes, cutoff: float
    ) -> Outcome:
        c = self.counters
        key = (caller, request_id)
        entry = self._seen.get(key)
        if entry is not None:
            dup = duplicate_of(*entry, cutoff)
            if dup is not None:
                c.duplicates += 1
                return dup
        counts = self._counts
        if counts.get(priority, 0) >= self._capacity:
            c.refused += 1
            return REFUSED
        c.last_id += 1
        env = StoredEnvelope(c.last_id, caller, request_id, priority, data, ACCEPTED_ATTEMPTS)
        self._queue[c.last_id] = env
        self._seen[key] = _PENDING_ENTRY
        counts[priority] = counts.get(priority, 0) + 1
        c.accepted += 1
        return Accepted(env)

    def complete(self, envelope_id: int, response: bytes | None, now: float) -> bool:
        env = self._queue.pop(envelope_id, None)
        if env is None:
            return False
        self._counts[env.priority] -= 1
        self._finish((env.caller, env.request_id), response, now)
        self.counters.completed += 1
        self.counters.transactions += 1
        self.maybe_prune(now)
        return True

    def _finish(self, key: tuple[str, str], response: bytes | None, now: float) -> None:
        self._seen[key] = (DONE, response, now)
        self._done_order.append((now, key))

    def pending(self) -> list[StoredEnvelope]:
        result = list(self._queue.values())
        self.counters.replayed += len(result)
        return result

    def begin_attempt(self, envelope_id: int) -> int:
        env = self._queue.get(envelope_id)
        if env is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        env = attrs.evolve(env, attempts=env.attempts + 1)
        self._queue[envelope_id] = env
        self.counters.transactions += 1
        return env.attempts

    def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        for envelope_id in envelope_ids:
            env = self._queue.get(envelope_id)
            if env is not None and env.attempts > 0:
                self._queue[envelope_id] = attrs.evolve(env, attempts=env.attempts - 1)

    def dead_letter(self, envelope_id: int, reason: str, now: float) -> None:
        env = self._queue.pop(envelope_id, None)
        if env is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        self._counts[env.priority] -= 1
        self._dead[envelope_id] = DeadLetter(env, reason, now)
        self._seen[(env.caller, env.request_id)] = _DEAD_ENTRY
        if len(self._dead) > self._dead_capacity:
            oldest = self._dead.pop(next(iter(self._dead)))
            self._finish((oldest.envelope.caller, oldest.envelope.request_id), None, now)
            self.counters.dead_letters_dropped += 1
            logger.warning("dead-letter table full: dropped envelope %d", oldest.envelope.id)
        self.counters.dead_letters = len(self._dead)
        self.counters.transactions += 1

    def dead_letters(self) -> list[DeadLetter]:
        return list(self._dead.values())

    def redrive(self, envelope_id: int | None) -> list[StoredEnvelope]:
        if envelope_id is None:
            targets = list(self._dead.values())
            self._dead.clear()
        else:
            letter = self._dead.pop(envelope_id, None)
            if letter is None:
                raise UnknownEnvelope(f"envelope {envelope_id} is not dead-lettered")
            targets = [letter]
        c = self.counters
        out = []
        for letter in targets:
            old = letter.envelope
            c.last_id += 1
            env = StoredEnvelope(c.last_id, old.caller, old.request_id, old.priority, old.data, 0)
            self._queue[c.last_id] = env
            self._seen[(env.caller, env.request_id)] = _PENDING_ENTRY
            self._counts[env.priority] = self._counts.get(env.priority, 0) + 1
            out.append(env)
        c.dead_letters = len(self._dead)
        c.transactions += 1
        return out

    def purge_dead_letters(self, now: float) -> int:
        n = len(self._dead)
        for letter in self._dead.values():
            self._finish((letter.envelope.caller, letter.envelope.request_id), None, now)
        self._dead.clear()
        self.counters.dead_letters = 0
        self.counters.transactions += 1
        return n

    def maybe_prune(self, now: float) -> int:
        if 0 <= now - self._last_prune < PRUNE_INTERVAL:
            return 0
        self._last_prune = now
        cutoff = now - self._window
        seen, order, pruned = self._seen, self._done_order, 0
        while order and order[0][0] < cutoff:
            finished_at, key = order.popleft()
            entry = seen.get(key)
            # A key finished again later has a newer entry: only the matching one expires.
            if entry is not None and entry[0] == DONE and entry[2] == finished_at:
                del seen[key]
                pruned += 1
        return pruned

    def statistics(self) -> MailboxStatistics:
        self.counters.dedupe_entries = len(self._seen)
        return self.counters.statistics(self._counts, durable=False)


class Mailbox(Protocol):
    """What the runtime calls; see the module docstring for the invariants.

    Cancellation: an async method cancelled before its operation was queued has no effect;
    once queued (SQLite), the operation is committed anyway and only its result is lost. So
    acknowledge an envelope to its sender only with the outcome of ``accept`` in hand.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the mailbox, report ``started()``, and serve until cancelled, then close."""
        ...

    async def accept(self, items: Sequence[Accept]) -> list[Outcome]:
        """Accept items in one transaction; return their outcomes in input order after commit."""
        ...

    def complete(self, envelope_id: int, response: bytes | None) -> None:
        """Queue the removal of a handled envelope (and remember its response)."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before the call is committed."""
        ...

    async def pending(self) -> list[StoredEnvelope]:
        """Accepted but not completed envelopes, in id order."""
        ...

    async def begin_attempt(self, envelope_id: int) -> int:
        """Commit one more attempt for a queued envelope; return the new count."""
        ...

    async def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        """Commit: queued envelopes that never ran give back the attempt counted at accept."""
        ...

    async def dead_letter(self, envelope_id: int, reason: str) -> None:
        """Move a queued envelope to the dead-letter table."""
        ...

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    async def redrive(self, envelope_id: int | None = None) -> list[StoredEnvelope]:
        """Queue one or all dead letters again; return them for scheduling."""
        ...

    async def purge_dead_letters(self) -> int:
        """Forget every dead letter; return how many."""
        ...

    def statistics(self) -> MailboxStatistics:
        """A snapshot of the counters."""
        ...


@final
class MemoryMailbox:
    """An in-memory :class:`Mailbox` for ``data_dir=None``: fast and **not durable**.

    A crash loses every accepted envelope and the dedupe table. Operations run inline (no
    thread, no batching); each async method checkpoints *before* it acts, so a cancelled call
    has no effect.
    """

    def __init__(
        self,
        *,
        capacity: int = 100_000,
        dedupe_window: float = 600.0,
        clock: Callable[[], float] = time.time,
        dead_letter_capacity: int | None = None,
    ) -> None:
        self._core = MemoryCore(
            capacity=capacity,
            dedupe_window=dedupe_window,
            dead_letter_capacity=dead_letter_capacity,
        )
        self._clock = clock

    def __repr__(self) -> str:
        return f"<MemoryMailbox at {id(self):#x}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report ``started()`` at once and wait to be cancelled (there is nothing to close).

        Cancellation: the only way it ends.
        """
        task_status.started()
        await trio.sleep_forever()

    async def accept(self, items: Sequence[Accept]) -> list[Outcome]:
        """Accept items; see :meth:`Mailbox.accept`.

        Cancellation: if cancelled, nothing was accepted.
        """
        await trio.lowlevel.checkpoint()
        return self._core.accept(items, self._clock())

    def accept_now(self, items: Sequence[Accept]) -> list[Outcome]:
        """:meth:`accept` without its checkpoint: the in-process route accepts on the sending
        task's stack, which checkpointed before (so a cancelled sender accepts nothing)."""
        return self._core.accept(items, self._clock())

    def accept_one_now(
        self, caller: str, request_id: str, priority: Priority, data: bytes
    ) -> Outcome:
        """:meth:`accept_now` of one item, without building an :class:`Accept`."""
        return self._core.accept_one(caller, request_id, priority, data, self._clock())

    def complete(self, envelope_id: int, response: bytes | None) -> None:
        """Remove a handled envelope at once; unknown ids are ignored."""
        self._core.complete(envelope_id, response, self._clock())

    async def flush(self) -> None:
        """Nothing is ever queued: only checkpoints."""
        await trio.lowlevel.checkpoint()

    async def pending(self) -> list[StoredEnvelope]:
        """Queued envelopes in id order (counted as ``replayed``).

        Cancellation: if cancelled, nothing was counted.
        """
        await trio.lowlevel.checkpoint()
        return self._core.pending()

    async def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        """Give back the accept-time attempt of envelopes that never ran (graceful stop)."""
        await trio.lowlevel.checkpoint()
        self._core.release_attempts(envelope_ids)

    async def begin_attempt(self, envelope_id: int) -> int:
        """Count one more attempt; see :meth:`Mailbox.begin_attempt`.

        Raises:
            UnknownEnvelope: the envelope is not queued.

        Cancellation: if cancelled, nothing was counted.
        """
        await trio.lowlevel.checkpoint()
        return self._core.begin_attempt(envelope_id)

    async def dead_letter(self, envelope_id: int, reason: str) -> None:
        """Move to the dead-letter table; see :meth:`Mailbox.dead_letter`.

        Raises:
            UnknownEnvelope: the envelope is not queued.

        Cancellation: if cancelled, nothing moved.
        """
        await trio.lowlevel.checkpoint()
        self._core.dead_letter(envelope_id, reason, self._clock())

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead letters, oldest first.

        Cancellation: safe, read only.
        """
        await trio.lowlevel.checkpoint()
        return self._core.dead_letters()

    async def redrive(self, envelope_id: int | None = None) -> list[StoredEnvelope]:
        """Queue one (or all) dead letters again; see :meth:`Mailbox.redrive`.

        Raises:
            UnknownEnvelope: ``envelope_id`` is not dead-lettered.

        Cancellation: if cancelled, nothing moved.
        """
        await trio.lowlevel.checkpoint()
        return self._core.redrive(envelope_id)

    async def purge_dead_letters(self) -> int:
        """Forget every dead letter; return how many.

        Cancellation: if cancelled, nothing was purged.
        """
        await trio.lowlevel.checkpoint()
        return self._core.purge_dead_letters(self._clock())

    def statistics(self) -> MailboxStatistics:
        """A snapshot of the counters (``durable=False``)."""
        return self._core.statistics()


def open_mailbox(config: Config) -> Mailbox:
    """The mailbox a node with this config uses.

    ``config.data_dir is None`` gives a :class:`MemoryMailbox`, which is **not durable**;
    otherwise a :class:`~actr_trio._mailbox_sqlite.SqliteMailbox` on
    ``data_dir / "mailbox.sqlite3"`` (the directory is created when the mailbox runs).
    """
    if config.data_dir is None:
        return MemoryMailbox(capacity=config.mailbox_capacity, dedupe_window=config.dedupe_window)
    # Imported here: _mailbox_sqlite builds on this module (and sqlite3 loads only if needed).
    from ._mailbox_sqlite import SqliteMailbox

    return SqliteMailbox(
        config.data_dir / "mailbox.sqlite3",
        synchronous=config.mailbox_synchronous,
        capacity=config.mailbox_capacity,
        dedupe_window=config.dedupe_window,
    )
