"""The fast-lane gates (FLG1 streams, FLG2 media): per-key ordered delivery, keys concurrent.

Callbacks are registered by name (a stream id, a track id); what arrives is keyed by
``(peer, name)``: each peer's stream or track of a registered name gets its own bounded memory
channel and one worker task, owned by :meth:`FastLane.run`'s nursery. Items of one key reach
the callback in the order they were offered; keys run concurrently, and a slow or failing
callback only delays (or loses) its own items. Two peers using the same name never share a
key, so neither can disturb the other's ordering. Nothing here touches the state path.

Every peer is hostile, so what one may make the node hold is bounded:

* an item for a name nobody registered is refused (``unrouted``) and leaves nothing behind;
* a peer has at most ``max_per_peer`` keys open at once; an item opening one more is refused
  (``refused``) until one of its keys ends or expires;
* a key with no item for ``idle_timeout`` seconds is closed (``expired``): its worker finishes
  what it holds and ends; a later item opens the key anew.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Generic, Literal, TypeVar, final

import attrs
import trio

from ._idle import IdleTable
from ._ids import ActrId
from ._logging import STREAMS, RateLimiter

log = logging.getLogger(STREAMS)

I = TypeVar("I")  # noqa: E741 - the item type

#: What arrives is keyed by (peer, name); in-process tests may pass no peer.
Key = tuple[ActrId | None, str]

#: Why :meth:`FastLane.open` gave no worker: nobody registered the name, the peer has
#: ``max_per_peer`` keys open, or the run loop cannot take a new worker now.
Refusal = Literal["unregistered", "peer_limit", "busy"]

# New keys waiting for run() to start their worker; consumed at once.
SPAWN_BUFFER: Final = 256
# Defaults of the bounds (the node passes its Config's).
MAX_PER_PEER: Final = 64
IDLE_TIMEOUT: Final = 60.0


@final
@attrs.frozen
class FastLaneStatistics:
    """Counters of one fast-lane gate."""

    registered: int
    active: int
    delivered: int
    dropped: int
    #: Items for a name nobody registered: refused, and not remembered.
    unrouted: int
    failed_callbacks: int
    #: Items refused because their peer had ``max_per_peer`` keys open already.
    refused: int = 0
    #: Keys closed after ``idle_timeout`` seconds without an item.
    expired: int = 0


class _Worker(Generic[I]):
    __slots__ = ("callback", "key", "mark", "receive", "send")

    def __init__(self, key: Key, callback: Callable[[I], Awaitable[None]], buffer: int) -> None:
        self.key = key
        self.callback = callback
        self.send, self.receive = trio.open_memory_channel[I](buffer)
        # The registry's own ordering state for this key (streams: instance, last sequence).
        self.mark: tuple[int, int] | None = None


class FastLane(Generic[I]):
    """Routes items to per-(peer, name) workers; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        buffer: int,
        max_per_peer: int = MAX_PER_PEER,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if max_per_peer < 1 or not idle_timeout > 0:
            raise ValueError("max_per_peer and idle_timeout must be > 0")
        self._name = name
        self._buffer = buffer
        self._max_per_peer = max_per_peer
        self._idle_timeout = idle_timeout
        self._callbacks: dict[str, Callable[[I], Awaitable[None]]] = {}
        self._workers: dict[Key, _Worker[I]] = {}
        self._per_peer: dict[ActrId | None, int] = {}
        self._activity: IdleTable[Key] = IdleTable()
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[_Worker[I]](SPAWN_BUFFER)
        self._delivered = self._dropped = self._unrouted = self._failed = 0
        self._refused = self._expired = 0
        # A flood of refusals is one WARNING line per peer and kind every 10 s, with a count.
        self._rate = RateLimiter(trio.current_time)

    def __repr__(self) -> str:
        return f"<FastLane {self._name} names={len(self._callbacks)} keys={len(self._workers)}>"

    def statistics(self) -> FastLaneStatistics:
        return FastLaneStatistics(
            len(self._callbacks),
            len(self._workers),
            self._delivered,
            self._dropped,
            self._unrouted,
            self._failed,
            self._refused,
            self._expired,
        )

    def open_keys(self, peer: ActrId | None) -> int:
        """Keys ``peer`` has open now."""
        return self._per_peer.get(peer, 0)

    def register(self, name: str, callback: Callable[[I], Awaitable[None]]) -> None:
        if name in self._callbacks:
            raise KeyError(f"{self._name} {name!r} already has a callback")
        self._callbacks[name] = callback

    def unregister(self, name: str) -> None:
        self._callbacks.pop(name, None)
        for key in [key for key in self._workers if key[1] == name]:
            self._close(key)

    def open(self, key: Key) -> _Worker[I] | Refusal:
        """The worker of ``key``, started if need be; or why there is none (counted, logged)."""
        worker = self._workers.get(key)
        now = trio.current_time()
        if worker is not None:
            self._activity.touch(key, now)
            return worker
        peer, name = key
        callback = self._callbacks.get(name)
        if callback is None:
            self._unrouted += 1
            self._warn(peer, name, "unregistered", "nothing registered for it")
            return "unregistered"
        if self._per_peer.get(peer, 0) >= self._max_per_peer:
            self.expire(now)  # one of its keys may have gone quiet since the last sweep
            if self._per_peer.get(peer, 0) >= self._max_per_peer:
                self._refused += 1
                self._warn(peer, name, "peer_limit", "its peer has too many open at once")
                return "peer_limit"
        worker = _Worker(key, callback, self._buffer)
        try:
            self._spawn_send.send_nowait(worker)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped += 1
            return "busy"
        self._workers[key] = worker
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._activity.touch(key, now)
        return worker

    def _warn(self, peer: ActrId | None, name: str, kind: str, why: str) -> None:
        # Keyed by peer and kind, not by name: distinct names from one peer are one line.
        self._rate.log(
            log,
            logging.WARNING,
            (peer, self._name, kind),
            "refused a %s %r from %s: %s",
            self._name,
            name,
            peer,
            why,
        )

    def offer(self, key: Key, item: I) -> bool:
        """Hand ``item`` to its key's worker without waiting; False if refused or dropped."""
        worker = self.open(key)
        if isinstance(worker, str):
            return False
        return self.offer_to(worker, item)

    def offer_to(self, worker: _Worker[I], item: I) -> bool:
        """Hand ``item`` to an open worker without waiting; False if its buffer is full."""
        try:
            worker.send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped += 1
            return False
        return True

    async def put_to(self, worker: _Worker[I], item: I) -> bool:
        """Hand ``item`` over, waiting while the key's buffer is full (lanes that never drop)."""
        try:
            await worker.send.send(item)
        except trio.ClosedResourceError:
            self._dropped += 1
            return False
        return True

    def finish(self, key: Key) -> None:
        """No more items for ``key`` (end of stream): its worker ends after the last one."""
        self._close(key)

    def _close(self, key: Key) -> None:
        worker = self._workers.pop(key, None)
        self._activity.forget(key)
        if worker is None:
            return
        worker.send.close()
        peer = key[0]
        left = self._per_peer.get(peer, 1) - 1
        if left:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)

    def expire(self, now: float) -> int:
        """Close every key without an item for ``idle_timeout`` seconds; how many."""
        closed = 0
        for key in self._activity.idle(now, self._idle_timeout):
            self._close(key)
            closed += 1
        self._expired += closed
        return closed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the workers (and the sweep of idle keys) until cancelled."""
        with self._spawn_recv:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep, name=f"{self._name}:sweep")
                task_status.started()
                async for worker in self._spawn_recv:
                    nursery.start_soon(self._work, worker, name=f"{self._name}:{worker.key!r}")

    async def _sweep(self) -> None:
        # Half the timeout: a key is closed between one and one and a half timeouts idle.
        while True:
            await trio.sleep(self._idle_timeout / 2)
            self.expire(trio.current_time())

    async def _work(self, worker: _Worker[I]) -> None:
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
            self._close(worker.key)
