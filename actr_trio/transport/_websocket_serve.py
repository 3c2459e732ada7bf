"""An open direct WebSocket link at work: its lanes' flushers, its reader, its credit writer.

Part of the WebSocket transport (``_websocket.py`` has the overview, ``_websocket_link`` the
state and the wire format): :func:`serve` runs while the link is open. Each task is guarded:
whatever it raises (the connection closed, a malformed message, a bug) closes this link only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._lanes import Lane
from .._logging import TRANSPORT, RateLimiter
from ._abc import Inbound, InboundPackets
from ._frames import FrameError
from ._websocket_link import (
    CONTROL,
    CREDIT,
    DATA_LANES,
    FRAME_OVERHEAD,
    INBOUND_BUFFER,
    INDEX_OF_LANE,
    RECORD_COST,
    Counters,
    Link,
    wait_credit,
    wait_idle,
)

__all__ = ["link_error", "serve", "write_now"]

log = logging.getLogger(TRANSPORT)

Sink = trio.MemorySendChannel[tuple[Link | None, Inbound]]


async def serve(
    link: Link,
    ws: WebSocketConnection,
    *,
    counters: Counters,
    inbound: Sink,
    max_frame_size: int,
    rate: RateLimiter,
) -> None:
    """Move data both ways on ``ws`` until ``link`` breaks (then cancel every task)."""

    async def guarded(fn: Callable[..., Awaitable[None]], *args: object) -> None:
        try:
            await fn(link, ws, *args)
        except ConnectionClosed as exc:
            reason = exc.reason
            code = reason.code if reason is not None else 1006
            text = (reason.reason if reason is not None else None) or "no reason given"
            link.break_(f"connection closed ({code}: {text})")
        except FrameError as exc:
            _malformed(link, str(exc), counters, rate)
        except Exception as exc:
            link_error(link, exc, counters, rate)

    link.ws = ws
    async with trio.open_nursery() as nursery:
        for lane in DATA_LANES:
            nursery.start_soon(guarded, _flush, lane, max_frame_size, counters)
        nursery.start_soon(guarded, _read, inbound, counters)
        nursery.start_soon(guarded, _write_control)
        await link.broken.wait()
        nursery.cancel_scope.cancel(reason="link closed")


def link_error(link: Link, exc: Exception, counters: Counters, rate: RateLimiter) -> None:
    """An unexpected exception on ``link``: counted, logged (rate-limited), the link closed."""
    counters.link_errors += 1
    rate.log(log, logging.WARNING, (link.peer, "error"), "link to %s failed: %r", link.peer, exc)
    link.break_(f"link error: {exc!r}")


async def _flush(
    link: Link, ws: WebSocketConnection, lane: Lane, max_frame_size: int, counters: Counters
) -> None:
    """Write the lane's outbox as frames, each within the receiver's credit.

    As on WebRTC: wait for packets, let busy senders fill a frame (flush when idle or full),
    wait for credit, then take only what the credit covers, so later packets coalesce into the
    next frames. TCP's own backpressure makes ``send_message`` wait when the peer is slow.
    """
    outbox = link.outboxes[lane]
    encoder = link.encoders[lane]
    prefix = bytes([INDEX_OF_LANE[lane]])
    payload_per_frame = max_frame_size - FRAME_OVERHEAD
    while True:
        await outbox.wait_pending()
        await wait_idle(outbox, max_frame_size)
        while True:
            await wait_credit(link, lane, counters)
            if not link.writing[lane]:
                break
            await link.written[lane].park()  # a sender is writing directly
        packets = outbox.take(link.credits[lane] * payload_per_frame)
        link.writing[lane] = True
        try:
            for frame in encoder.encode(packets):
                await wait_credit(link, lane, counters)
                link.credits[lane] -= 1
                await ws.send_message(prefix + frame)
                counters.frames_sent += 1
        finally:
            link.writing[lane] = False
            link.written[lane].unpark_all()
        counters.packets_sent += len(packets)


async def write_now(link: Link, lane: Lane, packets: Sequence[bytes], counters: Counters) -> bool:
    """Write ``packets`` as one frame from the sender's own task, if the lane is idle.

    A sender that finds nothing queued, no write in progress and credit left skips the
    flusher: no task switch and no idle rounds (ping-pong latency). Only for packets that fit
    one frame. False: nothing was written, queue them. The write is shielded, since a frame
    cut off by a cancelled caller would corrupt the connection; credit bounds how long it can
    wait (TCP's buffer holds a window).
    """
    ws = link.ws
    if (
        ws is None
        or link.writing[lane]
        or link.outboxes[lane].pending
        or link.credits[lane] <= 0
        or link.failure is not None
    ):
        return False
    encoder = link.encoders[lane]
    size = FRAME_OVERHEAD + sum(len(p) + RECORD_COST for p in packets)
    if size > encoder.max_frame_size:
        return False
    link.writing[lane] = True
    try:
        (frame,) = encoder.encode(packets)
        link.credits[lane] -= 1
        with trio.CancelScope(shield=True):
            await ws.send_message(bytes([INDEX_OF_LANE[lane]]) + frame)
        counters.frames_sent += 1
        counters.packets_sent += len(packets)
    except ConnectionClosed as exc:
        # As if queued on a link that then closed: the runtime's resends recover.
        link.break_(f"connection closed while writing ({exc.reason})")
    finally:
        link.writing[lane] = False
        link.written[lane].unpark_all()
    return True


async def _write_control(link: Link, ws: WebSocketConnection) -> None:
    """Send the credit grants the runtime's reads made due (``Link.grant``)."""
    while True:
        grants = link.take_grants()
        if not grants:
            await link.control_lot.park()
            continue
        for message in grants:
            await ws.send_message(message)


async def _read(link: Link, ws: WebSocketConnection, inbound: Sink, counters: Counters) -> None:
    """Decode what the peer sends; deliver packets, apply credit grants. Never waits on the
    runtime: credit keeps reliable data within the buffer, LatencyFirst is dropped at half."""
    while True:
        message = await ws.get_message()
        if not isinstance(message, bytes) or not message:
            raise FrameError("a text or empty message on a link")
        index = message[0]
        if index == CONTROL:
            _on_control(link, message)
            continue
        if index >= len(DATA_LANES):
            raise FrameError(f"unknown lane {index}")
        lane = DATA_LANES[index]
        decoder = link.decoders[lane]
        packets = decoder.feed(message[1:])
        if decoder.skipped_frames:
            raise FrameError(f"a gap in the frames of {lane.name} (TCP loses nothing)")
        counters.frames_received += 1
        if not packets:
            link.grant(lane, 1, now=True)  # a fragment: its frame is done with
            continue
        counters.packets_received += len(packets)
        item = InboundPackets(link.peer, lane, packets)
        crowded = inbound.statistics().current_buffer_used >= INBOUND_BUFFER // 2
        if lane is Lane.LATENCY_FIRST and crowded:
            counters.dropped_latency_first += len(packets)
            link.grant(lane, 1, now=True)
            continue
        try:
            inbound.send_nowait((link, item))
        except trio.WouldBlock:
            counters.overflows += 1
            log.warning(
                "inbound buffer full: closing the link to %s (the runtime resends)", link.peer
            )
            link.break_("inbound buffer overflow")
            return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return


def _on_control(link: Link, message: bytes) -> None:
    if len(message) != 1 + CREDIT.size:
        raise FrameError(f"CONTROL message of {len(message)} bytes")
    kind, index, frames = CREDIT.unpack_from(message, 1)
    if kind != b"C" or index >= len(DATA_LANES):
        raise FrameError(f"unknown CONTROL message {message[:2]!r}")
    link.on_credit(DATA_LANES[index], frames)


def _malformed(link: Link, why: str, counters: Counters, rate: RateLimiter) -> None:
    counters.malformed += 1
    rate.log(
        log,
        logging.WARNING,
        (link.peer, "malformed"),
        "malformed data from %s, closing the link: %s",
        link.peer,
        why,
    )
    link.break_(f"malformed data: {why}")
