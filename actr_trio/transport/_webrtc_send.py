"""The sending side of a WebRTC link: one flusher per data lane, outbox to frames within credit.

Part of the WebRTC transport (``_webrtc.py`` has the overview, "Backpressure"): the link task
runs :func:`flush` for each data lane while the link is open. It waits for packets, lets busy
senders fill a frame (flush when idle or full), waits for the receiver's credit and for aiortc's
buffer to drain, then encodes frames, each within its own credit, and hands them to the
asyncio side in one batch (``Port.write_soon``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

from .._lanes import Lane
from ._frames import FrameEncoder
from ._webrtc_link import (
    CHANNEL_OF_LANE,
    CREDITED,
    FRAME_OVERHEAD,
    HIGH_WATER,
    PROBE,
    Channel,
    Counters,
    Link,
    Outbox,
)

__all__ = ["IDLE_ROUNDS", "MAX_IDLE_ROUNDS", "STALL_PROBE", "flush"]

#: Quiet scheduling rounds after which a lane counts as idle and is flushed (``_wait_idle``).
IDLE_ROUNDS: Final = 3
#: Scheduling rounds a flusher waits at most for a busy sender to fill a frame.
MAX_IDLE_ROUNDS: Final = 512
#: Seconds a sender waits for credit before probing the receiver (tail loss, see flush).
STALL_PROBE: Final = 0.5
#: Seconds between two looks at aiortc's buffer while waiting for it to drain.
DRAIN_RECHECK: Final = 0.05


async def flush(link: Link, lane: Lane, *, max_frame_size: int, counters: Counters) -> None:
    """Write the lane's outbox as frames, whenever there is credit and buffer room.

    Waiting for credit and room happens *before* taking from the outbox, so packets that
    arrive meanwhile are coalesced into the next frames (flush when idle or full). Only as
    many packets as the credit covers are taken, and each frame still waits for its own
    credit (a big packet's fragments go out as credit returns), so a burst never exceeds
    ``WINDOW`` frames: bigger bursts overflow the receiving UDP socket on loopback, and
    aiortc's partially reliable SCTP stream can then stall for many seconds.
    """
    outbox = link.outboxes[lane]
    encoder = link.encoders[lane]
    which = CHANNEL_OF_LANE[lane]
    port = link.port
    assert port is not None
    credited = lane in CREDITED
    payload_per_frame = max_frame_size - FRAME_OVERHEAD
    while True:
        await outbox.wait_pending()
        await _wait_idle(outbox, max_frame_size)
        if credited:
            await _wait_credit(link, lane, encoder, counters)
        await _wait_drained(link, lane, port.buffered)
        if credited:
            budget = link.credits[lane] * payload_per_frame
        else:
            budget = max(HIGH_WATER - port.buffered(which), payload_per_frame)
        packets = outbox.take(budget)
        # Frames cross to the asyncio loop in batches: all those the credit covers at once.
        batch: list[bytes] = []
        for frame in encoder.encode(packets):
            if credited:
                if link.credits[lane] <= 0 and batch:
                    port.write_soon(which, batch)
                    batch = []
                await _wait_credit(link, lane, encoder, counters)
                link.credits[lane] -= 1
            batch.append(frame)
            counters.frames_sent += 1
        if batch:
            port.write_soon(which, batch)
        counters.packets_sent += len(packets)


async def _wait_drained(link: Link, lane: Lane, buffered: Callable[[Channel], int]) -> None:
    """Wait while aiortc buffers more than ``HIGH_WATER`` on the lane's channel.

    The buffer lives on the asyncio thread: its ``bufferedamountlow`` event may come between
    reading the amount and parking here, so the wait re-reads it now and then.
    """
    which = CHANNEL_OF_LANE[lane]
    while buffered(which) > HIGH_WATER:
        with trio.move_on_after(DRAIN_RECHECK):
            await link.drained[lane].park()


async def _wait_credit(link: Link, lane: Lane, encoder: FrameEncoder, counters: Counters) -> None:
    """Return once ``lane`` has credit; probe the receiver while starved."""
    if link.credits[lane] > 0:
        return
    counters.credit_waits += 1
    while link.credits[lane] <= 0:
        with trio.move_on_after(STALL_PROBE):
            await link.credit_lot[lane].park()
            continue
        # No credit for a while: frames may have been lost at the tail of a burst (no
        # later frame reveals the gap). Tell the receiver where we are.
        link.send_control(PROBE.pack(b"P", int(lane), encoder.next_sequence))


async def _wait_idle(outbox: Outbox, max_frame_size: int) -> None:
    """Let busy senders fill the frame: return once ``IDLE_ROUNDS`` rounds added nothing.

    Flush when idle or full (issue 3 §6): a sender that is still producing adds packets
    every scheduling round or two (Trio may run it before or after us within a round, hence
    several quiet rounds in a row before calling the lane idle); a lone packet (ping-pong)
    costs those few rounds. Bounded by a frame's worth of bytes and ``MAX_IDLE_ROUNDS``.
    """
    quiet = 0
    for _ in range(MAX_IDLE_ROUNDS):
        if outbox.size >= max_frame_size:
            return
        before = len(outbox.pending)
        await trio.lowlevel.cancel_shielded_checkpoint()
        if len(outbox.pending) == before:
            quiet += 1
            if quiet >= IDLE_ROUNDS:
                return
        else:
            quiet = 0
