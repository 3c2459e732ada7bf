"""Hypothesis: guarantees 1-3 (serial, priority, FIFO) for the scheduler.

The selection policy is driven directly (a stateful machine against a model of the queues);
one async end-to-end property runs the real Scheduler task with handlers that record order.
"""

from __future__ import annotations

from collections import deque

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actr_trio._lanes import PRIORITIES_HIGH_FIRST, Priority
from actr_trio._scheduler import Scheduler, Selector

PRIORITY = st.sampled_from(list(Priority))
SENDER = st.integers(0, 3)


class SelectorMachine(RuleBasedStateMachine):
    """Strict-priority selection against a model: always the highest non-empty queue, FIFO."""

    def __init__(self) -> None:
        super().__init__()
        self.selector = Selector()
        self.queues: list[deque[tuple[int, int]]] = [deque() for _ in PRIORITIES_HIGH_FIRST]
        self.sent: dict[tuple[int, int], int] = {}  # (priority index, sender) -> count sent
        self.handled: dict[tuple[int, int], list[int]] = {}

    @rule(priority=PRIORITY, sender=SENDER)
    def enqueue(self, priority: Priority, sender: int) -> None:
        index = PRIORITIES_HIGH_FIRST.index(priority)
        n = self.sent.get((index, sender), 0)
        self.sent[(index, sender)] = n + 1
        self.queues[index].append((sender, n))

    @precondition(lambda self: any(self.queues))
    @rule()
    def pick(self) -> None:
        index = self.selector.choose([bool(q) for q in self.queues])
        assert index is not None
        # Priority: nothing higher was waiting.
        assert all(not q for q in self.queues[:index])
        sender, n = self.queues[index].popleft()
        self.handled.setdefault((index, sender), []).append(n)

    @invariant()
    def fifo_per_sender_and_priority(self) -> None:
        for seqs in self.handled.values():
            assert seqs == list(range(len(seqs)))

    @invariant()
    def idle_means_none(self) -> None:
        if not any(self.queues):
            assert self.selector.choose([False] * len(self.queues)) is None


TestSelector = SelectorMachine.TestCase
TestSelector.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.lists(st.sampled_from([True, False]), min_size=1, max_size=50))
def test_aging_serves_lower_after_k(k: int, pattern: list[bool]) -> None:
    """With aging=K and both queues always non-empty, at most K high picks in a row."""
    selector = Selector(aging=k)
    streak = 0
    for _ in pattern:
        index = selector.choose([True, True, False])
        if index == 0:
            streak += 1
            assert streak <= k
        else:
            assert index == 1
            streak = 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(PRIORITY, SENDER), min_size=1, max_size=60))
def test_real_scheduler_serial_priority_fifo(items: list[tuple[Priority, int]]) -> None:
    """The running Scheduler: items queued while it is blocked come out highest priority first,
    FIFO per (priority, sender), and handlers never overlap."""
    handled: list[tuple[Priority, int, int]] = []
    running = 0

    async def handle(item: tuple[Priority, int, int]) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two handlers overlapped"
        await trio.sleep(0.001)  # virtual time: yields to the other tasks mid-handler
        handled.append(item)
        running -= 1

    async def main() -> None:
        scheduler: Scheduler[tuple[Priority, int, int]] = Scheduler(handle, capacity=len(items))
        counts: dict[tuple[Priority, int], int] = {}
        for priority, sender in items:
            n = counts.get((priority, sender), 0)
            counts[(priority, sender)] = n + 1
            scheduler.enqueue(priority, (priority, sender, n))
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler.run)
            scheduler.stop_when_idle()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(handled) == len(items)
    # Everything was queued before the scheduler started, so the order is fully determined.
    assert [p for p, _, _ in handled] == sorted((p for p, _ in items), reverse=True)
    for priority in Priority:
        for sender in range(4):
            seqs = [n for p, s, n in handled if p == priority and s == sender]
            assert seqs == list(range(len(seqs)))
