"""One task per node that acts when deadlines pass, instead of a cancel scope per envelope.

Entering and leaving a Trio cancel scope with a deadline (or moving a scope's deadline) costs
several microseconds: a visible part of an in-process call, which needs two (the caller's wait
for the answer, the receiver's handler). Here each of those registers ``(deadline, entry)`` in a
heap, a push of a tuple; the :meth:`DeadlineTimer.run` task sleeps until the earliest deadline
and expires what is still unsettled then: a call's wait fails with ``DeadlineExceeded``, a
handler's scope is cancelled. Deadlines of one timeout are pushed in increasing order, so a push
almost never wakes the task. Settled entries are swept once they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import math
from typing import Final, Protocol, final

import trio

# The heap is swept of settled entries once it holds this many (or twice as many as after the
# last sweep): memory stays proportional to what is in flight.
SWEEP_AT: Final = 1024


class Expiring(Protocol):
    """Something a deadline applies to."""

    @property
    def settled(self) -> bool:
        """True once the deadline no longer matters (answered, finished)."""
        ...

    def expire(self) -> None:
        """The deadline passed while it was not settled."""
        ...


@final
class DeadlineTimer:
    """Expires entries whose deadline (trio clock) passed; :meth:`run` is its task."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Expiring]] = []
        self._seq = 0
        self._sweep_at = SWEEP_AT
        self._next = math.inf  # the deadline run() sleeps until
        self._wake = trio.Event()

    def __repr__(self) -> str:
        return f"<DeadlineTimer entries={len(self._heap)}>"

    def add(self, deadline: float, entry: Expiring) -> None:
        """Call ``entry.expire()`` at ``deadline`` unless it is settled by then."""
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, entry))
        if deadline < self._next:
            self._wake.set()
        if len(self._heap) >= self._sweep_at:
            self._heap = [item for item in self._heap if not item[2].settled]
            heapq.heapify(self._heap)
            self._sweep_at = max(SWEEP_AT, 2 * len(self._heap))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire entries as their deadlines pass, until cancelled."""
        task_status.started()
        while True:
            now = trio.current_time()
            heap = self._heap
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)[2]
                if not entry.settled:
                    entry.expire()
            # Settled entries at the top need no wake-up: with calls answered well before
            # their deadlines, the task wakes once per live deadline, not once per call.
            # Emptied so, it still sleeps until the last deadline it dropped (not for ever):
            # an add() with a later deadline then need not wake it (one wake-up per call).
            floor = math.inf
            while heap and heap[0][2].settled:
                floor = heapq.heappop(heap)[0]
            self._next = heap[0][0] if heap else floor
            self._wake = trio.Event()
            with trio.move_on_at(self._next):
                await self._wake.wait()
