"""The durable mailbox's semantics in SQL: :class:`SqliteCore` (synchronous, sans-Trio).

Every method runs in the writer's one worker thread, inside a transaction opened by
:meth:`SqliteCore.begin` (or :meth:`SqliteCore.apply_batch`). The counters equal the committed
(or current-transaction) database state, because a rollback restores them; ids come from
``meta.last_id`` and are never reused. The table layout and why it is one table:
:mod:`actr_trio._mailbox_schema`.

Bulk statements: a group commit's accepts are one multi-row ``INSERT`` (a few, by size) and its
completions one ``UPDATE ... FROM (VALUES ...)``, because per-row statements cost more in the
``sqlite3`` call than in SQLite itself. When the bulk insert cannot be exact (a key already
taken, a full priority, a duplicate inside the batch, collided rows) it is undone to a
savepoint and the items go one by one, which decides every case.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, final

import attrs

from ._lanes import Priority
from ._logging import MAILBOX
from ._mailbox import (
    ACCEPTED_ATTEMPTS,
    DEAD,
    DONE,
    PENDING,
    PRUNE_INTERVAL,
    REFUSED,
    REFUSED_SHARE,
    REFUSED_STORAGE,
    Accept,
    Accepted,
    Counters,
    DeadLetter,
    MailboxError,
    MailboxStatistics,
    MailboxStorageError,
    Outcome,
    Outgoing,
    SenderCounts,
    StoredEnvelope,
    UnknownEnvelope,
    duplicate_of,
)
from ._mailbox_schema import (
    COMPLETE,
    DEAD_COLUMNS,
    FIND,
    FIND_COLLIDED,
    FORGET,
    INSERT,
    INSERT_COLUMNS,
    REUSE,
    DedupeKey,
    bulk_complete,
    bulk_insert,
    connect,
    dedupe_key_function,
    sizes,
    translate,
)

if TYPE_CHECKING:
    from ._config import Synchronous

logger = logging.getLogger(MAILBOX)

#: One operation of a group commit, run in the worker thread inside the transaction.
Call = Callable[["SqliteCore", float], object]


@final
class AcceptCall:
    """An accept as a :data:`Call`; consecutive ones in a batch share one bulk insert."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Accept]) -> None:
        self.items = items

    def __call__(self, core: SqliteCore, now: float) -> list[Outcome]:
        return core.accept(self.items, now)


@final
class RecordCall:
    """Recording outgoing requests as a :data:`Call`: new work of this node, like an accept,
    so it is failed (not retried) when the database cannot write."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Outgoing]) -> None:
        self.items = items

    def __call__(self, core: SqliteCore, now: float) -> None:
        core.record_outgoing(self.items)


@final
@attrs.frozen
class Failed:
    """The result of a :data:`Call` that failed alone (the others commit): it raised
    :class:`UnknownEnvelope`, or it was new work refused because the database cannot write."""

    error: MailboxError


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
        dedupe_key: DedupeKey,
        capacity: int,
        dedupe_window: float,
        dead_letter_capacity: int | None,
        sender_capacity: int | None = None,
    ) -> None:
        self._conn = connection
        self._cur = connection.cursor()
        self._key_of = dedupe_key
        self._capacity = capacity
        self._window = dedupe_window
        self._dead_capacity = capacity if dead_letter_capacity is None else dead_letter_capacity
        self._counts: dict[int, int] = dict.fromkeys(map(int, Priority), 0)
        # A share as large as the capacity never refuses first: skip the bookkeeping.
        self._senders = SenderCounts(
            sender_capacity if sender_capacity is not None and sender_capacity < capacity else None
        )
        self._fair = self._senders.limit is not None
        self._last_prune = -math.inf
        self._saved: (
            tuple[Counters, dict[int, int], float, int, dict[tuple[str, int], int]] | None
        ) = None
        self.counters = c = Counters()
        cur = self._cur
        for priority, n in cur.execute(
            f"SELECT priority, count(*) FROM queue WHERE state = {PENDING} GROUP BY priority"
        ):
            self._counts[priority] = n
        if self._fair:  # each sender's share is counted from its pending rows: as before a crash
            for caller, priority, n in cur.execute(
                f"SELECT caller, priority, count(*) FROM queue WHERE state = {PENDING}"
                " GROUP BY caller, priority"
            ):
                self._senders.add(caller, priority, n)
        (c.dead_letters,) = cur.execute("SELECT count(*) FROM dead_letters").fetchone()
        (c.dedupe_entries,) = cur.execute("SELECT count(*) FROM queue").fetchone()
        # Rows whose key collided: while there are any, an accept looks them up first.
        (self._collided,) = cur.execute("SELECT count(*) FROM queue WHERE key IS NULL").fetchone()
        (c.last_id,) = cur.execute(
            "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0),"
            " coalesce((SELECT max(id) FROM queue), 0))"
        ).fetchone()
        self._stored_last_id = c.last_id
        (self._max_pages,) = cur.execute("PRAGMA max_page_count").fetchone()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        capacity: int,
        dedupe_window: float,
        dead_letter_capacity: int | None = None,
        sender_capacity: int | None = None,
    ) -> SqliteCore:
        """Open (creating or migrating if needed) the mailbox at ``path``, exclusively.

        The connection keeps an exclusive lock until it is closed, so a second node on the same
        ``data_dir`` fails here instead of sharing (and corrupting the semantics of) the mailbox.
        A process that dies releases the lock with it.

        Raises:
            MailboxError: see :func:`actr_trio._mailbox_schema.connect`.
        """
        conn, salt = connect(path, synchronous)
        try:
            with translate(f"cannot open mailbox {str(path)!r}"):
                return cls(
                    conn,
                    dedupe_key=dedupe_key_function(salt),
                    capacity=capacity,
                    dedupe_window=dedupe_window,
                    dead_letter_capacity=dead_letter_capacity,
                    sender_capacity=sender_capacity,
                )
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the connection; an open transaction is discarded (as a crash would)."""
        with translate("cannot close mailbox"):
            self._conn.close()

    # -- transactions ---------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a write transaction and remember the counters to restore on rollback."""
        self._saved = (
            attrs.evolve(self.counters),
            dict(self._counts),
            self._last_prune,
            self._collided,
            self._senders.copy() if self._fair else {},
        )
        with translate("cannot begin a mailbox transaction"):
            self._cur.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit (persisting ``last_id`` when it moved); on failure roll back and raise."""
        try:
            with translate("mailbox commit failed"):
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
            self.counters, self._counts, self._last_prune, self._collided, held = self._saved
            self._senders.held = held
            self._saved = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``begin()``, the body, ``commit()``; roll back if anything raises."""
        self.begin()
        try:
            with translate("mailbox transaction failed"):
                yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def apply_batch(
        self,
        now: float,
        completions: Sequence[tuple[int, bytes | None]],
        finished: Sequence[str],
        calls: Sequence[Call],
        *,
        refuse_new: bool = False,
    ) -> tuple[list[object], MailboxStatistics]:
        """One group commit: completions first (they free capacity), then ``calls``, then prune.

        ``refuse_new``: the batch again after the database could not write it; keep only what
        the mailbox already holds. Accepts are refused (:data:`~actr_trio._mailbox.STORAGE`),
        recording outgoing requests fails, and nothing is pruned; the rest is applied.

        Returns:
            One result per call (:class:`Failed` for an :class:`UnknownEnvelope`, or for a
            :class:`RecordCall` refused), and the statistics after the commit.

        Raises:
            MailboxStorageError: the disk is full or failed; the transaction was rolled back.
            MailboxError: the transaction failed otherwise and was rolled back.
        """
        results: list[object] = []
        with self.transaction():
            if completions:
                self.complete_many(completions, now)
            if finished:
                self.finish_outgoing(finished)
            i = 0
            while i < len(calls):
                call = calls[i]
                if isinstance(call, AcceptCall):
                    if refuse_new:
                        results.append([REFUSED_STORAGE] * len(call.items))
                        i += 1
                    else:
                        i = self._accept_run(calls, i, now, results)
                    continue
                if refuse_new and isinstance(call, RecordCall):
                    results.append(Failed(MailboxStorageError("the mailbox cannot write now")))
                    i += 1
                    continue
                # UnknownEnvelope fails this call alone (cores check before they write); any
                # other error aborts the batch.
                try:
                    results.append(call(self, now))
                except UnknownEnvelope as exc:
                    results.append(Failed(exc))
                i += 1
            if not refuse_new:  # a prune writes too: not while the disk is full
                self.maybe_prune(now)
        return results, self.statistics()

    def _accept_run(self, calls: Sequence[Call], i: int, now: float, results: list[object]) -> int:
        """Accept the consecutive :class:`AcceptCall` from ``i`` as one; return where it ends."""
        run: list[AcceptCall] = []
        for call in calls[i:]:
            if not isinstance(call, AcceptCall):
                break
            run.append(call)
        outcomes = self.accept([item for call in run for item in call.items], now)
        start = 0
        for call in run:
            end = start + len(call.items)
            results.append(outcomes[start:end])
            start = end
        return i + len(run)

    # -- the mailbox semantics ------------------------------------------------------------------

    def accept(self, items: Sequence[Accept], now: float) -> list[Outcome]:
        if not self._collided:
            bulk = self._accept_bulk(items)
            if bulk is not None:
                return bulk
        return [self._accept_one(item, now - self._window) for item in items]

    def _accept_bulk(self, items: Sequence[Accept]) -> list[Outcome] | None:
        """Insert every item as new, or nothing (``None``) if any of them is not simply new."""
        counts, c, key_of, capacity = self._counts, self.counters, self._key_of, self._capacity
        added: dict[int, int] = {}
        fair, senders = self._fair, self._senders
        by_sender: dict[tuple[str, int], int] = {}
        keys: set[int] = set()
        params: list[object] = []
        new_id = c.last_id
        for item in items:
            prio = item.priority
            key = key_of(item.caller, item.request_id)
            if counts.get(prio, 0) + added.get(prio, 0) >= capacity or key in keys:
                return None
            if fair:
                held = (item.caller, prio)
                if senders.full(item.caller, prio, by_sender.get(held, 0)):
                    return None
                by_sender[held] = by_sender.get(held, 0) + 1
            keys.add(key)
            added[prio] = added.get(prio, 0) + 1
            new_id += 1
            params += (new_id, key, item.caller, item.request_id, prio, item.data)
        if not self._insert_new(params, len(items)):
            return None
        first = c.last_id + 1
        c.last_id = new_id
        c.dedupe_entries += len(items)
        c.accepted += len(items)
        for priority, n in added.items():
            counts[priority] = counts.get(priority, 0) + n
        for (caller, priority), n in by_sender.items():
            senders.add(caller, priority, n)
        return [
            Accepted(
                StoredEnvelope(
                    first + i,
                    item.caller,
                    item.request_id,
                    item.priority,
                    item.data,
                    ACCEPTED_ATTEMPTS,
                )
            )
            for i, item in enumerate(items)
        ]

    def _insert_new(self, params: list[object], rows: int) -> bool:
        """Insert ``rows`` pending rows; all of them, or none if any key was taken."""
        cur = self._cur
        cur.execute("SAVEPOINT bulk_accept")
        offset = 0
        for size in sizes(rows):
            chunk = params[offset * INSERT_COLUMNS : (offset + size) * INSERT_COLUMNS]
            if cur.execute(bulk_insert(size), chunk).rowcount != size:
                cur.execute("ROLLBACK TO bulk_accept")
                cur.execute("RELEASE bulk_accept")
                return False
            offset += size
        cur.execute("RELEASE bulk_accept")
        return True

    def _accept_one(self, item: Accept, cutoff: float) -> Outcome:
        """One item, every case: new, duplicate, expired entry, full priority, collision."""
        c, counts, prio = self.counters, self._counts, item.priority
        key = self._key_of(item.caller, item.request_id)
        if (
            counts.get(prio, 0) < self._capacity
            and not self._collided
            and not self._senders.full(item.caller, prio)
        ):
            # One statement for a new key; a taken one is not inserted.
            new_id = c.last_id + 1
            if self._cur.execute(
                INSERT,
                (
                    new_id,
                    key,
                    item.caller,
                    item.request_id,
                    prio,
                    PENDING,
                    ACCEPTED_ATTEMPTS,
                    item.data,
                    None,
                    None,
                ),
            ).rowcount:
                c.last_id = new_id
                c.dedupe_entries += 1
                counts[prio] = counts.get(prio, 0) + 1
                if self._fair:
                    self._senders.add(item.caller, prio)
                c.accepted += 1
                return Accepted(
                    StoredEnvelope(
                        new_id, item.caller, item.request_id, prio, item.data, ACCEPTED_ATTEMPTS
                    )
                )
        return self._accept_seen(item, key, cutoff)

    def _accept_seen(self, item: Accept, key: int, cutoff: float) -> Outcome:
        """The slow path: the key is taken, the priority full, or collided rows exist."""
        c, prio = self.counters, item.priority
        row, taken = self._find(key, item.caller, item.request_id)
        if row is not None:
            dup = duplicate_of(row[3], row[4], row[5], cutoff)
            if dup is not None:
                c.duplicates += 1
                return dup
        if self._counts.get(prio, 0) >= self._capacity:
            c.refused += 1
            return REFUSED
        if self._senders.full(item.caller, prio):
            c.refused += 1
            c.refused_sender_share += 1
            return REFUSED_SHARE
        new_id = c.last_id + 1
        if row is not None:  # its entry expired: the same row, accepted anew
            self._cur.execute(REUSE, (new_id, prio, ACCEPTED_ATTEMPTS, item.data, row[0]))
        else:
            if taken:  # another request holds this key: this row is found by its text
                self._collided += 1
            self._cur.execute(
                INSERT,
                (
                    new_id,
                    None if taken else key,
                    item.caller,
                    item.request_id,
                    prio,
                    PENDING,
                    ACCEPTED_ATTEMPTS,
                    item.data,
                    None,
                    None,
                ),
            )
            c.dedupe_entries += 1
        c.last_id = new_id
        self._counts[prio] = self._counts.get(prio, 0) + 1
        if self._fair:
            self._senders.add(item.caller, prio)
        c.accepted += 1
        return Accepted(
            StoredEnvelope(new_id, item.caller, item.request_id, prio, item.data, ACCEPTED_ATTEMPTS)
        )

    def _find(
        self, key: int, caller: str, request_id: str
    ) -> tuple[tuple[int, str, str, int, bytes | None, float | None] | None, bool]:
        """The row of ``(caller, request_id)`` if any, and whether ``key`` is taken at all."""
        row = self._cur.execute(FIND, (key,)).fetchone()
        if row is not None and row[1] == caller and row[2] == request_id:
            return row, True
        if self._collided:
            other = self._cur.execute(FIND_COLLIDED, (caller, request_id)).fetchone()
            if other is not None:
                return other, row is not None
        return None, row is not None

    def complete_many(self, completions: Sequence[tuple[int, bytes | None]], now: float) -> int:
        """Complete many at once (unknown ids ignored, the first of repeated ids wins).

        Returns:
            How many were pending and are done now.
        """
        first: dict[int, bytes | None] = {}
        for envelope_id, response in completions:
            first.setdefault(envelope_id, response)
        pairs = list(first.items())
        done = 0
        offset = 0
        for size in sizes(len(pairs)):
            params: list[object] = [now]
            for pair in pairs[offset : offset + size]:
                params += pair
            offset += size
            for priority, caller in self._cur.execute(bulk_complete(size), params).fetchall():
                self._counts[priority] -= 1
                if self._fair:
                    self._senders.remove(caller, priority)
                done += 1
        self.counters.completed += done
        return done

    def complete(self, envelope_id: int, response: bytes | None, now: float) -> bool:
        row = self._cur.execute(COMPLETE, (response, now, envelope_id)).fetchone()
        if row is None:
            return False
        self._counts[row[0]] -= 1
        if self._fair:
            self._senders.remove(row[1], row[0])
        self.counters.completed += 1
        return True

    def pending(self) -> list[StoredEnvelope]:
        rows = self._cur.execute(
            "SELECT id, caller, request_id, priority, data, attempts FROM queue"
            f" WHERE state = {PENDING} ORDER BY id"
        )
        result = [_envelope(row) for row in rows]
        self.counters.replayed += len(result)
        return result

    def begin_attempt(self, envelope_id: int) -> int:
        row = self._cur.execute(
            "UPDATE queue SET attempts = attempts + 1"
            f" WHERE id = ? AND state = {PENDING} RETURNING attempts",
            (envelope_id,),
        ).fetchone()
        if row is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        attempts: int = row[0]
        return attempts

    def release_attempts(self, envelope_ids: Sequence[int]) -> None:
        self._cur.executemany(
            "UPDATE queue SET attempts = attempts - 1"
            f" WHERE id = ? AND state = {PENDING} AND attempts > 0",
            [(i,) for i in envelope_ids],
        )

    def dead_letter(self, envelope_id: int, reason: str, now: float) -> None:
        cur, c = self._cur, self.counters
        row = cur.execute(
            f"UPDATE queue SET state = {DEAD} WHERE id = ? AND state = {PENDING}"
            " RETURNING priority, caller",
            (envelope_id,),
        ).fetchone()
        if row is None:
            raise UnknownEnvelope(f"envelope {envelope_id} is not queued")
        self._counts[row[0]] -= 1
        if self._fair:
            self._senders.remove(row[1], row[0])
        cur.execute(
            "INSERT INTO dead_letters (id, reason, at) VALUES (?, ?, ?)", (envelope_id, reason, now)
        )
        c.dead_letters += 1
        if c.dead_letters > self._dead_capacity:
            (oldest,) = cur.execute(
                "DELETE FROM dead_letters WHERE seq = (SELECT min(seq) FROM dead_letters)"
                " RETURNING id"
            ).fetchone()
            cur.execute(FORGET, (now, oldest))
            c.dead_letters -= 1
            c.dead_letters_dropped += 1
            logger.warning("dead-letter table full: dropped envelope %d", oldest)

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._cur.execute(
            f"SELECT {DEAD_COLUMNS} FROM dead_letters d JOIN queue q ON q.id = d.id ORDER BY d.seq"
        )
        return [DeadLetter(_envelope(row[:6]), row[6], row[7]) for row in rows]

    def redrive(self, envelope_id: int | None) -> list[StoredEnvelope]:
        cur, c = self._cur, self.counters
        if envelope_id is None:
            rows = cur.execute("DELETE FROM dead_letters RETURNING seq, id").fetchall()
            rows.sort()  # RETURNING order is unspecified: keep dead-letter order
        else:
            rows = cur.execute(
                "DELETE FROM dead_letters WHERE id = ? RETURNING seq, id", (envelope_id,)
            ).fetchall()
            if not rows:
                raise UnknownEnvelope(f"envelope {envelope_id} is not dead-lettered")
        out = []
        for _, old_id in rows:
            c.last_id += 1
            caller, request_id, priority, data = cur.execute(
                f"UPDATE queue SET id = ?, state = {PENDING}, attempts = 0 WHERE id = ?"
                " RETURNING caller, request_id, priority, data",
                (c.last_id, old_id),
            ).fetchone()
            self._counts[priority] = self._counts.get(priority, 0) + 1
            if self._fair:  # an operator's redrive may go past the share, as past the capacity
                self._senders.add(caller, priority)
            out.append(StoredEnvelope(c.last_id, caller, request_id, Priority(priority), data, 0))
        c.dead_letters -= len(rows)
        return out

    def purge_dead_letters(self, now: float) -> int:
        rows = self._cur.execute("DELETE FROM dead_letters RETURNING id").fetchall()
        self._cur.executemany(FORGET, [(now, id_) for (id_,) in rows])
        self.counters.dead_letters = 0
        return len(rows)

    def maybe_prune(self, now: float) -> int:
        if 0 <= now - self._last_prune < PRUNE_INTERVAL:
            return 0
        self._last_prune = now
        pruned: int = self._cur.execute(
            f"DELETE FROM queue WHERE state = {DONE} AND finished_at < ?", (now - self._window,)
        ).rowcount
        self.counters.dedupe_entries -= pruned
        if pruned and self._collided:
            (self._collided,) = self._cur.execute(
                "SELECT count(*) FROM queue WHERE key IS NULL"
            ).fetchone()
        return pruned

    def limit_pages(self, pages: int | None) -> int:
        """For tests: cap the file at ``pages`` pages (never below its current size; 0: as it
        is now), so that a write needing more fails with ``SQLITE_FULL`` as on a full disk.
        ``None`` lifts the cap. Returns the cap in force (``PRAGMA max_page_count``)."""
        limit = self._max_pages if pages is None else max(pages, 1)
        (now_limit,) = self._cur.execute(f"PRAGMA max_page_count = {int(limit)}").fetchone()
        return int(now_limit)

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


def _envelope(row: tuple[int, str, str, int, bytes, int]) -> StoredEnvelope:
    id_, caller, request_id, priority, data, attempts = row
    return StoredEnvelope(id_, caller, request_id, Priority(priority), data, attempts)
