"""The receiving side of the WebRTC transport, in Trio: what the asyncio side reports.

Part of the WebRTC transport (``_webrtc.py`` has the overview). :class:`Receiver` implements
``_webrtc_aio.LinkEvents``: the asyncio side of every link (``_webrtc_aio.Port``) hands it data
channel messages, channel and connection state, decoded media frames and errors, in batches
(one Trio callback per batch, see ``_webrtc_aio.AsyncioThread``). Here they are decoded into
packets (``_frames``), credited, and put on the transport's bounded inbound channel.

Every event is *contained*: an exception while handling one breaks that link only (logged at
WARNING, rate-limited, counted as ``link_errors``); an error the asyncio loop reports (its
exception handler: an aiortc task that failed, a task destroyed while pending) is logged
(WARNING, rate-limited, counted as ``asyncio_errors``) and closes the link it was attributed to,
if any. Nothing reaches the transport's nursery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from .._lanes import Lane
from .._logging import TRANSPORT, RateLimiter
from ._abc import Inbound, InboundFrame, InboundPackets
from ._frames import FrameError
from ._webrtc_link import (
    CREDIT,
    CREDITED,
    INBOUND_BUFFER,
    LANE_OF_CHANNEL,
    PROBE,
    TRACK_KIND_NAMES,
    Channel,
    Counters,
    Link,
    grant,
)

if TYPE_CHECKING:
    from ._webrtc_aio import Port

__all__ = ["Receiver"]

log = logging.getLogger(TRANSPORT)

InboundEntry = tuple[Link | None, Inbound]

# Default of Receiver.max_tracks (the transport sets Config.max_tracks_per_peer).
MAX_TRACKS: Final = 16


class Receiver:
    """Handles what the asyncio side of every link reports (see the module docstring).

    Args:
        counters: the transport's counters (this updates the receiving side's).
        inbound: where received batches and frames go (the transport's inbound channel).
    """

    def __init__(self, counters: Counters, inbound: trio.MemorySendChannel[InboundEntry]) -> None:
        self.counters = counters
        self._inbound = inbound
        # Track announcements (mid -> track id) one peer may hold on its link: each is a
        # table entry, and a peer may send any number (Config.max_tracks_per_peer).
        self.max_tracks = MAX_TRACKS
        # Anything a peer can repeat is logged once per peer and kind per 10 s.
        self.rate = RateLimiter(time.monotonic)

    # ------------------------------------------------------------------ errors

    def link_error(self, link: Link, exc: BaseException, where: str) -> None:
        """An exception on ``link`` (in ``where``): log it, count it, close that link only."""
        self.counters.link_errors += 1
        self.rate.log(
            log,
            logging.WARNING,
            (link.peer, "error"),
            "closing the link to %s: %s raised %r",
            link.peer,
            where,
            exc,
        )
        link.break_(f"{where} raised {exc!r}")

    def _contained(self, link: Link, where: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.link_error(link, exc, where)

    def failed(self, link: Link, where: str, exc: BaseException) -> None:
        """The asyncio side of ``link`` raised (our code there, or aiortc's)."""
        self.link_error(link, exc, where)

    def asyncio_error(self, link: Link | None, message: str, exc: BaseException | None) -> None:
        """The asyncio loop's exception handler reported an error (attributed to ``link``)."""
        self.counters.asyncio_errors += 1
        self.rate.log(
            log,
            logging.WARNING,
            (None if link is None else link.peer, "asyncio", message[:40]),
            "asyncio error%s: %s%s",
            "" if link is None else f" on the link to {link.peer} (closing it)",
            message,
            "" if exc is None else f": {exc!r}",
        )
        if link is not None:
            link.break_(f"asyncio error: {message}")

    # ------------------------------------------------------------------ state

    def channel_open(self, link: Link, channel: Channel) -> None:
        link.open_channels += 1
        link.wakeup.unpark_all()

    def channel_closed(self, link: Link, channel: Channel) -> None:
        link.break_(f"data channel {channel.name} closed")

    def connection_state(self, link: Link, state: str) -> None:
        if state in ("failed", "closed"):
            link.break_(f"connection {state}")

    def drained(self, link: Link, channel: Channel) -> None:
        lane = LANE_OF_CHANNEL.get(channel)
        if lane is not None:
            link.drained[lane].unpark_all()

    # ------------------------------------------------------------------ receiving

    def message(self, link: Link, channel: Channel, message: bytes | str) -> None:
        """A data-channel message from ``link``'s peer."""
        if channel is Channel.CONTROL:
            self._contained(link, "data channel CONTROL", self._on_control, link, message)
        else:
            where = f"data channel {channel.name}"
            self._contained(link, where, self._on_data, link, LANE_OF_CHANNEL[channel], message)

    def frame(self, port: Port, mid: str, frame: Any) -> None:
        """A decoded media frame of the track in slot ``mid``."""
        port.frames_taken += 1
        link = port.link
        counters = self.counters
        name = link.track_names.get(mid)
        if name is None or link.broken.is_set():
            counters.media_dropped += 1
            return
        track_id, kind = name
        sequence = link.track_sequences.get(mid, 0) + 1
        link.track_sequences[mid] = sequence
        item = InboundFrame(
            peer=link.peer,
            track_id=track_id,
            sequence=sequence,
            kind=kind,
            pts=frame.pts,
            width=int(getattr(frame, "width", 0)),
            height=int(getattr(frame, "height", 0)),
            frame=frame,
        )
        if self.offer_lossy((None, item)):
            counters.media_received += 1
        else:
            counters.media_dropped += 1

    def media_dropped(self, frames: int) -> None:
        """Frames the asyncio side dropped (Trio had not taken the ones before)."""
        self.counters.media_dropped += frames

    def offer_lossy(self, entry: InboundEntry) -> bool:
        """Put a droppable item on inbound while it is less than half full."""
        stats = self._inbound.statistics()
        if stats.current_buffer_used * 2 >= stats.max_buffer_size:
            return False
        try:
            self._inbound.send_nowait(entry)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def _on_data(self, link: Link, lane: Lane, message: bytes | str) -> None:
        if isinstance(message, str) or link.broken.is_set():
            return
        decoder = link.decoders[lane]
        skipped = decoder.skipped_frames
        try:
            packets = decoder.feed(message)
        except FrameError as exc:
            self.malformed(link, f"malformed frame on {lane.name}: {exc}")
            link.break_(f"malformed frame: {exc}")
            return
        counters = self.counters
        counters.frames_received += 1
        if lane in CREDITED:
            # Credits count frames: those that never reach the runtime as a batch (lost on the
            # lossy lane, or a fragment that completes no packet) come back now.
            unbatched = decoder.skipped_frames - skipped + (0 if packets else 1)
            if unbatched:
                grant(link, lane, unbatched)
        if not packets:
            return
        counters.packets_received += len(packets)
        entry = (link, InboundPackets(link.peer, lane, packets))
        if lane is Lane.LATENCY_FIRST:
            if not self.offer_lossy(entry):
                counters.dropped_latency_first += len(packets)
                grant(link, lane, 1)  # never reaches the runtime: its credit comes back now
            return
        try:
            self._inbound.send_nowait(entry)
        except trio.WouldBlock:
            counters.overflows += 1
            self.rate.log(
                log,
                logging.WARNING,
                (link.peer, "overflow"),
                "inbound buffer full (%d batches) for %s data from %s: closing the link; "
                "end-to-end resends will recover",
                INBOUND_BUFFER,
                lane.name,
                link.peer,
            )
            link.break_("inbound buffer overflow")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            link.break_("transport closed")

    def malformed(self, link: Link, what: str) -> None:
        """Malformed input from ``link``'s peer: WARNING, once per peer per 10 s (with a count
        of the lines suppressed meanwhile), counted as ``malformed``."""
        self.counters.malformed += 1
        self.rate.log(log, logging.WARNING, (link.peer, "malformed"), "%s from %s", what, link.peer)

    def _on_control(self, link: Link, message: bytes | str) -> None:
        if isinstance(message, str) or not message:
            self.malformed(link, "ignoring an empty or text control message")
            return
        if message[:1] == b"C" and len(message) == CREDIT.size:
            _, lane_value, granted = CREDIT.unpack(message)
            lane = _lane(lane_value)
            if lane in CREDITED:
                link.credits[lane] += granted
                link.credit_lot[lane].unpark_all()
                return
        elif message[:1] == b"P" and len(message) == PROBE.size:
            _, lane_value, sequence = PROBE.unpack(message)
            lane = _lane(lane_value)
            if lane in CREDITED:
                written_off = link.decoders[lane].skip_to(sequence)
                grant(link, lane, written_off, now=True)
                return
        elif message[:1] == b"T" and len(message) > 2:
            kind = TRACK_KIND_NAMES.get(message[1])
            mid, sep, track_id = message[2:].decode("utf-8", "replace").partition("\0")
            if kind is not None and sep:
                if mid not in link.track_names and len(link.track_names) >= self.max_tracks:
                    self.malformed(link, "ignoring a track announcement beyond max_tracks_per_peer")
                    return
                link.track_names[mid] = (track_id, kind)
                return
        self.malformed(link, "ignoring a malformed control message")


def _lane(value: int) -> Lane:
    try:
        return Lane(value)
    except ValueError:
        return Lane.MEDIA_TRACK  # not a credited lane: the message is malformed
