"""aiortc peer connections for the WebRTC transport, and what keeps their errors in a link.

Part of the WebRTC transport (``_webrtc.py`` has the overview). :class:`PeerConnections`
creates a link's ``RTCPeerConnection`` (media slots, then the four negotiated data channels)
and registers its callbacks. The callbacks do nothing but hand data to Trio (set an event,
``send_nowait`` on a bounded channel), and every one of them is *contained*: an exception in
it breaks that link only (logged at WARNING, rate-limited, counted as ``link_errors``) instead
of reaching aiortc, whose event emitter would re-raise it inside its own tasks.

What aiortc's own tasks and callbacks raise never reaches us as an exception: asyncio hands it
to the loop's exception handler, and trio-asyncio's default handler *re-raises* it in the
loop's nursery, which would end the transport and the node with it (a "Task was destroyed but
it is pending!" from a peer connection that a flood left half-closed did exactly that).
:meth:`PeerConnections.on_asyncio_error` replaces that handler: it logs (WARNING, rate-limited,
counted as ``asyncio_errors``), breaks the link whose aiortc object the failing task or
callback belongs to when it can tell, and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import trio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)

from .._lanes import Lane
from .._logging import TRANSPORT, RateLimiter
from ._abc import Inbound, InboundPackets
from ._frames import FrameError
from ._webrtc_link import (
    CHANNEL_RELIABILITY,
    CREDIT,
    CREDITED,
    INBOUND_BUFFER,
    LANE_OF_CHANNEL,
    LOW_WATER,
    PROBE,
    TRACK_KIND_NAMES,
    Channel,
    Counters,
    Link,
    grant,
)

__all__ = ["PeerConnections"]

log = logging.getLogger(TRANSPORT)

InboundEntry = tuple[Link | None, Inbound]
# How deep on_asyncio_error looks for the aiortc object behind a failing task or callback.
_MAX_AWAIT_DEPTH: Final = 16
_MAX_TRACEBACK: Final = 64


class PeerConnections:
    """Creates and watches the peer connections of one transport (see the module docstring).

    Args:
        counters: the transport's counters (this updates the receiving side's).
        inbound: where received batches and frames go (the transport's inbound channel).
        media_slots: kinds of the media transceivers every link gets.
        links: the transport's current links (to attribute an asyncio error to one).
    """

    def __init__(
        self,
        counters: Counters,
        inbound: trio.MemorySendChannel[InboundEntry],
        media_slots: tuple[str, ...],
        links: Callable[[], Iterable[Link]],
    ) -> None:
        self.counters = counters
        self._inbound = inbound
        self._media_slots = media_slots
        self._links = links
        # Anything a peer can repeat is logged once per peer and kind per 10 s. Monotonic, not
        # Trio's clock: asyncio errors can be reported outside any Trio run (garbage collection).
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

    def contained(self, link: Link, where: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as an aiortc callback: an exception in it breaks ``link`` instead of
        propagating into aiortc."""

        def callback(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                self.link_error(link, exc, where)

        return callback

    def on_asyncio_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The asyncio loop's exception handler: log, close the link involved, never raise."""
        try:
            self.counters.asyncio_errors += 1
            message = str(context.get("message") or "unhandled error in the asyncio loop")
            exception = context.get("exception")
            link = self._link_of(context)
            self.rate.log(
                log,
                logging.WARNING,
                (None if link is None else link.peer, "asyncio", message[:40]),
                "asyncio error%s: %s%s",
                "" if link is None else f" on the link to {link.peer} (closing it)",
                message,
                "" if exception is None else f": {exception!r}",
            )
            if link is not None:
                link.break_(f"asyncio error: {message}")
        except Exception:  # never let a report become an error trio-asyncio re-raises
            log.debug("could not report an asyncio error", exc_info=True)

    def _link_of(self, context: dict[str, Any]) -> Link | None:
        suspects = {id(obj) for obj in _suspects(context)}
        if not suspects:
            return None
        for link in self._links():
            if link.pc is not None and suspects & {id(obj) for obj in _owned(link)}:
                return link
        return None

    # ------------------------------------------------------------------ negotiation

    def setup(self, configuration: RTCConfiguration, link: Link) -> RTCPeerConnection:
        """A new peer connection for ``link`` (on the asyncio loop), callbacks registered."""
        pc = RTCPeerConnection(configuration)
        link.pc = pc
        link.loop = asyncio.get_running_loop()
        # Transceivers before the data channels: with MAX_BUNDLE aiortc then bundles the SCTP
        # transport onto the first transceiver's from the start. The other order makes
        # setRemoteDescription "unbundle" the SCTP transport by stopping the shared transport.
        for kind in self._media_slots:
            pc.addTransceiver(kind, direction="sendrecv")
        for which in Channel:
            ordered, max_retransmits = CHANNEL_RELIABILITY[which]
            channel = pc.createDataChannel(
                which.name.lower(),
                ordered=ordered,
                maxRetransmits=max_retransmits,
                negotiated=True,
                id=int(which),
            )
            channel.bufferedAmountLowThreshold = LOW_WATER
            link.channels[which] = channel
            self._watch_channel(link, which, channel)

        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                link.break_(f"connection {pc.connectionState}")

        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track and transceiver.mid is not None:
                    try:
                        link.new_tracks_send.send_nowait((transceiver.mid, track))
                    except (trio.WouldBlock, trio.ClosedResourceError):
                        log.warning("track from %s not received: no room", link.peer)

        pc.on("connectionstatechange", self.contained(link, "connectionstatechange", on_state))
        pc.on("track", self.contained(link, "track", on_track))
        return pc

    async def offer(self, configuration: RTCConfiguration, link: Link) -> str:
        """Our offer for ``link`` (asyncio; ICE gathered, non-trickle)."""
        pc = self.setup(configuration, link)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    @staticmethod
    async def accept_answer(link: Link, answer: str) -> None:
        assert link.pc is not None
        await link.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def answer(self, configuration: RTCConfiguration, link: Link, offer: str) -> str:
        """Our answer to the peer's (verified) ``offer`` (asyncio)."""
        pc = self.setup(configuration, link)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    # ------------------------------------------------------------------ receiving

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

    def _watch_channel(self, link: Link, which: Channel, channel: RTCDataChannel) -> None:
        name = f"data channel {which.name}"

        def on_open() -> None:
            link.open_channels += 1
            link.wakeup.unpark_all()

        def on_close() -> None:
            link.break_(f"data channel {which.name} closed")

        channel.on("open", self.contained(link, name, on_open))
        channel.on("close", self.contained(link, name, on_close))
        if which is Channel.CONTROL:

            def on_control(message: bytes | str) -> None:
                self._on_control(link, message)

            channel.on("message", self.contained(link, name, on_control))
            return
        lane = LANE_OF_CHANNEL[which]
        drained = link.drained[lane]

        def on_low() -> None:
            drained.unpark_all()

        def on_message(message: bytes | str) -> None:
            self._on_data(link, lane, message)

        channel.on("bufferedamountlow", self.contained(link, name, on_low))
        channel.on("message", self.contained(link, name, on_message))

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
                link.track_names[mid] = (track_id, kind)
                return
        self.malformed(link, "ignoring a malformed control message")


def _lane(value: int) -> Lane:
    try:
        return Lane(value)
    except ValueError:
        return Lane.MEDIA_TRACK  # not a credited lane: the message is malformed


def _owned(link: Link) -> Iterator[object]:
    """The aiortc objects of ``link``'s peer connection (whose tasks may fail)."""
    pc = link.pc
    if pc is None:
        return
    yield pc
    yield from link.channels.values()
    # aiortc's annotations say these are never None; before negotiation some are.
    sctp: object = pc.sctp
    transports: list[object] = [sctp, getattr(sctp, "transport", None)]
    for transceiver in pc.getTransceivers():
        yield transceiver
        yield transceiver.sender
        yield transceiver.receiver
        transports.append(transceiver.sender.transport)
    for transport in transports:
        if transport is None:
            continue
        yield transport  # the SCTP transport, or a DTLS transport
        ice = getattr(transport, "transport", None)  # a DTLS transport's ICE transport
        if ice is not None:
            yield ice
            gatherer = getattr(ice, "iceGatherer", None)
            if gatherer is not None:
                yield gatherer


def _suspects(context: dict[str, Any]) -> Iterator[object]:
    """Objects whose methods a failing task or callback ran (``self`` of each frame): where
    the exception was raised (a finished task's coroutine has no frames left), what a pending
    task was running, the callback's owner."""
    exception = context.get("exception")
    tb = getattr(exception, "__traceback__", None)
    for _ in range(_MAX_TRACEBACK):
        if tb is None:
            break
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None:
            yield owner
        tb = tb.tb_next
    for key in ("future", "task"):
        future = context.get(key)
        get_coro = getattr(future, "get_coro", None)
        if get_coro is not None:
            yield from _coroutine_selves(get_coro())
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if owner is not None:
        yield owner
    for key in ("transport", "protocol"):
        if context.get(key) is not None:
            yield context[key]


def _coroutine_selves(coro: object) -> Iterator[object]:
    for _ in range(_MAX_AWAIT_DEPTH):
        if not isinstance(coro, types.CoroutineType):
            return
        frame = coro.cr_frame
        if frame is not None and "self" in frame.f_locals:
            yield frame.f_locals["self"]
        coro = coro.cr_await
