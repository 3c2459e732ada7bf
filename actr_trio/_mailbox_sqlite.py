"""The durable mailbox: :class:`SqliteMailbox` (Trio shell) over :class:`SqliteCore` (SQL).

:class:`SqliteCore` is synchronous and sans-Trio: every method runs in the writer's one worker
thread, inside a transaction opened by :meth:`SqliteCore.begin` (or
:meth:`SqliteCore.apply_batch`). :class:`SqliteMailbox` is the thin Trio shell: one writer task,
group commit, waiters. This is the only module that touches ``sqlite3``: its errors become
:class:`~actr_trio._mailbox.MailboxError` here. Invariants: ``accept`` returns only after COMMIT;
a batch taken from the writer's channel is always committed or failed as a whole, never
dropped; the core's counters equal the committed (or current-transaction) database state,
because a rollback restores them; ids come from ``meta.last_id`` and are never reused.

Tables: ``queue`` (pending envelopes), ``seen`` (the dedupe table: one row per key that is
pending, dead-lettered, or finished within the window), ``dead_letters`` and ``meta``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Generic, TypeVar, final

import attrs
import trio

from ._datadir import make_private_dir, private_file
from ._lanes import Priority
from ._logging import MAILBOX
from ._mailbox import (
    ACCEPTED_ATTEMPTS,
    DEAD,
    DONE,
    PENDING,
    PRUNE_INTERVAL,
    REFUSED,
    Accept,
    Accepted,
    Counters,
    DeadLetter,
    MailboxError,
    MailboxStatistics,
    Outcome,
    Outgoing,
    StoredEnvelope,
    UnknownEnvelope,
    duplicate_of,
)

if TYPE_CHECKING:
    from ._config import Synchronous

logger = logging.getLogger(MAILBOX)

T = TypeVar("T")

# Operations (accept batches, begin_attempt, ...) waiting for the SQLite writer. When this many
# are queued, callers of the async methods wait: that is the mailbox's backpressure. 256 matches
# the batch size at which SQLite's per-commit cost stops dominating (measured: ~142k/s).
_OP_BUFFER: Final = 256
# At most this many operations per transaction (draining also takes blocked senders' items),
# so one commit, and the latency of the callers waiting on it, stays bounded.
_MAX_BATCH_OPS: Final = 1024
# Seconds run() may spend, once cancelled, committing what was queued before it closes the DB.
_CLOSE_GRACE: Final = 5.0


SCHEMA_VERSION: Final = 1

# Seconds to wait for another connection's lock when opening: a crashed process has released
# its lock already, so only a live second user of the same file waits this long, then fails.
_LOCK_TIMEOUT: Final = 1.0

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state INTEGER NOT NULL,          -- {PENDING} pending, {DONE} done, {DEAD} dead-lettered
    response BLOB,
    finished_at REAL,
    PRIMARY KEY (caller, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_expiry ON seen (finished_at) WHERE state = {DONE};
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,         -- dead-letter order
    id INTEGER NOT NULL UNIQUE,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    data BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,         -- send order
    request_id TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    lane INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    deadline_ms INTEGER NOT NULL     -- unix ms, 0 = none
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""

_SEEN_INSERT: Final = (
    f"INSERT INTO seen (caller, request_id, state) VALUES (?, ?, {PENDING}) ON CONFLICT DO NOTHING"
)
_SEEN_GET: Final = (
    "SELECT state, response, finished_at FROM seen WHERE caller = ? AND request_id = ?"
)
_SEEN_SET: Final = (
    "UPDATE seen SET state = ?, response = ?, finished_at = ? WHERE caller = ? AND request_id = ?"
)
_QUEUE_INSERT: Final = (
    "INSERT INTO queue (id, caller, request_id, priority, data, attempts) VALUES (?, ?, ?, ?, ?, ?)"
)
_QUEUE_TAKE: Final = (
    "DELETE FROM queue WHERE id = ? RETURNING id, caller, request_id, priority, data, attempts"
)
_DEAD_COLUMNS: Final = "id, caller, request_id, priority, data, attempts, reason, at"


@final
class SqliteCore:
    """The mailbox semantics (:class:`~actr_trio._mailbox.MailboxCore`) on one SQLite connection.

    Not thread-safe: one thread at a time (the writer's limiter guarantees it). Mutating methods
    must run between :meth:`begin` and :meth:`commit`.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        capacity: int,
        dedupe_window: float,
        dead_letter_capacity: int | None,
    ) -> None:
        self._conn = connection
        self._cur = connection.cursor()
        self._capacity = capacity
        self._window = dedupe_window
        self._dead_capacity = capacity if dead_letter_capacity is None else dead_letter_capacity
        self._counts: dict[int, int] = dict.fromkeys(map(int, Priority), 0)
        self._last_prune = -math.inf
        self._saved: tuple[Counters, dict[int, int], float] | None = None
        self.counters = Counters()
        cur = self._cur
        for priority, n in cur.execute("SELECT priority, count(*) FROM queue GROUP BY priority"):
            self._counts[priority] = n
        c = self.counters
        (c.dead_letters,) = cur.execute("SELECT count(*) FROM dead_letters").fetchone()
        (c.dedupe_entries,) = cur.execute("SELECT count(*) FROM seen").fetchone()
        (c.last_id,) = cur.execute(
            "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0),"
            " coalesce((SELECT max(id) FROM queue), 0),"
            " coalesce((SELECT max(id) FROM dead_letters), 0))"
        ).fetchone()
        self._stored_last_id = c.last_id

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        capacity: int,
        dedupe_window: float,
        dead_letter_capacity: int | None = None,
    ) -> SqliteCore:
        """Open (creating if needed) the database at ``path`` in WAL mode, exclusively.

        The connection keeps an exclusive lock until it is closed, so a second node on the same
        ``data_dir`` fails here instead of sharing (and corrupting the semantics of) the mailbox.
        A process that dies releases the lock with it.

        Raises:
            MailboxError: the file cannot be opened, is in use by another connection or process,
                is not a mailbox of a known schema version, or ``synchronous`` is invalid.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise MailboxError(f"synchronous={synchronous!r} must be 'NORMAL' or 'FULL'")
        with _translate(f"cannot open mailbox {str(path)!r}"):
            make_private_dir(path.parent)
            # SQLite creates files with the umask (often 0644); the WAL file copies the mode
            # of the database, so a database created 0600 first keeps both private.
            private_file(path)
            wal = path.with_name(path.name + "-wal")
            if wal.exists():  # left by a crash, maybe of a version that did not tighten it
                private_file(wal)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=_LOCK_TIMEOUT
            )
            try:
                # Before the first WAL access: no shared-memory index, and the write lock taken
                # by the schema transaction below is held until close.
                conn.execute("PRAGMA locking_mode = EXCLUSIVE")
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                if mode != "wal":
                    raise MailboxError(f"{str(path)!r}: cannot use WAL (journal_mode={mode})")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version not in (0, SCHEMA_VERSION):
                    raise MailboxError(f"{str(path)!r}: unknown mailbox schema version {version}")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("COMMIT")
                return cls(
                    conn,
                    capacity=capacity,
                    dedupe_window=dedupe_window,
                    dead_letter_capacity=dead_letter_capacity,
                )
            except BaseException:
                conn.close()
                raise

    def close(self) -> None:
        """Close the connection; an open transaction is discarded (as a crash would)."""
        with _translate("cannot close mailbox"):
            self._conn.close()

    # -- transactions ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a write transaction and remember the counters to restore on rollback."""
        self._saved = (attrs.evolve(self.counters), dict(self._counts), self._last_prune)
        with _translate("cannot begin a mailbox transaction"):
            self._cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit (persisting ``last_id`` when it moved); on failure roll back and raise."""
        try:
            with _translate("mailbox commit failed"):
                if self.counters.last_id != self._stored_last_id:
                    self._cur.execute(
                        "INSERT INTO meta (key, value) VALUES ('last_id', ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (self.counters.last_id,),
                    )
                self._cur.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._stored_last_id = self.counters.last_id
        self.counters.transactions += 1
        self._saved = None

    def rollback(self) -> None:
        """Discard the transaction and restore the counters it changed."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._cur.execute("ROLLBACK")
        if self._saved is not None:
            self.counters, self._counts, self._last_prune = self._saved
            self._saved = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``begin()``, the body, ``commit()``; roll back if anything raises."""
        self.begin()
        try:
            with _translate("mailbox transaction failed"):
                yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def apply_batch(
        self,
        now: float,
        completions: Sequence[tuple[int, bytes | None]],
        ops: Sequence[Callable[[SqliteCore, float], None]],
    ) -> MailboxStatistics:
        """One group commit: completions first (they free capacity), then ``ops``, then prune.

        Returns:
            The statistics after the commit.

        Raises:
            MailboxError: the transaction failed and was rolled back.
        """
        with self.transaction():
            for envelope_id, response in completions:
                self.complete(envelope_id, response, now)
            for op in ops:
                op(self, now)
            self.maybe_prune(now)
        return self.statistics()

    # -- the mailbox semantics ------------------------------------------------------------------

    def accept(self, items: Sequence[Accept], now: float) -> list[Outcome]:
        cur, counts, c = self._cur, self._counts, self.counters
        cutoff = now - self._window
        out: list[Outcome] = []
        for item in items:
            key = (item.caller, item.request_id)
            prio = item.priority
            full = counts.get(prio, 0) >= self._capacity
            if full or not cur.execute(_SEEN_INSERT, key).rowcount:
                row = cur.execute(_SEEN_GET, key).fetchone()
                dup = None if row is None else duplicate_of(row[0], row[1], row[2], cutoff)
                if dup is not None:
                    c.duplicates += 1
                    out.append(dup)
                    continue
                if full:
                    c.refused += 1
                    out.append(REFUSED)
                    continue
                cur.execute(_SEEN_SET, (PENDING, None, None, *key))  # expired entry, reused
            else:
                c.dedupe_entries += 1
            c.last_id += 1
            cur.execute(_QUEUE_INSERT, (c.last_id, *key, prio, item.data, ACCEPTED_ATTEMPTS))
            counts[prio] = counts.get(prio, 0) + 1
            c.accepted += 1
            out.append(
                Accepted(StoredEnvelope(c.last_id, *key, prio, item.data, ACCEPTED_ATTEMPTS))
            )
        return out

    def complete(self, envelope_id: int, response: bytes | None, now: float) -> bool:
        row = self._cur.execute(_QUEUE_TAKE, (envelope_id,)).fetchone()
        if row is None:
            return False
        _, caller, request_id, priority, _, _ = row
        self._counts[priority] -= 1
        self._cur.execute(_SEEN_SET, (DONE, response, now, caller, request_id))
        self.counters.completed += 1
        return True

    def pending(self) -> list[StoredEnvelope]:
        rows = self._cur.execute(
            "SELECT id, caller, request_id, priority, data, attempts FROM queue ORDER BY id"
        )
        result = [_envelope(row) for row in rows]
        self.counters.replayed += len(result)
        return result

    def begin_attempt(self, envelope_id: int) -> int:
        row = self._cur.execute(
            "UPDATE queue SET attempts = attempts + 1 WHERE id = ? RETURNING attempts",
            (envelope_id,),
        ).fetchone()
        if row is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        attempts: int = row[0]
        return attempts

    def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        self._cur.executemany(
            "UPDATE queue SET attempts = attempts - 1 WHERE id = ? AND attempts > 0",
            [(i,) for i in envelope_ids],
        )

    def dead_letter(self, envelope_id: int, reason: str, now: float) -> None:
        cur = self._cur
        row = cur.execute(_QUEUE_TAKE, (envelope_id,)).fetchone()
        if row is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        self._counts[row[3]] -= 1
        cur.execute(
            f"INSERT INTO dead_letters ({_DEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, reason, now),
        )
        cur.execute(_SEEN_SET, (DEAD, None, None, row[1], row[2]))
        self.counters.dead_letters += 1
        if self.counters.dead_letters > self._dead_capacity:
            oldest = cur.execute(
                "DELETE FROM dead_letters WHERE seq = (SELECT min(seq) FROM dead_letters)"
                " RETURNING id, caller, request_id"
            ).fetchone()
            cur.execute(_SEEN_SET, (DONE, None, now, oldest[1], oldest[2]))
            self.counters.dead_letters -= 1
            self.counters.dead_letters_dropped += 1
            logger.warning("dead-letter table full: dropped envelope %d", oldest[0])

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._cur.execute(f"SELECT {_DEAD_COLUMNS} FROM dead_letters ORDER BY seq")
        return [DeadLetter(_envelope(row[:6]), row[6], row[7]) for row in rows]

    def redrive(self, envelope_id: int | None) -> list[StoredEnvelope]:
        cur, c = self._cur, self.counters
        if envelope_id is None:
            rows = cur.execute(
                "DELETE FROM dead_letters RETURNING seq, caller, request_id, priority, data"
            ).fetchall()
            rows.sort()  # RETURNING order is unspecified: keep dead-letter order
        else:
            rows = cur.execute(
                "DELETE FROM dead_letters WHERE id = ?"
                " RETURNING seq, caller, request_id, priority, data",
                (envelope_id,),
            ).fetchall()
            if not rows:
                raise UnknownEnvelope(f"envelope {envelope_id} is not dead-lettered")
        out = []
        for _, caller, request_id, priority, data in rows:
            c.last_id += 1
            cur.execute(_QUEUE_INSERT, (c.last_id, caller, request_id, priority, data, 0))
            cur.execute(_SEEN_SET, (PENDING, None, None, caller, request_id))
            self._counts[priority] = self._counts.get(priority, 0) + 1
            out.append(StoredEnvelope(c.last_id, caller, request_id, Priority(priority), data, 0))
        c.dead_letters -= len(rows)
        return out

    def purge_dead_letters(self, now: float) -> int:
        rows = self._cur.execute("DELETE FROM dead_letters RETURNING caller, request_id").fetchall()
        self._cur.executemany(
            _SEEN_SET, [(DONE, None, now, caller, request_id) for caller, request_id in rows]
        )
        self.counters.dead_letters = 0
        return len(rows)

    def maybe_prune(self, now: float) -> int:
        if 0 <= now - self._last_prune < PRUNE_INTERVAL:
            return 0
        self._last_prune = now
        pruned: int = self._cur.execute(
            f"DELETE FROM seen WHERE state = {DONE} AND finished_at < ?", (now - self._window,)
        ).rowcount
        self.counters.dedupe_entries -= pruned
        return pruned

    # -- the sender's outbox (issue 6: outstanding requests survive a sender crash) -----------

    def record_outgoing(self, items: Sequence[Outgoing]) -> None:
        self._cur.executemany(
            "INSERT OR REPLACE INTO outbox (request_id, target, lane, kind, data, deadline_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(o.request_id, o.target, o.lane, o.kind, o.data, o.deadline_ms) for o in items],
        )

    def finish_outgoing(self, request_ids: Sequence[str]) -> None:
        self._cur.executemany(
            "DELETE FROM outbox WHERE request_id = ?", [(r,) for r in request_ids]
        )

    def outgoing(self, now_ms: int) -> list[Outgoing]:
        """Outstanding requests in send order; those past their deadline are dropped."""
        self._cur.execute(
            "DELETE FROM outbox WHERE deadline_ms != 0 AND deadline_ms <= ?", (now_ms,)
        )
        rows = self._cur.execute(
            "SELECT request_id, target, lane, kind, data, deadline_ms FROM outbox ORDER BY seq"
        ).fetchall()
        return [Outgoing(*row) for row in rows]

    def statistics(self) -> MailboxStatistics:
        return self.counters.statistics(self._counts, durable=True)


class _Op(Generic[T]):
    """One operation for the SQLite writer and the waiter that learns its result."""

    __slots__ = ("apply", "done", "error", "failure", "result")

    def __init__(self, apply: Callable[[SqliteCore, float], T]) -> None:
        self.apply = apply
        self.done = trio.Event()
        self.result: tuple[T] | None = None
        self.error: MailboxError | None = None  # this operation's own error
        self.failure: MailboxError | None = None  # its batch's error, shared with others

    def run(self, core: SqliteCore, now: float) -> None:
        # In the worker thread, inside the batch's transaction. UnknownEnvelope fails this
        # operation alone (cores check before they write); any other error aborts the batch.
        try:
            self.result = (self.apply(core, now),)
        except UnknownEnvelope as exc:
            self.error = exc

    def fail(self, failure: MailboxError) -> None:
        self.result = None
        self.failure = failure
        self.done.set()

    def unwrap(self) -> T:
        if self.failure is not None:
            # One exception object per waiter: several tasks raising the same one would mix
            # their tracebacks.
            raise MailboxError(str(self.failure)) from self.failure
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result[0]


@final
class SqliteMailbox:
    """The durable :class:`Mailbox`: a SQLite file in WAL mode, written with group commit.

    One writer task (:meth:`run`) takes operations from a bounded memory channel, drains all that
    are available, and applies them, together with every queued :meth:`complete`, in one
    transaction in a single worker thread (``CapacityLimiter(1)``,
    ``abandon_on_cancel=False``), then wakes each waiter. A lone operation commits at once: there
    is no timer.

    Args:
        path: the database file; its directory is created if missing.
        synchronous: SQLite ``synchronous``: ``"NORMAL"`` survives a process crash, ``"FULL"``
            also an OS crash or power loss.
        capacity: pending envelopes per priority before :class:`Refused`.
        dedupe_window: seconds a finished request's response is kept to answer retries.
        clock: wall clock for dedupe timestamps (inject a fake one in tests).
        dead_letter_capacity: dead letters kept before the oldest is dropped (default:
            ``capacity``).
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
    ) -> None:
        self.path = Path(path)
        self.synchronous: Synchronous = synchronous
        self._capacity = capacity
        self._window = dedupe_window
        self._dead_capacity = dead_letter_capacity
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._send, self._receive = trio.open_memory_channel[_Op[object] | None](_OP_BUFFER)
        # Bounded by the number of queued envelopes: each is completed at most once.
        self._completions: list[tuple[int, bytes | None]] = []
        self._finished: list[str] = []
        self._started = False
        self._closed = False
        self._stats = Counters().statistics({}, durable=True)

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
        once), and the node should stop, since this exception ends ``run``.
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
                ),
                limiter=self._limiter,
                abandon_on_cancel=False,
            )
        except BaseException as exc:
            self._fail_queued(MailboxError(f"mailbox {str(self.path)!r} could not be opened"), exc)
            raise
        try:
            self._stats = core.statistics()
            task_status.started()
            while True:
                first = await self._receive.receive()
                await self._commit(core, self._drain(first, _MAX_BATCH_OPS))
        finally:
            leftover: list[_Op[object]] = []
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                leftover = self._drain(None, math.inf)
                self._closed = True
                with contextlib.suppress(MailboxError):  # logged; its waiters got the error
                    await self._commit(core, leftover)
            closed = MailboxError(f"mailbox {str(self.path)!r} is closed")
            for op in leftover:
                if not op.done.is_set():
                    op.fail(closed)
            self._fail_queued(closed, None)
            with trio.move_on_after(_CLOSE_GRACE, shield=True):
                await trio.to_thread.run_sync(
                    core.close, limiter=self._limiter, abandon_on_cancel=False
                )

    def _fail_queued(self, error: MailboxError, cause: BaseException | None) -> None:
        """Close the channel and fail every operation still in it (run() is ending)."""
        self._closed = True
        error.__cause__ = cause
        for op in self._drain(None, math.inf):
            op.fail(error)
        self._receive.close()  # later sends raise BrokenResourceError -> MailboxError

    def _drain(self, first: _Op[object] | None, limit: float) -> list[_Op[object]]:
        ops = [] if first is None else [first]
        while len(ops) < limit:
            try:
                op = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if op is not None:  # None only wakes the writer for completions
                ops.append(op)
        return ops

    async def _commit(self, core: SqliteCore, ops: list[_Op[object]]) -> None:
        completions, self._completions = self._completions, []
        finished, self._finished = self._finished, []
        if not ops and not completions and not finished:
            return
        runs: list[Callable[[SqliteCore, float], None]] = [op.run for op in ops]
        if finished:
            runs.insert(0, lambda core, now: core.finish_outgoing(finished))
        try:
            # Shielded: a batch taken from the channel is always committed (or fails), never
            # dropped halfway because the writer was cancelled before the thread started.
            with trio.CancelScope(shield=True):
                self._stats = await trio.to_thread.run_sync(
                    core.apply_batch,
                    self._clock(),
                    completions,
                    runs,
                    limiter=self._limiter,
                    abandon_on_cancel=False,
                )
        except MailboxError as exc:
            logger.error("mailbox commit failed: %s", exc)
            for op in ops:
                op.fail(exc)
            raise
        except BaseException:
            error = MailboxError("mailbox writer failed")
            for op in ops:
                op.fail(error)
            raise
        for op in ops:
            op.done.set()

    async def _submit(self, apply: Callable[[SqliteCore, float], T]) -> T:
        op = _Op(apply)
        try:
            await self._send.send(op)  # type: ignore[arg-type]  # _Op is invariant in T
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise MailboxError(f"mailbox {str(self.path)!r} is closed") from exc
        await op.done.wait()
        return op.unwrap()

    async def accept(self, items: Sequence[Accept]) -> list[Outcome]:
        """Accept items in one transaction (shared with whatever else is queued).

        Returns:
            One outcome per item, in input order, once the transaction committed. Duplicates
            within ``items`` are detected too (the second is ``Duplicate(pending=True)``).

        Raises:
            MailboxError: closed, or the commit failed (nothing of the batch was kept).

        Cancellation: if cancelled while waiting for room in the writer's queue, nothing was
        accepted; if cancelled after, the items may have been committed (a retry then gets
        :class:`Duplicate`), so never acknowledge to a sender without the outcome.
        """
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        return await self._submit(lambda core, now: core.accept(items, now))

    async def record_outgoing(self, item: Outgoing) -> None:
        """Record an outgoing call/tell before it is sent (committed before returning).

        Raises:
            MailboxError: closed, or the commit failed.
        """
        await self._submit(lambda core, now: core.record_outgoing([item]))

    def finish_outgoing(self, request_id: str) -> None:
        """Forget an outgoing request at the next group commit (never blocks; best effort)."""
        if self._closed:
            return
        self._finished.append(request_id)
        if len(self._finished) == 1:
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(None)

    async def outgoing(self) -> list[Outgoing]:
        """Outstanding outgoing requests in send order (those past their deadline dropped)."""
        now_ms = int(time.time() * 1000)
        return await self._submit(lambda core, now: core.outgoing(now_ms))

    def complete(self, envelope_id: int, response: bytes | None) -> None:
        """Queue the removal of a handled envelope for the next group commit (never blocks).

        The envelope leaves the queue and ``(caller, request_id) -> response`` is recorded with
        a timestamp for the dedupe window. Unknown ids are ignored. Completions are applied
        before the other operations of their transaction. Use :meth:`flush` to wait for them.

        Raises:
            MailboxError: the mailbox is closed.
        """
        if self._closed:
            raise MailboxError(f"mailbox {str(self.path)!r} is closed")
        self._completions.append((envelope_id, response))
        if len(self._completions) == 1:
            # Wake an idle writer; if the channel is full the writer is busy and will see it.
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(None)

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

    def statistics(self) -> MailboxStatistics:
        """The counters as of the last commit (``durable=True``)."""
        return self._stats


def _envelope(row: tuple[int, str, str, int, bytes, int]) -> StoredEnvelope:
    id_, caller, request_id, priority, data, attempts = row
    return StoredEnvelope(id_, caller, request_id, Priority(priority), data, attempts)


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn ``sqlite3`` (and file system) errors into :class:`MailboxError`, once, here."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise MailboxError(f"{what}: {exc}") from exc
