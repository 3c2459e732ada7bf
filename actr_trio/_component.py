"""A sibling task of the node that shutdown can stop in order (see ``_node.py``)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

# Bound on stopping one component once cancelled (its own cleanup is shielded and bounded).
STOP_BOUND: Final = 5.0


class Component:
    """Runs one sibling task in its own cancel scope, so shutdown can stop it in order.

    The scope is shielded from outside cancellation once the component has started, so a
    cancelled enclosing scope cannot tear components down out of order: the shutdown sequence
    stops them one by one. Not before: when the starter is already cancelled, Trio's
    ``started()`` returns quietly and waits for the child to exit, which a shielded child
    never would.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.entered = False

    async def run(
        self,
        fn: Callable[..., Awaitable[None]],
        *args: object,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        self.entered = True
        try:
            with self.scope:
                await fn(*args, task_status=ShieldWhenStarted(task_status, self.scope))
        finally:
            self.done.set()

    async def stop(self) -> None:
        self.scope.cancel(reason=f"node shutting down: stopping {self.name}")
        if not self.entered:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(STOP_BOUND):
            await self.done.wait()


class ShieldWhenStarted(trio.TaskStatus[Any]):
    def __init__(self, inner: trio.TaskStatus[Any], scope: trio.CancelScope) -> None:
        self._inner = inner
        self._scope = scope

    def started(self, value: Any = None) -> None:
        if trio.current_effective_deadline() != -math.inf:  # -inf: already cancelled
            self._scope.shield = True
        self._inner.started(value)
