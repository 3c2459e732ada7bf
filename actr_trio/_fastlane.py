"""The fast-lane gates (FLG1 streams, FLG2 media): per-key ordered delivery, keys concurrent.

Each key (stream id, track id) with a registered callback gets a bounded memory channel and one
worker task, owned by :meth:`FastLane.run`'s nursery. Items of one key reach the callback in the
order they were offered; different keys run concurrently, and a slow or failing callback only
delays (or loses) its own items. Nothing here touches the state path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar, final

import attrs
import trio

from ._logging import STREAMS

log = logging.getLogger(STREAMS)

K = TypeVar("K")
I = TypeVar("I")  # noqa: E741 - the item type

# New keys waiting for run() to start their worker; consumed at once.
SPAWN_BUFFER: Final = 256


@final
@attrs.frozen
class FastLaneStatistics:
    """Counters of one fast-lane gate."""

    registered: int
    active: int
    delivered: int
    dropped: int
    unrouted: int
    failed_callbacks: int


class _Worker(Generic[K, I]):
    def __init__(self, key: K, callback: Callable[[I], Awaitable[None]], buffer: int) -> None:
        self.key = key
        self.callback = callback
        self.send, self.receive = trio.open_memory_channel[I](buffer)


class FastLane(Generic[K, I]):
    """Routes items to per-key workers; see the module docstring."""

    def __init__(self, name: str, *, buffer: int) -> None:
        self._name = name
        self._buffer = buffer
        self._callbacks: dict[K, Callable[[I], Awaitable[None]]] = {}
        self._workers: dict[K, _Worker[K, I]] = {}
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[_Worker[K, I]](SPAWN_BUFFER)
        self._delivered = self._dropped = self._unrouted = self._failed = 0

    def __repr__(self) -> str:
        return f"<FastLane {self._name} keys={len(self._callbacks)}>"

    def statistics(self) -> FastLaneStatistics:
        return FastLaneStatistics(
            len(self._callbacks),
            len(self._workers),
            self._delivered,
            self._dropped,
            self._unrouted,
            self._failed,
        )

    def register(self, key: K, callback: Callable[[I], Awaitable[None]]) -> None:
        if key in self._callbacks:
            raise KeyError(f"{self._name} {key!r} already has a callback")
        self._callbacks[key] = callback

    def unregister(self, key: K) -> None:
        self._callbacks.pop(key, None)
        worker = self._workers.pop(key, None)
        if worker is not None:
            worker.send.close()

    def _worker(self, key: K) -> _Worker[K, I] | None:
        worker = self._workers.get(key)
        if worker is None:
            callback = self._callbacks.get(key)
            if callback is None:
                self._unrouted += 1
                return None
            worker = _Worker(key, callback, self._buffer)
            try:
                self._spawn_send.send_nowait(worker)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self._dropped += 1
                return None
            self._workers[key] = worker
        return worker

    def offer(self, key: K, item: I) -> bool:
        """Hand ``item`` to its key's worker without waiting; False if dropped (full/unrouted)."""
        worker = self._worker(key)
        if worker is None:
            return False
        try:
            worker.send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped += 1
            return False
        return True

    async def put(self, key: K, item: I) -> bool:
        """Hand ``item`` over, waiting while the key's buffer is full (lanes that never drop)."""
        worker = self._worker(key)
        if worker is None:
            await trio.lowlevel.checkpoint()
            return False
        try:
            await worker.send.send(item)
        except trio.ClosedResourceError:
            self._dropped += 1
            return False
        return True

    def finish(self, key: K) -> None:
        """No more items for ``key`` (end of stream): its worker ends after the last one."""
        worker = self._workers.pop(key, None)
        if worker is not None:
            worker.send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the workers until cancelled."""
        with self._spawn_recv:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for worker in self._spawn_recv:
                    nursery.start_soon(self._work, worker, name=f"{self._name}:{worker.key!r}")

    async def _work(self, worker: _Worker[K, I]) -> None:
        async with worker.receive:
            async for item in worker.receive:
                try:
                    await worker.callback(item)
                except Exception:
                    # Isolation: a failing callback loses its own item only.
                    self._failed += 1
                    log.exception("%s %r: callback failed", self._name, worker.key)
                else:
                    self._delivered += 1
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
