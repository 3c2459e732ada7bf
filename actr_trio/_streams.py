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
from typing import TYPE_CHECKING, Generic, TypeVar, final

import attrs
import trio

from ._envelope import Chunk, WireError
from ._fastlane import IDLE_TIMEOUT, MAX_PER_PEER, FastLane, FastLaneStatistics, Refusal
from ._ids import ActrId
from ._lanes import Lane
from ._peerlane import ChunkAcks
from .errors import StreamIncomplete

if TYPE_CHECKING:
    from ._outgate import OutGate

#: The context a callback gets (``Context``; generic here, so this module needs not import it).
C = TypeVar("C")

#: ``async def callback(chunk, ctx)``.
StreamCallback = Callable[[Chunk, C], Awaitable[None]]

#: The public name of a received chunk: ``stream_id``, ``sequence``, ``payload``, ``end``.
StreamChunk = Chunk


@final
class StreamRegistry(Generic[C]):
    """``stream_id -> callback`` for inbound chunks (``ctx.streams``, a
    ``StreamRegistry[Context]``).

    What arrives is kept per ``(peer, stream_id)`` (see ``_fastlane.py``): a chunk for a
    stream id nothing registered is refused and not remembered, a peer has at most
    ``max_per_peer`` streams open, and a stream quiet for ``idle_timeout`` seconds is closed.
    """

    def __init__(
        self,
        *,
        buffer: int,
        make_context: Callable[[ActrId | None], C],
        max_per_peer: int = MAX_PER_PEER,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._lane: FastLane[tuple[ActrId, Chunk]] = FastLane(
            "stream", buffer=buffer, max_per_peer=max_per_peer, idle_timeout=idle_timeout
        )
        self._make_context = make_context
        self._late = 0

    def register(self, stream_id: str, callback: StreamCallback[C]) -> None:
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

    def statistics(self) -> FastLaneStatistics:
        """Delivered, dropped (full buffer or late), unrouted (no callback), refused (the
        peer's open streams at their bound), expired and failed-callback counts."""
        stats = self._lane.statistics()
        return attrs.evolve(stats, dropped=stats.dropped + self._late)

    def open_streams(self, peer: ActrId | None) -> int:
        """Streams ``peer`` has open to this node now."""
        return self._lane.open_keys(peer)

    def expire(self, now: float) -> int:
        """Close the streams idle for longer than the timeout at ``now``; how many."""
        return self._lane.expire(now)

    async def deliver(self, peer: ActrId, lane: Lane, chunk: Chunk) -> Refusal | None:
        """Route one inbound chunk (called by the node's inbound gate).

        Returns why it was refused (the gate refuses such a chunk on a reliable lane): no
        callback for the stream, or the peer's open streams at their bound; None when it was
        queued for the callback, dropped on LatencyFirst, or is late (already superseded:
        nothing to retry).
        """
        key = (peer, chunk.stream_id)
        worker = self._lane.open(key)
        if isinstance(worker, str):
            await trio.lowlevel.checkpoint()
            return worker
        # Ordering is per (peer, stream): another peer's chunk with the same id never moves
        # this mark, whatever instance or sequence it claims.
        instance, last = worker.mark or (chunk.instance, -1)
        if chunk.instance > instance:
            last = -1  # the sender opened the stream again
        elif chunk.instance < instance or chunk.sequence <= last:
            self._late += 1
            await trio.lowlevel.checkpoint()
            return None
        worker.mark = (chunk.instance, chunk.sequence)
        routed = True
        if lane is Lane.LATENCY_FIRST:
            await trio.lowlevel.checkpoint()
            self._lane.offer_to(worker, (peer, chunk))
        else:
            routed = await self._lane.put_to(worker, (peer, chunk))
        if chunk.end or not routed:
            self._lane.finish(key)
        return None if routed else "busy"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._lane.run(task_status=task_status)


@final
class StreamSender:
    """The sending end of one stream; get it from ``ctx.open_stream(target, stream_id)``.

    What ``close()`` promises depends on the lane:

    * **Signal / Reliable**: every chunk is numbered on the link to ``target``, like calls
      and tells, and resent (lost packets, a broken link) until the receiver acknowledges it
      or ``timeout`` seconds after it was sent. The receiver delivers in order and acknowledges
      once its stream registry took the chunk for the callback (a chunk still queued there
      dies with a receiver that crashes). ``close()`` sends the end-of-stream marker and
      waits, at most ``timeout`` seconds, for every ack; it raises
      :class:`~actr_trio.errors.StreamIncomplete`, with the count, if any chunk was not
      acknowledged by then: the receiver died or stayed unreachable, said goodbye (a graceful
      shutdown fails its unacknowledged chunks at once), or has no callback for the stream.
    * **LatencyFirst**: best effort. Chunks are sent once and never acknowledged; a chunk may
      be dropped (full buffers, lost packets) without any error, and ``close()`` returns as
      soon as the end marker is queued. Chunks that arrive reach the callback in order.
    """

    def __init__(
        self, gate: OutGate, target: ActrId, stream_id: str, lane: Lane, *, timeout: float
    ) -> None:
        self._gate = gate
        self.target = target
        self.stream_id = stream_id
        self.lane = lane
        self._timeout = timeout
        self._acks = ChunkAcks() if lane.sequenced else None
        self._sequence = 0
        self._sent = 0
        self._closed = False
        # Increasing across openings (also across restarts of the sender): the receiver starts
        # the sequence anew for a newer instance and drops chunks of older ones.
        self._instance = time.time_ns()

    def __repr__(self) -> str:
        return f"<StreamSender {self.stream_id!r} to {self.target} on {self.lane.name}>"

    @property
    def sent(self) -> int:
        """Data chunks sent so far (queued to the transport; the end marker not counted)."""
        return self._sent

    @property
    def acknowledged(self) -> int:
        """Data chunks the receiver acknowledged so far (always 0 on LatencyFirst: no acks)."""
        return 0 if self._acks is None else self._acks.acked

    async def send(self, data: bytes) -> None:
        """Send one chunk. Waits while the outbox (or, on a reliable lane, the window of
        unacknowledged packets) to that peer is full (backpressure).

        Raises:
            trio.ClosedResourceError: the stream was closed.
            EnvelopeTooLarge: ``data`` exceeds ``Config.max_payload``.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"stream {self.stream_id!r} is closed")
        await self._send(bytes(data), end=False)
        self._sent += 1

    async def _send(self, data: bytes, *, end: bool) -> None:
        self._sequence += 1
        chunk = Chunk(self.stream_id, self._sequence, data, end, self._instance)
        deadline = trio.current_time() + self._timeout
        await self._gate.send_chunk(
            self.target, self.lane, chunk, acks=self._acks, deadline=deadline
        )

    async def aclose(self) -> None:
        """Send the end-of-stream marker (once) and, on a reliable lane, wait for the acks.

        Further ``send`` raises; a second ``aclose`` returns at once.

        Raises:
            StreamIncomplete: (Signal/Reliable only) within ``timeout`` seconds, some chunks
                or the end marker were not acknowledged; the error carries the counts.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._send(b"", end=True)
        if self._acks is None:
            return
        with trio.move_on_after(self._timeout):
            await self._acks.wait()
        self._check_acknowledged()

    async def _abort(self) -> None:
        """Close without waiting for acks (the ``async with`` block raised: its error wins)."""
        if not self._closed:
            self._closed = True
            await self._send(b"", end=True)
        if self._acks is not None:
            self._acks.abandon()

    def _check_acknowledged(self) -> None:
        acks = self._acks
        assert acks is not None
        missing = self._sent - acks.acked
        if missing == 0 and acks.end_acked:
            return
        acks.abandon()  # nobody waits any more: let the link expire what is left
        what = (
            f"{missing} of {self._sent} chunks were not acknowledged"
            if missing
            else f"the end of the stream was not acknowledged (all {self._sent} chunks were)"
        )
        reason = f" ({_reason(acks.reason)})" if acks.reason is not None else ""
        raise StreamIncomplete(
            f"stream {self.stream_id!r} to {self.target} on {self.lane.name}: {what}{reason}",
            stream_id=self.stream_id,
            sent=self._sent,
            unacknowledged=missing,
            end_acknowledged=acks.end_acked,
        )


def _reason(reason: WireError | BaseException) -> str:
    return reason.message if isinstance(reason, WireError) else str(reason)
