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
   older than ``dedupe_window`` are pruned, and the writer's open batch is bounded.
5. **Fair.** One sender holds at most ``sender_capacity`` pending envelopes per priority (its
   share of ``capacity``; then :class:`Refused` with :data:`SENDER_SHARE`), so others are still
   accepted while it floods. The count is of pending rows, so it is the same after a restart.
6. **Storage failures refuse, they do not stop.** A durable mailbox whose disk is full (or
   fails to write) refuses new envelopes (:data:`STORAGE`) and keeps retrying what it already
   holds (completions, attempts, dead letters) until a write succeeds again.

This module holds the contract (values, the :class:`Mailbox` protocol and the synchronous
:class:`MailboxCore` protocol) and :func:`open_mailbox`. Two implementations share the
semantics: ``SqliteMailbox`` in ``_mailbox_sqlite.py`` (durable: a sans-IO SQL core driven by
one writer task that group-commits in one worker thread) and ``MemoryMailbox`` in
``_mailbox_memory.py`` (``data_dir=None``: fast, **not durable**).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias, final

import attrs
import trio

from ._lanes import PRIORITIES_HIGH_FIRST, Priority
from .errors import ActrError

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "OVERLOADED",
    "SENDER_SHARE",
    "STORAGE",
    "Accept",
    "Accepted",
    "DeadLetter",
    "Duplicate",
    "Mailbox",
    "MailboxCore",
    "MailboxError",
    "MailboxStatistics",
    "MailboxStorageError",
    "Outcome",
    "Refused",
    "SenderCounts",
    "StoredEnvelope",
    "UnknownEnvelope",
    "open_mailbox",
    "sender_capacity",
]

#: Reason of :class:`Refused` when a priority already holds ``capacity`` pending envelopes.
OVERLOADED: Final = "overloaded"
#: Reason of :class:`Refused` when the sender already holds its share of a priority
#: (``sender_capacity`` pending envelopes), while others may still be accepted.
SENDER_SHARE: Final = "sender_share"
#: Reason of :class:`Refused` when the database cannot write (disk full, I/O error).
STORAGE: Final = "storage"

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


class MailboxStorageError(MailboxError):
    """The database could not write: the disk is full (``SQLITE_FULL``, ``ENOSPC``) or failed
    (``SQLITE_IOERR``, ``EIO``). Nothing of that transaction was kept; it is a condition to
    wait out (the writer refuses new envelopes and retries what it holds), not a reason to stop.
    """


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
    """Not queued (never accepted: the sender may send it again later).

    Attributes:
        reason: :data:`OVERLOADED` (that priority holds ``capacity`` envelopes),
            :data:`SENDER_SHARE` (this sender holds its share of that priority) or
            :data:`STORAGE` (the database cannot write now).
    """

    reason: str

    def describe(self) -> str:
        """Why, in words, for the sender's ``Overloaded`` (its ``code`` is ``reason``)."""
        return _REASONS.get(self.reason, self.reason)


_REASONS: Final = {
    OVERLOADED: "mailbox full (overloaded)",
    SENDER_SHARE: "this sender's share of the mailbox is full (sender_share)",
    STORAGE: "mailbox cannot store it now: disk full or failing (storage)",
}

Outcome: TypeAlias = Accepted | Duplicate | Refused

REFUSED: Final = Refused(OVERLOADED)
REFUSED_SHARE: Final = Refused(SENDER_SHARE)
REFUSED_STORAGE: Final = Refused(STORAGE)
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
        refused: accepted items reported as :class:`Refused` (every reason).
        transactions: commits (SQLite: one per group commit; memory: one per operation).
        dead_letters: envelopes currently in the dead-letter table.
        durable: whether accepted envelopes survive a crash.
        dead_letters_dropped: oldest dead letters dropped because the table was full.
        dedupe_entries: current rows of the dedupe table (pending + dead + finished in window).
        refused_sender_share: of ``refused``, those whose sender held its share
            (:data:`SENDER_SHARE`).
        refused_storage: of ``refused``, those the database could not store (:data:`STORAGE`).
        storage_errors: transactions that failed because the database could not write (disk
            full or I/O error); each was rolled back and its work refused or retried.
        storage_failing: the last write failed that way (current): new envelopes are refused
            until one succeeds.
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
    refused_sender_share: int = 0
    refused_storage: int = 0
    storage_errors: int = 0
    storage_failing: bool = False

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
    refused_sender_share: int = 0
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
            refused_sender_share=self.refused_sender_share,
        )


def sender_capacity(capacity: int, share: float) -> int:
    """Pending envelopes one sender may hold per priority: ``share`` of ``capacity``, at least 1."""
    return max(1, int(capacity * share))


class SenderCounts:
    """Pending envelopes per ``(caller, priority)``, for the per-sender share.

    Holds only senders with something pending (an entry goes when its count reaches 0), so it
    is bounded by the pending envelopes themselves. ``limit=None`` disables the share: nothing
    is counted (the cores skip the bookkeeping entirely).
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held: dict[tuple[str, int], int] = {}

    def full(self, caller: str, priority: int, extra: int = 0) -> bool:
        """Whether ``caller`` already holds its share of ``priority`` (plus ``extra`` more)."""
        limit = self.limit
        return limit is not None and self.held.get((caller, priority), 0) + extra >= limit

    def add(self, caller: str, priority: int, n: int = 1) -> None:
        key = (caller, priority)
        self.held[key] = self.held.get(key, 0) + n

    def remove(self, caller: str, priority: int) -> None:
        key = (caller, priority)
        n = self.held.get(key, 0) - 1
        if n > 0:
            self.held[key] = n
        else:
            self.held.pop(key, None)

    def copy(self) -> dict[tuple[str, int], int]:
        return dict(self.held)


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


def open_mailbox(config: Config) -> Mailbox:
    """The mailbox a node with this config uses.

    ``config.data_dir is None`` gives a :class:`~actr_trio._mailbox_memory.MemoryMailbox`,
    which is **not durable**; otherwise a :class:`~actr_trio._mailbox_sqlite.SqliteMailbox` on
    ``data_dir / "mailbox.sqlite3"`` (the directory is created when the mailbox runs).
    """
    # Imported here: both build on this module (and sqlite3 loads only if needed).
    share = sender_capacity(config.mailbox_capacity, config.mailbox_sender_share)
    if config.data_dir is None:
        from ._mailbox_memory import MemoryMailbox

        return MemoryMailbox(
            capacity=config.mailbox_capacity,
            dedupe_window=config.dedupe_window,
            sender_capacity=share,
        )
    from ._mailbox_sqlite import SqliteMailbox

    return SqliteMailbox(
        config.data_dir / "mailbox.sqlite3",
        synchronous=config.mailbox_synchronous,
        capacity=config.mailbox_capacity,
        dedupe_window=config.dedupe_window,
        sender_capacity=share,
    )
