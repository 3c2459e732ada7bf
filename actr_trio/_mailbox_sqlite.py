"""The durable mailbox: :class:`SqliteMailbox`, the Trio shell over :class:`SqliteCore`.

Group commit with one wakeup per batch: every caller adds its operation to the *open batch* and
waits on that batch's one event; the writer task (:meth:`SqliteMailbox.run`) takes the whole
batch (up to a bound) together with every queued completion, applies it as one transaction in
one worker thread, and sets the event: one thread hop and one ``run_sync_soon`` per batch,
none per envelope. The SQL is in :mod:`actr_trio._mailbox_sqlcore`, the file and its schema in
:mod:`actr_trio._mailbox_schema` (only these three modules touch ``sqlite3``).

Invariants: ``accept`` returns only after COMMIT; a batch taken by the writer is always
committed or failed as a whole, never dropped; an operation cancelled before it joined a batch
has no effect.

A full or failing disk (``SQLITE_FULL``, ``SQLITE_IOERR``: :class:`MailboxStorageError`) does
not stop the writer. The batch is rolled back and applied again without its new work: accepts
are refused (:data:`~actr_trio._mailbox.STORAGE`, the sender gets ``Overloaded``), recording
outgoing requests fails, and what the mailbox already holds (completions, attempts, dead
letters) is committed, or, if that fails too, carried over to the next batch and retried after
a backoff (its callers wait). Until a write succeeds again, new accepts are refused at once
within each backoff, then tried for real; the first full commit that succeeds ends it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar, cast, final

import attrs
import trio

from ._logging import MAILBOX, RateLimiter
from ._mailbox import (
    REFUSED_STORAGE,
    STORAGE,
    Accept,
    Counters,
    DeadLetter,
    MailboxError,
    MailboxStatistics,
    MailboxStorageError,
    Outcome,
    Outgoing,
    StoredEnvelope,
)
from ._mailbox_sqlcore import AcceptCall, Call, Failed, RecordCall, SqliteCore
from .errors import Overloaded

if TYPE_CHECKING:
    from ._config import Synchronous

__all__ = ["SqliteCore", "SqliteMailbox"]

logger = logging.getLogger(MAILBOX)

T = TypeVar("T")

# At most this many envelopes (or other operations) per transaction, so that one commit, and
# the latency of the callers waiting on it, stays bounded. A caller that finds the open batch
# full, or others already waiting, waits its turn (first come, first served: the mailbox's
# backpressure). One accept's items are never split: a larger one commits alone.
_MAX_BATCH: Final = 1024
# Scheduler rounds the writer yields, at most, while the open batch still grows (see _gather).
_GATHER_ROUNDS: Final = 3
# Seconds run() may spend, once cancelled, committing what was queued before it closes the DB.
_CLOSE_GRACE: Final = 5.0
# After a write failed for lack of space (or an I/O error): seconds during which new accepts
# are refused at once and held work waits, doubling per failure up to the maximum, which is
# how late accepting resumes once space is back (a write is tried at least this often).
_STORAGE_BACKOFF_MIN: Final = 0.05
_STORAGE_BACKOFF_MAX: Final = 1.0


@final
class _Batch:
    """The operations of one transaction, the one event their callers wait on, the results."""

    __slots__ = ("calls", "done", "failure", "results", "size")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.size = 0  # envelopes + other operations, for the bound
        self.done = trio.Event()
        self.results: list[object] = []
        self.failure: MailboxError | None = None

    def add(self, call: Call, size: int) -> int:
        """Queue ``call``; return its index in the results."""
        self.calls.append(call)
        self.size += size
        return len(self.calls) - 1

    def fail(self, failure: MailboxError) -> None:
        self.failure = failure
        self.done.set()


@final
class _Moved:
    """The result of a call that could not be written with its batch (the disk was full): it
    moved to a later batch, where its caller waits for it."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index


@final
class _Waiter:
    """A caller that found the open batch full: the writer adds its call for it, in order."""

    __slots__ = ("batch", "call", "granted", "index", "size")

    def __init__(self, call: Call, size: int) -> None:
        self.call = call
        self.size = size
        self.granted = trio.Event()
        self.batch: _Batch | None = None  # None once granted: the mailbox closed
        self.index = 0


@final
class SqliteMailbox:
    """The durable :class:`Mailbox`: a SQLite file in WAL mode, written with group commit.

    One writer task (:meth:`run`) waits for work, lets every caller that is ready join the open
    batch, then applies the batch and every queued :meth:`complete` in one transaction in a
    single worker thread (``CapacityLimiter(1)``, ``abandon_on_cancel=False``) and wakes the
    batch's callers with one event. A lone operation commits at once: there is no timer.

    Args:
        path: the database file; its directory is created if missing.
        synchronous: SQLite ``synchronous``: ``"NORMAL"`` survives a process crash, ``"FULL"``
            also an OS crash or power loss.
        capacity: pending envelopes per priority before :class:`Refused`.
        dedupe_window: seconds a finished request's response is kept to answer retries.
        clock: wall clock for dedupe timestamps (inject a fake one in tests).
        dead_letter_capacity: dead letters kept before the oldest is dropped (default:
            ``capacity``).
        sender_capacity: pending envelopes one caller may hold per priority before
            :class:`Refused` (its share; ``None``: only ``capacity`` applies).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        capacity: int = 100_000,
        dedupe_window: float = 600.0,
        clock: Callable[[], float] = time.time,
        dead_letter_capacity: int | None = None,
        sender_capacity: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self._capacity = capacity
        self._window = dedupe_window
        self._dead_capacity = dead_letter_capacity
        self._sender_capacity = sender_capacity
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._open = _Batch()
        # Set when the open batch or the completions gained something; replaced at each take.
        self._wake = trio.Event()
        self._waiters: deque[_Waiter] = deque()
        # Bounded by the number of queued envelopes: each is completed at most once.
        self._completions: list[tuple[int, bytes | None]] = []
        self._finished: list[str] = []
        self._started = False
        self._closed = False
        self._stats = Counters().statistics({}, durable=True)
        # Storage failures (see the module docstring): while _retry_at is set, the last write
        # failed for lack of space; before that time new accepts are refused at once. While
        # _carrying, held work could not be written either: the writer waits until then.
        self._retry_at: float | None = None
        self._carrying = False
        self._episode = False  # a failure was logged and new work was not written since
        self._backoff = _STORAGE_BACKOFF_MIN
        self._storage_errors = 0
        self._refused_storage = 0
        self._rate = RateLimiter(trio.current_time)

    def __repr__(self) -> str:
        return f"<SqliteMailbox {str(self.path)!r} synchronous={self.synchronous}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report ``started()``, then commit queued operations until cancelled.

        Raises:
            MailboxError: the database could not be opened or a commit failed (every waiting
                caller gets the same error); the mailbox is closed afterwards.
            RuntimeError: ``run`` was called twice.

        Cancellation: the way to stop it. Whatever was queued before is committed (shielded,
        bounded by a grace period), waiters of anything left get :class:`MailboxError`, and the
        database is closed. Later calls raise :class:`MailboxError`.

        Resource handling: if a commit fails, nothing of its batch is kept, including the
        completions it carried: those envelopes are replayed at the next start (at least
        once), and the node should stop, since this exception ends ``run``. A commit that
        fails because the disk is full or failing does not end ``run``: see the module
        docstring.
        """
        if self._started:
            raise RuntimeError("SqliteMailbox.run() may be called only once")
        self._started = True
        try:
            core = await trio.to_thread.run_sync(
                lambda: SqliteCore.open(
                    self.path,
                    synchronous=self.synchronous,
                    capacity=self._capacity,
                    dedupe_window=self._window,
                    dead_letter_capacity=self._dead_capacity,
                    sender_capacity=self._sender_capacity,
                ),
                limiter=self._limiter,
                abandon_on_cancel=False,
            )
        except BaseException as exc:
            self._close(MailboxError(f"mailbox {str(self.path)!r} could not be opened"), exc)
            raise
        try:
            self._stats = core.statistics()
            task_status.started()
            while True:
                await self._gather()
                await self._commit(core, self._take())
        finally:
            self._closed = True  # nothing joins any more: the last batch is the open one
            last = self._open
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                with contextlib.suppress(MailboxError):  # logged; its callers got the error
                    await self._commit(core, self._take())
            closed = MailboxError(f"mailbox {str(self.path)!r} is closed")
            if not last.done.is_set():
                last.fail(closed)
            self._close(closed, None)
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                await trio.to_thread.run_sync(
                    core.close, limiter=self._limiter, abandon_on_cancel=False
                )

    def _close(self, error: MailboxError, cause: BaseException | None) -> None:
        """Fail whatever is still queued and refuse anything later (run() is ending)."""
        self._closed = True
        error.__cause__ = cause
        batch, self._open = self._open, _Batch()
        if not batch.done.is_set():
            batch.fail(error)
        self._completions.clear()  # never committed: replayed at the next start
        self._finished.clear()
        while self._waiters:  # their calls were never queued: they raise MailboxError
            self._waiters.popleft().granted.set()

    async def _gather(self) -> None:
        """Wait for work, then let every caller that is ready join before the batch is taken.

        Callers already runnable (say, woken by the previous commit) add their next operation
        in the scheduler round after this one: keep yielding while the batch grows, so that
        everything waiting shares one transaction, for a few rounds at most (a trickle that
        adds one caller per round must not hold the first one back until the bound).
        """
        await self._wake.wait()
        if self._carrying and self._retry_at is not None:
            await trio.sleep_until(self._retry_at)  # nothing could be written: back off
        size = -1
        for _ in range(_GATHER_ROUNDS):
            if size == self._open.size or self._open.size >= _MAX_BATCH:
                break
            size = self._open.size
            await trio.lowlevel.checkpoint()

    def _take(self) -> tuple[_Batch, list[tuple[int, bytes | None]], list[str]]:
        batch, self._open = self._open, _Batch()
        completions, self._completions = self._completions, []
        finished, self._finished = self._finished, []
        self._wake = trio.Event()
        self._admit_waiters()
        return batch, completions, finished

    def _admit_waiters(self) -> None:
        """Add the calls of waiting callers to the new open batch, in order, while they fit."""
        batch = self._open
        while self._waiters:
            waiter = self._waiters[0]
            if batch.size and batch.size + waiter.size > _MAX_BATCH:
                break
            self._waiters.popleft()
            waiter.batch, waiter.index = batch, batch.add(waiter.call, waiter.size)
            waiter.granted.set()
            self._wake.set()

    async def _commit(
        self,
        core: SqliteCore,
        taken: tuple[_Batch, list[tuple[int, bytes | None]], list[str]],
    ) -> None:
        batch, completions, finished = taken
        if not batch.calls and not completions and not finished:
            batch.done.set()
            return
        try:
            try:
                results, stats = await self._apply(core, completions, finished, batch.calls)
            except MailboxStorageError as exc:
                self._storage_failed(exc)
                try:
                    results, stats = await self._apply(
                        core, completions, finished, batch.calls, refuse_new=True
                    )
                except MailboxStorageError as again:
                    self._storage_failed(again)
                    self._carry_over(batch, completions, finished)
                    return
                self._carrying = False
                self._count_refused(batch.calls)
            else:
                self._storage_ok(batch.calls)
        except MailboxError as exc:
            logger.error("mailbox commit failed: %s", exc)
            batch.fail(exc)
            raise
        except BaseException:
            batch.fail(MailboxError("mailbox writer failed"))
            raise
        batch.results = results
        self._stats = stats
        batch.done.set()

    async def _apply(
        self,
        core: SqliteCore,
        completions: list[tuple[int, bytes | None]],
        finished: list[str],
        calls: list[Call],
        *,
        refuse_new: bool = False,
    ) -> tuple[list[object], MailboxStatistics]:
        # Shielded: a batch taken by the writer is always committed (or fails), never
        # dropped halfway because the writer was cancelled before the thread started.
        now = self._clock()
        with trio.CancelScope(shield=True):
            applied = await trio.to_thread.run_sync(
                lambda: core.apply_batch(now, completions, finished, calls, refuse_new=refuse_new),
                limiter=self._limiter,
                abandon_on_cancel=False,
            )
        return applied

    def _storage_failed(self, exc: MailboxStorageError) -> None:
        """A transaction failed for lack of space: count it, log it (rate-limited), back off."""
        self._storage_errors += 1
        self._episode = True
        self._retry_at = trio.current_time() + self._backoff
        self._backoff = min(self._backoff * 2, _STORAGE_BACKOFF_MAX)
        self._rate.log(
            logger,
            logging.WARNING,
            "storage",
            "mailbox %s cannot write (%s): refusing new envelopes, retrying what it holds",
            self.path,
            exc,
        )

    def _storage_ok(self, calls: Sequence[Call]) -> None:
        """A whole batch was written: try accepts again. Only new work written (an accept or
        a record, which need room) ends the episode: a batch of reads or completions may
        fit in a full file (a completion shrinks its row)."""
        self._retry_at = None
        self._carrying = False
        if not self._episode or not any(isinstance(c, AcceptCall | RecordCall) for c in calls):
            return
        self._episode = False
        self._backoff = _STORAGE_BACKOFF_MIN
        self._rate.log(
            logger,
            logging.WARNING,
            "storage ok",
            "mailbox %s writes again (%d failed transactions so far): accepting",
            self.path,
            self._storage_errors,
        )

    def _refusing(self) -> bool:
        """Whether new work is refused at once (the disk was full within the backoff)."""
        return self._retry_at is not None and trio.current_time() < self._retry_at

    def _count_refused(self, calls: Sequence[Call]) -> None:
        for call in calls:
            if isinstance(call, AcceptCall):
                self._refused_storage += len(call.items)

    def _carry_over(
        self, batch: _Batch, completions: list[tuple[int, bytes | None]], finished: list[str]
    ) -> None:
        """Nothing of ``batch`` could be written: refuse its new work now and move the rest
        (what the mailbox already holds) to the next batch, after the backoff."""
        results: list[object] = []
        for call in batch.calls:
            if isinstance(call, AcceptCall):
                results.append([REFUSED_STORAGE] * len(call.items))
            elif isinstance(call, RecordCall):
                results.append(Failed(MailboxStorageError("the mailbox cannot write now")))
            else:
                results.append(_Moved(self._open, self._open.add(call, 1)))
        self._count_refused(batch.calls)
        self._carrying = True
        # Completions stay queued (first, as they were): never lost, only later.
        self._completions[:0] = completions
        self._finished[:0] = finished
        self._wake.set()
        batch.results = results
        batch.done.set()

    async def _submit(self, call: Callable[[SqliteCore, float], T], size: int = 1) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise MailboxError(f"mailbox {str(self.path)!r} is closed")
        batch = self._open
        if self._waiters or (batch.size and batch.size + size > _MAX_BATCH):
            batch, index = await self._wait_for_room(call, size)
        else:
            index = batch.add(call, size)
            self._wake.set()
        while True:
            await batch.done.wait()
            if batch.failure is not None:
                # One exception object per caller: several tasks raising the same one would
                # mix their tracebacks.
                raise MailboxError(str(batch.failure)) from batch.failure
            result = batch.results[index]
            if type(result) is not _Moved:
                break
            batch, index = result.batch, result.index  # carried over: the disk was full
        if isinstance(result, Failed):
            raise result.error
        return cast("T", result)

    async def _wait_for_room(self, call: Call, size: int) -> tuple[_Batch, int]:
        waiter = _Waiter(call, size)
        self._waiters.append(waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if not waiter.granted.is_set():  # cancelled while waiting: nothing was queued
                self._waiters.remove(waiter)
            raise
        if waiter.batch is None:
            raise MailboxError(f"mailbox {str(self.path)!r} is closed")
        return waiter.batch, waiter.index

    async def accept(self, items: Sequence[Accept]) -> list[Outcome]:
        """Accept items in one transaction (shared with whatever else is queued).

        Returns:
            One outcome per item, in input order, once the transaction committed. Duplicates
            within ``items`` are detected too (the second is ``Duplicate(pending=True)``).

        Raises:
            MailboxError: closed, or the commit failed (nothing of the batch was kept).

        Cancellation: if cancelled while waiting for its turn (the open batch full), nothing was
        accepted; if cancelled after, the items may have been committed (a retry then gets
        :class:`Duplicate`), so never acknowledge to a sender without the outcome.
        """
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        if self._refusing() and not self._closed:
            await trio.lowlevel.checkpoint()
            self._refused_storage += len(items)
            return [REFUSED_STORAGE] * len(items)
        return await self._submit(AcceptCall(items), len(items))

    async def record_outgoing(self, *items: Outgoing) -> None:
        """Record outgoing calls/tells before they are sent (committed before returning).

        Raises:
            Overloaded: ``code="storage"``: the disk is full or failing; nothing was recorded
                (and nothing will be sent): retry later.
            MailboxError: closed, or the commit failed.
        """
        try:
            if self._refusing() and not self._closed:
                await trio.lowlevel.checkpoint()
                raise MailboxStorageError("the mailbox cannot write now")
            await self._submit(RecordCall(items), len(items))
        except MailboxStorageError as exc:
            raise Overloaded(
                f"{items[0].request_id if items else ''}: this node cannot record it "
                "(disk full or failing)",
                code=STORAGE,
            ) from exc

    def finish_outgoing(self, request_id: str) -> None:
        """Forget an outgoing request at the next group commit (never blocks; best effort)."""
        if self._closed:
            return
        self._finished.append(request_id)
        self._wake.set()

    async def outgoing(self) -> list[Outgoing]:
        """Outstanding outgoing requests in send order (those past their deadline dropped)."""
        now_ms = int(time.time() * 1000)
        return await self._submit(lambda core, now: core.outgoing(now_ms))

    def complete(self, envelope_id: int, response: bytes | None) -> None:
        """Queue the removal of a handled envelope for the next group commit (never blocks).

        The envelope's row becomes the dedupe record ``(caller, request_id) -> response`` with
        a timestamp for the dedupe window. Unknown ids are ignored. Completions are applied
        before the other operations of their transaction. Use :meth:`flush` to wait for them.

        Raises:
            MailboxError: the mailbox is closed.
        """
        if self._closed:
            raise MailboxError(f"mailbox {str(self.path)!r} is closed")
        self._completions.append((envelope_id, response))
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything queued before the call (including completions) is committed.

        Raises:
            MailboxError: closed, or the commit failed.

        Cancellation: safe; the queued work is committed anyway.
        """
        await self._submit(lambda core, now: None)

    async def pending(self) -> list[StoredEnvelope]:
        """Accepted but not completed envelopes in id order (replay at start; counts ``replayed``).

        Raises:
            MailboxError: closed, or the database failed.

        Cancellation: safe, read only (``replayed`` may still count the read).
        """
        return await self._submit(lambda core, now: core.pending())

    async def begin_attempt(self, envelope_id: int) -> int:
        """Count one more handler attempt and commit it before returning.

        Call it before running the handler, so a handler that kills the process still counts.

        Returns:
            The new attempt count.

        Raises:
            UnknownEnvelope: the envelope is not queued.
            MailboxError: closed, or the commit failed.

        Cancellation: if cancelled after the operation was queued it may still be counted.
        """
        return await self._submit(lambda core, now: core.begin_attempt(envelope_id))

    async def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        """Commit: queued envelopes that never ran give back the attempt counted at accept
        (:data:`~actr_trio._mailbox.ACCEPTED_ATTEMPTS`); called at a graceful stop."""
        if envelope_ids:
            ids = list(envelope_ids)
            await self._submit(lambda core, now: core.release_attempts(ids))
        else:
            await trio.lowlevel.checkpoint()

    async def dead_letter(self, envelope_id: int, reason: str) -> None:
        """Move a queued envelope to the dead-letter table (committed before returning).

        Raises:
            UnknownEnvelope: the envelope is not queued.
            MailboxError: closed, or the commit failed.

        Cancellation: if cancelled after the operation was queued it may still happen.
        """
        await self._submit(lambda core, now: core.dead_letter(envelope_id, reason, now))

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead letters, oldest first.

        Cancellation: safe, read only.
        """
        return await self._submit(lambda core, now: core.dead_letters())

    async def redrive(self, envelope_id: int | None = None) -> list[StoredEnvelope]:
        """Queue one (or every) dead letter again with ``attempts=0`` and a new id.

        Returns:
            The queued envelopes, for the runtime to schedule.

        Raises:
            UnknownEnvelope: ``envelope_id`` is not dead-lettered.
            MailboxError: closed, or the commit failed.

        Cancellation: if cancelled after the operation was queued it may still happen; the
        envelopes are then replayed by :meth:`pending` at the next start.
        """
        return await self._submit(lambda core, now: core.redrive(envelope_id))

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; their keys stay duplicates for the dedupe window.

        Returns:
            How many were purged.

        Cancellation: if cancelled after the operation was queued it may still happen.
        """
        return await self._submit(lambda core, now: core.purge_dead_letters(now))

    async def limit_pages(self, pages: int | None) -> int:
        """For tests: make the disk "full" (``pages=0``: no room beyond the file's current
        size) or give space back (``None``); see :meth:`SqliteCore.limit_pages`. Runs as held
        work, so it also gets through while writes fail."""
        return await self._submit(lambda core, now: core.limit_pages(pages))

    def statistics(self) -> MailboxStatistics:
        """The counters as of the last commit (``durable=True``), with the storage failures
        counted since the mailbox was opened."""
        stats = self._stats
        if not self._storage_errors:
            return stats
        return attrs.evolve(
            stats,
            refused=stats.refused + self._refused_storage,
            refused_storage=self._refused_storage,
            storage_errors=self._storage_errors,
            storage_failing=self._episode,
        )
