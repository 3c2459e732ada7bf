"""FLG1: stream chunks on the fast path (``ctx.streams``) and the sending side (``open_stream``).

Chunks of one stream reach its callback in sequence order (fast-path order): a chunk whose sequence
is not above the last one handed over (late or duplicated on the unordered LatencyFirst lane)
is dropped and counted. Each opening of a stream carries an increasing ``instance``: a newer one
restarts the sequence (so a stream whose end marker was lost can be opened again), and chunks of
an older one are late. Streams are independent of each other and of the state path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, final

import trio

from ._envelope import Chunk
from ._fastlane import FastLane, FastLaneStatistics
from ._ids import ActrId
from ._lanes import Lane

if TYPE_CHECKING:
    from ._context import Context
    from ._outgate import OutGate

StreamCallback = Callable[[Chunk, "Context"], Awaitable[None]]

#: The public name of a received chunk: ``stream_id``, ``sequence``, ``payload``, ``end``.
StreamChunk = Chunk


@final
class StreamRegistry:
    """``stream_id -> callback`` for inbound chunks (``ctx.streams``)."""

    def __init__(self, *, buffer: int, make_context: Callable[[ActrId | None], Context]) -> None:
        self._lane: FastLane[str, tuple[ActrId, Chunk]] = FastLane("stream", buffer=buffer)
        self._make_context = make_context
        self._last: dict[str, tuple[int, int]] = {}  # stream_id -> (instance, last sequence)
        self._late = 0

    def register(self, stream_id: str, callback: StreamCallback) -> None:
        """Deliver chunks of ``stream_id`` to ``async def callback(chunk, ctx)``.

        Raises:
            KeyError: the stream already has a callback.
        """

        async def deliver(item: tuple[ActrId, Chunk]) -> None:
            peer, chunk = item
            await callback(chunk, self._make_context(peer))

        self._lane.register(stream_id, deliver)

    def unregister(self, stream_id: str) -> None:
        """Stop delivering ``stream_id`` (chunks arriving later are counted as unrouted)."""
        self._lane.unregister(stream_id)
        self._last.pop(stream_id, None)

    def statistics(self) -> FastLaneStatistics:
        """Delivered, dropped (full buffer or late), unrouted and failed-callback counts."""
        stats = self._lane.statistics()
        return FastLaneStatistics(
            stats.registered,
            stats.active,
            stats.delivered,
            stats.dropped + self._late,
            stats.unrouted,
            stats.failed_callbacks,
        )

    async def deliver(self, peer: ActrId, lane: Lane, chunk: Chunk) -> None:
        """Route one inbound chunk (called by the node's inbound gate)."""
        instance, last = self._last.get(chunk.stream_id, (chunk.instance, -1))
        if chunk.instance > instance:
            last = -1  # the sender opened the stream again
        elif chunk.instance < instance or chunk.sequence <= last:
            self._late += 1
            await trio.lowlevel.checkpoint()
            return
        self._last[chunk.stream_id] = (chunk.instance, chunk.sequence)
        if lane is Lane.LATENCY_FIRST:
            await trio.lowlevel.checkpoint()
            self._lane.offer(chunk.stream_id, (peer, chunk))
        else:
            await self._lane.put(chunk.stream_id, (peer, chunk))
        if chunk.end:
            self._lane.finish(chunk.stream_id)
            self._last.pop(chunk.stream_id, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._lane.run(task_status=task_status)


@final
class StreamSender:
    """The sending end of one stream; get it from ``ctx.open_stream(target, stream_id)``."""

    def __init__(self, gate: OutGate, target: ActrId, stream_id: str, lane: Lane) -> None:
        self._gate = gate
        self.target = target
        self.stream_id = stream_id
        self.lane = lane
        self._sequence = 0
        self._closed = False
        # Increasing across openings (also across restarts of the sender): the receiver starts
        # the sequence anew for a newer instance and drops chunks of older ones.
        self._instance = time.time_ns()

    def __repr__(self) -> str:
        return f"<StreamSender {self.stream_id!r} to {self.target} on {self.lane.name}>"

    async def send(self, data: bytes) -> None:
        """Send one chunk. Waits while the outbox to that peer is full (backpressure).

        Raises:
            trio.ClosedResourceError: the stream was closed.
            EnvelopeTooLarge: ``data`` exceeds ``Config.max_payload``.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"stream {self.stream_id!r} is closed")
        self._sequence += 1
        await self._gate.send_chunk(
            self.target,
            self.lane,
            Chunk(self.stream_id, self._sequence, bytes(data), False, self._instance),
        )

    async def aclose(self) -> None:
        """Send the end-of-stream marker (once); further ``send`` raises."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._sequence += 1
        await self._gate.send_chunk(
            self.target, self.lane, Chunk(self.stream_id, self._sequence, b"", True, self._instance)
        )
