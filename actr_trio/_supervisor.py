"""``Supervisor``: several nodes in one process, restarted when they crash.

Strategies (Erlang/OTP's): ``ONE_FOR_ONE`` restarts only the node that crashed; ``ONE_FOR_ALL``
shuts the others down gracefully and restarts every node; ``REST_FOR_ONE`` restarts the crashed
node and every node added after it. Restart intensity: more than ``max_restarts`` restarts within
``within`` seconds and the supervisor gives up, shuts everything down and raises
:class:`SupervisorGaveUp`. Each restart builds a fresh node from its factory; a node with a
``data_dir`` replays its mailbox at the restart, so nothing it accepted is lost.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, final

import attrs
import trio

from ._logging import NODE
from ._node import ActrNode, ActrRef
from .errors import ActrError, ConfigError

log = logging.getLogger(NODE)

# Crash reports waiting for the supervisor loop: at most one per child at a time.
REPORT_BUFFER: Final = 64
# Bound on stopping every child when the supervisor's block ends.
STOP_ALL_BOUND: Final = 60.0


@final
class Strategy(enum.Enum):
    """What a crash of one child restarts."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class SupervisorGaveUp(ActrError):
    """Too many restarts in the intensity window: the supervisor stopped everything."""


@final
@attrs.frozen
class SupervisorStatistics:
    """Restarts so far, per child name."""

    restarts: tuple[tuple[str, int], ...]


class _Child:
    def __init__(self, name: str, factory: Callable[[], ActrNode]) -> None:
        self.name = name
        self.factory = factory
        self.ref: ActrRef | None = None
        self.stop = trio.Event()
        self.done = trio.Event()
        self.restarts = 0
        self.generation = 0


@final
class Supervisor:
    """Runs nodes and restarts them by ``strategy`` (see the module docstring).

    Args:
        strategy: which nodes a crash restarts.
        max_restarts: restarts allowed within ``within`` seconds before giving up.
        within: the intensity window, seconds.
    """

    def __init__(
        self,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        *,
        max_restarts: int = 3,
        within: float = 5.0,
    ) -> None:
        if max_restarts < 0:
            raise ConfigError(f"max_restarts={max_restarts!r} must be >= 0")
        if not within > 0:
            raise ConfigError(f"within={within!r} must be > 0")
        self.strategy = Strategy(strategy)
        self.max_restarts = max_restarts
        self.within = within
        self._children: list[_Child] = []
        self._restart_times: deque[float] = deque()
        self._started = False

    def add(self, name: str, factory: Callable[[], ActrNode]) -> None:
        """Add a child: ``factory()`` builds a fresh node (``ActrSystem(...).attach(...)``)."""
        if self._started:
            raise ConfigError("add children before start()")
        if any(c.name == name for c in self._children):
            raise ConfigError(f"a child named {name!r} exists already")
        self._children.append(_Child(name, factory))

    def ref(self, name: str) -> ActrRef:
        """The running node ``name`` (it changes at each restart).

        Raises:
            KeyError: no such child, or it is restarting.
        """
        for child in self._children:
            if child.name == name and child.ref is not None:
                return child.ref
        raise KeyError(f"no running child {name!r}")

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(tuple((c.name, c.restarts) for c in self._children))

    @asynccontextmanager
    async def start(self) -> AsyncIterator[Supervisor]:
        """Start every child in order; leaving the block shuts them down in reverse order.

        Raises:
            SupervisorGaveUp: the restart intensity was exceeded (raised out of the block).
        """
        if self._started:
            raise ConfigError("a supervisor starts once")
        self._started = True
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run)
            try:
                yield self
            finally:
                # Each child's own shutdown is bounded by its shutdown_grace; this bounds the sum.
                with trio.move_on_after(STOP_ALL_BOUND, shield=True):
                    await self._stop_all(self._children)
                nursery.cancel_scope.cancel(reason="supervisor block ended")

    async def _run(self, *, task_status: trio.TaskStatus[None]) -> None:
        reports_send, reports_recv = trio.open_memory_channel[tuple[_Child, int, BaseException]](
            REPORT_BUFFER
        )
        async with trio.open_nursery() as nursery, reports_recv:
            for child in self._children:
                await nursery.start(self._supervise, child, reports_send.clone())
            task_status.started()
            async for child, generation, exc in reports_recv:
                if generation != child.generation:
                    continue  # a crash of a generation we already replaced
                self._count_restart(child, exc)
                for target in self._to_restart(child):
                    target.generation += 1
                await self._stop_all([c for c in self._to_restart(child) if c is not child])
                for target in self._to_restart(child):
                    target.restarts += 1
                    target.stop, target.done = trio.Event(), trio.Event()
                    await nursery.start(self._supervise, target, reports_send.clone())

    def _to_restart(self, child: _Child) -> list[_Child]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return list(self._children)
        return self._children[self._children.index(child) :]

    def _count_restart(self, child: _Child, exc: BaseException) -> None:
        now = trio.current_time()
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] < now - self.within:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            raise SupervisorGaveUp(
                f"{child.name} crashed; more than {self.max_restarts} restarts within {self.within}s"
            ) from exc
        log.warning("%s crashed (%r); restarting (%s)", child.name, exc, self.strategy.value)

    async def _stop_all(self, children: list[_Child]) -> None:
        for child in reversed(children):
            child.stop.set()
            await child.done.wait()

    async def _supervise(
        self,
        child: _Child,
        reports: trio.MemorySendChannel[tuple[_Child, int, BaseException]],
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        generation = child.generation
        started = False
        with reports:
            try:
                async with child.factory().start() as ref:
                    child.ref = ref
                    task_status.started()
                    started = True
                    await child.stop.wait()
            except Exception as exc:
                # The node crashed (its start() raised), or failed to start: report
                # it either way; the supervisor loop decides whether to restart.
                child.ref = None
                child.done.set()
                reports.send_nowait((child, generation, exc))
                if not started:
                    task_status.started()
                return
            child.ref = None
            child.done.set()
