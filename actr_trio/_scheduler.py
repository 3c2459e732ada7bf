"""The state-path scheduler: one task, handlers one at a time, highest priority first.

Invariants (guarantees 1-3 of docs/architecture.md):

1. Serial: ``run`` awaits each handler before taking the next; nothing else calls handlers.
2. Priority: each pick takes from the highest non-empty queue (unless ``aging`` is set: after
   ``aging`` picks in a row that passed over a waiting lower priority, one lower pick is served).
3. FIFO: each priority is one memory channel, so within a priority items leave in the order
   they were enqueued.

Trio has no select across channels, so the scheduler owns every queue's receive end and picks
with ``receive_nowait`` in priority order, waiting on one wakeup only when all are empty.
The pick itself is :class:`Selector`, plain synchronous code that Hypothesis drives directly.

Handlers run inside one cancel scope that outlives them, rather than a scope of their own each
(a scope per envelope was a visible part of a call's cost): :meth:`Scheduler.bound` registers
the running handler's deadline with the node's DeadlineTimer, which cancels that scope if the
handler is still running then. The scope ends, ``expired`` answers for that item, and a fresh
scope takes over.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar, final

import attrs
import trio

from ._deadlines import DeadlineTimer
from ._lanes import PRIORITIES_HIGH_FIRST, Priority

T = TypeVar("T")

# Per-priority buffer. The mailbox refuses envelopes beyond Config.mailbox_capacity per
# priority, so the queue never holds more than the capacity; this margin covers replays.
QUEUE_MARGIN: Final = 1024
# Handlers run back to back without yielding when they never block; yield every this many.
FAIRNESS_EVERY: Final = 16
# ...except while the backlog is long: past BACKLOG_HIGH items the scheduler keeps going until
# BACKLOG_LOW are left. Senders in this process hand over one envelope per task step, hundreds
# per round of the Trio scheduler; taking FAIRNESS_EVERY per round, the scheduler would fall
# behind without bound (memory, and the garbage collector walking the backlog).
BACKLOG_HIGH: Final = 1024
BACKLOG_LOW: Final = 256


class Selector:
    """Which priority to serve next, given which queues are non-empty (sans-IO).

    Strict priority by default. With ``aging=K``: once K picks in a row have passed over a
    waiting lower-priority item, the next pick serves the highest such lower priority.
    """

    def __init__(self, aging: int | None = None) -> None:
        self.aging = aging
        self._passed_over = 0

    def choose(self, nonempty: Sequence[bool]) -> int | None:
        """Index of the queue to take from (queues ordered highest priority first), or None."""
        ready = [i for i, has in enumerate(nonempty) if has]
        if not ready:
            return None
        first = ready[0]
        if self.aging is None or len(ready) == 1:
            self._passed_over = 0
            return first
        if self._passed_over >= self.aging:
            self._passed_over = 0
            return ready[1]
        self._passed_over += 1
        return first


class _Bound:
    """The deadline of one running handler, as the DeadlineTimer holds it."""

    __slots__ = ("scope", "settled")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.settled = False

    def expire(self) -> None:
        self.scope.cancel(reason="the caller's deadline passed")


@final
@attrs.frozen
class SchedulerStatistics:
    """Snapshot: items waiting per priority, handled so far, and whether a handler is running."""

    pending_by_priority: tuple[tuple[Priority, int], ...]
    handled: int
    running: bool


class Scheduler(Generic[T]):
    """Owns one queue per priority and the single task that runs handlers in order.

    Args:
        handle: runs one item (awaited before the next is taken).
        capacity: items per priority the caller lets in (the queues hold a margin more).
        aging: see :class:`Selector`.
        expired: called with the item whose handler the deadline of :meth:`bound` cancelled
            (``handle`` was interrupted by ``trio.Cancelled``, from that deadline only).
        deadlines: the timer that enforces :meth:`bound` (a running DeadlineTimer); without
            one the shared scope's own deadline is moved instead (slower, same effect).
    """

    def __init__(
        self,
        handle: Callable[[T], Awaitable[None]],
        *,
        capacity: int,
        aging: int | None = None,
        expired: Callable[[T], None] | None = None,
        deadlines: DeadlineTimer | None = None,
    ) -> None:
        self._handle = handle
        self._expired = expired
        self._deadlines = deadlines
        self._bound: _Bound | None = None
        self._selector = Selector(aging)
        self._strict = aging is None
        self._sends: list[trio.MemorySendChannel[T]] = []
        self._receives: list[trio.MemoryReceiveChannel[T]] = []
        for _ in PRIORITIES_HIGH_FIRST:
            send, receive = trio.open_memory_channel[T](capacity + QUEUE_MARGIN)
            self._sends.append(send)
            self._receives.append(receive)
        self._index = {p: i for i, p in enumerate(PRIORITIES_HIGH_FIRST)}
        # Our own counts: reading channel statistics() allocates an object per look.
        self._counts = [0] * len(PRIORITIES_HIGH_FIRST)
        self._queued = 0
        self._draining = False  # working a long backlog down (see BACKLOG_HIGH)
        # The scheduler's task while it waits for work (woken directly: cheaper than an Event).
        self._idle: trio.lowlevel.Task | None = None
        self._stopping = False
        self._handled = 0
        self._running = False
        self._current: T | None = None
        self._scope: trio.CancelScope | None = None
        # A deadline of the shared scope passed while no handler ran: open a fresh scope.
        self._stale = False

    def __repr__(self) -> str:
        return f"<Scheduler handled={self._handled} pending={self.pending()}>"

    def enqueue(self, priority: Priority, item: T) -> None:
        """Queue ``item`` (never blocks: the mailbox bounds what is pending)."""
        index = self._index[priority]
        self._sends[index].send_nowait(item)
        self._counts[index] += 1
        self._queued += 1
        self._wake()

    def _wake(self) -> None:
        task, self._idle = self._idle, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def _wait_for_work(self) -> None:
        self._idle = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._idle = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def pending(self) -> int:
        """Items waiting (not counting the one running)."""
        return self._queued

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            tuple((p, self._counts[i]) for p, i in self._index.items()),
            self._handled,
            self._running,
        )

    def take_all(self) -> list[T]:
        """Empty every queue and return what was waiting (once the scheduler has stopped)."""
        taken: list[T] = []
        for index, receive in enumerate(self._receives):
            while self._counts[index]:
                self._counts[index] -= 1
                taken.append(receive.receive_nowait())
        self._queued = 0
        return taken

    def stop_when_idle(self) -> None:
        """Let ``run`` return once every queue is empty (the drain step of shutdown)."""
        self._stopping = True
        self._wake()

    def _take(self) -> T | None:
        counts = self._counts
        if self._strict:
            # Strict priority, as Selector.choose decides it, without building its list.
            for index, n in enumerate(counts):
                if n:
                    counts[index] = n - 1
                    self._queued -= 1
                    return self._receives[index].receive_nowait()
            return None
        chosen = self._selector.choose([n > 0 for n in counts])
        if chosen is None:
            return None
        counts[chosen] -= 1
        self._queued -= 1
        return self._receives[chosen].receive_nowait()

    def _working_down(self) -> bool:
        """Whether a long backlog is being worked down (no fairness yield meanwhile)."""
        if self._draining:
            self._draining = self._queued > BACKLOG_LOW
        else:
            self._draining = self._queued >= BACKLOG_HIGH
        return self._draining

    def bound(self, deadline: float) -> None:
        """The running handler must end by ``deadline`` (trio clock).

        Called by ``handle`` for the item it runs, before its handler; past the deadline the
        handler gets ``trio.Cancelled`` and ``expired`` is called with the item instead. Call
        :meth:`unbound` once the handler returned.
        """
        scope = self._scope
        assert scope is not None, "bound() is for the running handler"
        if self._deadlines is None:
            scope.deadline = deadline
            return
        self._bound = _Bound(scope)
        self._deadlines.add(deadline, self._bound)

    def unbound(self) -> None:
        """The handler returned (or raised): its deadline no longer applies."""
        scope = self._scope
        assert scope is not None
        if self._bound is not None:
            self._bound.settled = True
            self._bound = None
        if scope.cancel_called:
            self._stale = True  # it passed anyway (no checkpoint saw it): start a fresh scope
        elif scope.deadline != math.inf:
            scope.deadline = math.inf

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run handlers until :meth:`stop_when_idle` and the queues are empty, or cancelled.

        Cancellation: the running handler is cancelled with it; queued items stay in the
        mailbox (they were never completed) and are replayed at the next start.
        """
        task_status.started()
        while True:
            with trio.CancelScope() as scope:
                self._scope = scope
                self._stale = False
                if await self._serve():
                    return
            item, self._current = self._current, None
            if scope.cancelled_caught and item is not None:
                # The deadline of bound() cancelled this item's handler.
                self._handled += 1
                if self._expired is not None:
                    self._expired(item)

    async def _serve(self) -> bool:
        """Run handlers in the current scope; True once stopped, False to open a new scope."""
        while not self._stale:
            item = self._take()
            if item is None:
                if self._stopping:
                    return True
                await self._wait_for_work()
                continue
            self._running = True
            self._current = item
            try:
                await self._handle(item)
            finally:
                self._running = False
            self._current = None
            self._handled += 1
            if self._handled % FAIRNESS_EVERY == 0 and not self._working_down():
                # A handler that never blocks would otherwise starve the inbound gate.
                await trio.lowlevel.checkpoint()
        return False
