"""The in-memory mailbox (``data_dir=None``): :class:`MemoryMailbox` over :class:`MemoryCore`.

Fast and **not durable**: a crash loses every accepted envelope and the dedupe table. The same
semantics as the durable mailbox (the contract is in :mod:`actr_trio._mailbox`); operations run
inline, without a thread or batching.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias, final

import attrs
import trio

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
    Accept,
    Accepted,
    Counters,
    DeadLetter,
    MailboxStatistics,
    Outcome,
    SenderCounts,
    StoredEnvelope,
    UnknownEnvelope,
    duplicate_of,
)

__all__ = ["MemoryCore", "MemoryMailbox"]

logger = logging.getLogger(MAILBOX)

_Entry: TypeAlias = tuple[int, bytes | None, float | None]
_PENDING_ENTRY: Final[_Entry] = (PENDING, None, None)
_DEAD_ENTRY: Final[_Entry] = (DEAD, None, None)


@final
class MemoryCore:
    """Pure-Python :class:`MailboxCore` on dicts: one dict lookup and two inserts per envelope.

    ``sender_capacity``: pending envelopes one caller may hold per priority (its share;
    ``None``: no share, only ``capacity``).
    """

    def __init__(
        self,
        *,
        capacity: int,
        dedupe_window: float,
        dead_letter_capacity: int | None = None,
        sender_capacity: int | None = None,
    ) -> None:
        self._capacity = capacity
        # A share as large as the capacity never refuses first: skip the bookkeeping.
        self._senders = SenderCounts(
            sender_capacity if sender_capacity is not None and sender_capacity < capacity else None
        )
        self._fair = self._senders.limit is not None
        self._held = self._senders.held
        self._sender_limit = self._senders.limit or 0
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
        if self._fair:  # SenderCounts.take, inline: this is every in-process tell's path
            held = self._held
            share = (caller, priority)
            n = held.get(share, 0)
            if n >= self._sender_limit:
                c.refused += 1
                c.refused_sender_share += 1
                return REFUSED_SHARE
            held[share] = n + 1
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
        if self._fair:
            share = (env.caller, env.priority)
            n = self._held[share] - 1
            if n:
                self._held[share] = n
            else:
                del self._held[share]
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
        if self._fair:
            self._senders.remove(env.caller, env.priority)
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
            if self._fair:  # an operator's redrive may go past the share, as past the capacity
                self._senders.add(env.caller, env.priority)
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
        sender_capacity: int | None = None,
    ) -> None:
        self._core = MemoryCore(
            capacity=capacity,
            dedupe_window=dedupe_window,
            dead_letter_capacity=dead_letter_capacity,
            sender_capacity=sender_capacity,
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
