"""WebRTC transport: aiortc peer connections driven from Trio through trio-asyncio.

The only module of actr_trio that imports asyncio, aiortc or trio_asyncio. ``run`` opens one
asyncio loop (``trio_asyncio.open_loop``) and owns every peer connection; aiortc callbacks do
nothing but hand data to Trio (set an event, ``send_nowait`` on a bounded channel).

Links. One ``RTCPeerConnection`` per remote node, opened by the first ``send``/``publish_track``
(offer relayed through signaling once ICE gathering finished: no trickle) and reused. When both
sides offer at once (glare) the lower ``ActrId`` stays the offerer; the higher one drops its own
attempt and answers. A link that fails, closes, or does not connect within ``connect_timeout``
is dropped from the table (the next ``send`` opens a new one) and its senders get
``PeerUnavailable``. A fresh offer from a peer we are linked to replaces the link (the peer lost
its end, e.g. it restarted).

Binding. Every offer and answer travels sealed (``_binding``): the SDP with our credential and
our node key's signature over its DTLS fingerprints. A received one is opened (verified) before
anything else happens: an offer that does not verify is not answered and replaces no link; an
answer that does not verify fails the link with ``PeerNotAuthenticated``. Both are logged at
WARNING (rate-limited per peer). aiortc then holds the DTLS handshake to the verified
fingerprints, so the peer at the other end of an open link is the node its credential names.

Lanes. Four *negotiated* data channels with fixed ids, so neither side announces anything in
band: SIGNAL (ordered, fully reliable), RELIABLE (ordered, maxRetransmits=8), LATENCY_FIRST
(unordered, maxRetransmits=4) and CONTROL (ordered, reliable; flow-control credits and track
announcements). ``send`` appends packets to the lane's outbox; one flusher task per lane packs
whatever has accumulated into frames (``_frames``: flush when idle or full) and writes them.

Backpressure. aiortc's ``send`` never blocks and its receiver buffers without bound, so:

* sending side: a flusher waits while the channel's ``bufferedAmount`` is above
  :data:`HIGH_WATER` (until ``bufferedamountlow``); ``send`` waits while the outbox holds more
  than :data:`OUTBOX_LIMIT` bytes. No lane drops here: a LATENCY_FIRST sender that outruns the
  link or the receiver waits too (it learns it is too fast instead of losing most of what it
  sends); LATENCY_FIRST still loses packets in the network (maxRetransmits=4);
* receiving side: every data lane uses credit-based flow control. A sender may have at most
  :data:`WINDOW` frames per lane (every frame waits for its credit, see ``_flush``) that the
  receiving *runtime* has not yet taken from ``inbound``; the receiver grants credits back on
  CONTROL as the runtime consumes batches. So a runtime that stops reading makes reliable
  senders wait and nothing is dropped for it. A LATENCY_FIRST batch the receiver drops (its
  inbound buffer over half full) is credited at once; credits throttle LATENCY_FIRST senders to
  what the receiver consumes, where before most of a fast stream was lost (W7: 100% delivered
  instead of 6-8%). The window also keeps bursts small: a burst of
  ~1 MB overflows the receiving UDP socket on loopback, aiortc then abandons RELIABLE frames
  (maxRetransmits=8) and its ordered stream can stall for seconds (measured here). Frames that
  never become a batch are credited on arrival: fragments completing no packet, and frames the
  RELIABLE channel lost (the lane is "in order or not at all"; the runtime's end-to-end resends
  recover). Lost frames show as a sequence gap; a loss at the tail of a burst has no later
  frame to reveal it, so a sender starved of credit for :data:`STALL_PROBE` seconds tells the
  receiver its next sequence on CONTROL, and the receiver writes off (and credits) the frames
  that never came;
* the inbound channel is bounded (:data:`INBOUND_BUFFER` batches, sized for the credit windows
  of many peers). LatencyFirst batches and media frames are only accepted while it is less than
  half full (else dropped and counted), so they can never crowd out reliable data. If reliable
  data still finds it full (more peers than it was sized for), that peer's link is closed with a
  logged error rather than dropping silently: the runtime's end-to-end acks and resends recover.

Media. Each link is created with pre-provisioned ``sendrecv`` transceivers (``media_slots``,
default one video and one audio), so ``publish_track`` never renegotiates: it announces
``(mid, track.id, kind)`` on CONTROL, then ``replaceTrack``\\ s the free slot's sender. The
receiver maps the transceiver's mid to the announced ``track_id`` and delivers decoded frames as
``InboundFrame`` (frames arriving before the announcement are dropped, like any late media).

Shutdown. Cancelling ``run`` cancels every link task; each closes its peer connection
(``pc.close()`` under a shielded, bounded scope) before the asyncio loop is closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import attrs
import trio
import trio_asyncio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import (
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy

from .._config import Config
from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT, RateLimiter
from ..errors import PeerNotAuthenticated, PeerUnavailable, ShuttingDown, TransportError
from . import _binding, _ice
from ._abc import Inbound, InboundFrame, InboundPackets, MediaSource, Relay, SignalingSession
from ._frames import (
    DEFAULT_MAX_FRAME_SIZE,
    PACKET_OVERHEAD,
    FrameDecoder,
    FrameEncoder,
    FrameError,
)

__all__ = ["WebRTCStatistics", "WebRTCTransport"]

log = logging.getLogger(TRANSPORT)

T = TypeVar("T")

#: Frames per SIGNAL/RELIABLE lane a sender may have in flight before the receiving runtime
#: consumed them (credit window).
WINDOW: Final = 8
#: Consumed frames the receiver collects before granting them back in one CONTROL message.
CREDIT_BATCH: Final = 4
#: Inbound batches buffered for the runtime. Reliable data never exceeds ``WINDOW`` frames per
#: lane and peer (2 * 8 per peer), so this is room for hundreds of busy peers; LatencyFirst and
#: media only ever fill half of it.
INBOUND_BUFFER: Final = 4096
#: Sender waits (reliable) or drops (LatencyFirst) while a channel buffers more than this.
HIGH_WATER: Final = 1 << 20
#: ... and resumes once aiortc's buffer drained below this (``bufferedAmountLowThreshold``).
LOW_WATER: Final = 1 << 18
#: Bytes of packets waiting in one lane's outbox before ``send`` waits (or LatencyFirst drops).
OUTBOX_LIMIT: Final = 1 << 20
#: Quiet scheduling rounds after which a lane counts as idle and is flushed (``_wait_idle``).
IDLE_ROUNDS: Final = 3
#: Scheduling rounds a flusher waits at most for a busy sender to fill a frame.
MAX_IDLE_ROUNDS: Final = 512
#: Seconds a sender waits for credit before probing the receiver (tail loss, see _flush).
STALL_PROBE: Final = 0.5
#: Seconds a link may take from first use to open data channels.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds ``pc.close()`` may take at link teardown (shielded).
CLOSE_GRACE: Final = 5.0

_DATA_LANES: Final = (Lane.SIGNAL, Lane.RELIABLE, Lane.LATENCY_FIRST)
_CREDITED: Final = (Lane.SIGNAL, Lane.RELIABLE, Lane.LATENCY_FIRST)

# CONTROL messages: b"C" lane:u8 frames:u32 (credit grant), b"T" kind:u8 mid\0track_id (track).
# b"P" lane:u8 next_sequence:u32 (a stalled sender's probe: frames before it are lost).
_CREDIT: Final = struct.Struct(">cBI")
# Frame header bytes, and bytes a packet costs in a frame beyond its own (record header; a
# little more for a fragment's total), for budgeting packets against credit.
_FRAME_OVERHEAD: Final = 5
_RECORD_COST: Final = 9
_PROBE: Final = struct.Struct(">cBI")
_TRACK_KINDS: Final = {"video": 1, "audio": 2}
_TRACK_KIND_NAMES: Final = {v: k for k, v in _TRACK_KINDS.items()}


class _Channel(enum.IntEnum):
    """Negotiated data-channel ids (both sides create them; nothing is announced in band)."""

    SIGNAL = 0
    RELIABLE = 1
    LATENCY_FIRST = 2
    CONTROL = 3


# (ordered, maxRetransmits) per channel, as docs/architecture.md names the lanes' reliability.
_CHANNEL_RELIABILITY: Final[dict[_Channel, tuple[bool, int | None]]] = {
    _Channel.SIGNAL: (True, None),
    _Channel.RELIABLE: (True, 8),
    _Channel.LATENCY_FIRST: (False, 4),
    _Channel.CONTROL: (True, None),
}

_CHANNEL_OF_LANE: Final = {
    Lane.SIGNAL: _Channel.SIGNAL,
    Lane.RELIABLE: _Channel.RELIABLE,
    Lane.LATENCY_FIRST: _Channel.LATENCY_FIRST,
}


@attrs.frozen
class WebRTCStatistics:
    """Counters of one WebRTC transport (a snapshot).

    Attributes:
        peers: links currently open or opening.
        links_opened: links that reached the open state since start.
        links_failed: links that failed to open or broke afterwards.
        links_forgotten: links dropped because the runtime saw the peer stop acknowledging.
        frames_sent / packets_sent: data-channel messages written and packets they carried.
        frames_received / packets_received: the same, inbound.
        dropped_latency_first: LatencyFirst packets dropped because the receiving runtime fell
            behind (its inbound buffer over half full).
        lost_packets: fragmented packets abandoned because a lossy lane dropped a frame.
        credit_waits: times a reliable sender waited for the receiver's runtime to consume.
        media_frames_received / media_frames_dropped: decoded media frames delivered / dropped.
        overflows: links closed because reliable data found the inbound buffer full.
        bindings_refused: offers and answers refused because their DTLS binding did not verify
            (``PeerNotAuthenticated``).
    """

    peers: int
    links_opened: int
    links_failed: int
    links_forgotten: int
    frames_sent: int
    packets_sent: int
    frames_received: int
    packets_received: int
    dropped_latency_first: int
    lost_packets: int
    credit_waits: int
    media_frames_received: int
    media_frames_dropped: int
    overflows: int
    bindings_refused: int


async def _aio(fn: Callable[[], Awaitable[T]]) -> T:
    """Run asyncio-flavoured ``fn()`` from Trio (typed wrapper around ``aio_as_trio``)."""
    result: T = await trio_asyncio.aio_as_trio(fn)()
    return result


def _stop_decoder_threads(pc: RTCPeerConnection) -> None:
    """Stop the codec threads of every receiver of ``pc`` now (idempotent, thread-safe).

    aiortc starts a non-daemon "audio-decoder"/"video-decoder" thread per receiving transceiver
    and joins it only in ``RTCRtpReceiver.stop()``, which ``pc.close()`` reaches after every
    sender has stopped. A sender whose RTP task never started (a link torn down before DTLS
    connected) makes ``close()`` wait until its bound runs out, and the thread then outlives the
    node and keeps the interpreter from exiting. ``_handle_disconnect`` (aiortc 1.16, pinned) is
    the receiver's own "stop the decoder" step: it queues the end marker and joins the thread.
    """
    for transceiver in pc.getTransceivers():
        transceiver.receiver._handle_disconnect()


class _Outbox:
    """Packets waiting for one lane's flusher; bounded in bytes (``send`` waits when full)."""

    def __init__(self) -> None:
        self.pending: deque[bytes] = deque()
        self.size = 0
        self.error: ShuttingDown | PeerUnavailable | None = None
        self._data = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()

    @property
    def full(self) -> bool:
        return self.size >= OUTBOX_LIMIT

    async def put(self, packets: Sequence[bytes]) -> None:
        while self.full and self.error is None:
            await self._room.park()
        if self.error is not None:
            raise type(self.error)(str(self.error))  # a fresh exception for every caller
        self.pending.extend(packets)
        self.size += sum(len(p) for p in packets)
        self._data.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_pending(self) -> None:
        while not self.pending:
            await self._data.park()

    def take(self, budget: int) -> list[bytes]:
        """Pop packets in order while their encoded size fits ``budget`` (always at least one)."""
        pending = self.pending
        packets = [pending.popleft()]
        used = len(packets[0]) + _RECORD_COST
        while pending and used + len(pending[0]) + _RECORD_COST <= budget:
            packet = pending.popleft()
            used += len(packet) + _RECORD_COST
            packets.append(packet)
        self.size -= sum(len(p) for p in packets)
        self._room.unpark_all()
        return packets

    def fail(self, error: ShuttingDown | PeerUnavailable) -> None:
        self.error = error
        self._room.unpark_all()


class _Link:
    """One peer connection and its per-lane state. Owned by its ``_run_link`` task."""

    def __init__(self, peer: ActrId, offerer: bool, max_frame_size: int, max_packet: int) -> None:
        self.peer = peer
        self.offerer = offerer
        self.pc: RTCPeerConnection | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channels: dict[_Channel, RTCDataChannel] = {}
        self.encoders = {lane: FrameEncoder(max_frame_size) for lane in _DATA_LANES}
        self.decoders = {lane: FrameDecoder(max_packet) for lane in _DATA_LANES}
        self.outboxes = {lane: _Outbox() for lane in _DATA_LANES}
        self.credits = dict.fromkeys(_CREDITED, WINDOW)
        self.credit_lot = {lane: trio.lowlevel.ParkingLot() for lane in _CREDITED}
        self.consumed = dict.fromkeys(_CREDITED, 0)
        self.drained = {lane: trio.lowlevel.ParkingLot() for lane in _DATA_LANES}
        self.track_names: dict[str, tuple[str, str]] = {}
        self.new_tracks_send, self.new_tracks_recv = trio.open_memory_channel[
            tuple[str, MediaStreamTrack]
        ](8)
        self.answer: str | None = None
        self.answered = trio.Event()
        self.ready = trio.Event()
        self.broken = trio.Event()
        self.failure: str | None = None
        # PeerNotAuthenticated once the peer's answer failed its binding (see ``refuse``).
        self.error_type: type[PeerUnavailable] = PeerUnavailable
        self.superseded = False
        self.open_channels = 0
        # Unparked on every state change the link task may wait for (open, answer, broken).
        self.wakeup = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        role = "offerer" if self.offerer else "answerer"
        return f"<_Link {self.peer} {role} ready={self.ready.is_set()} failure={self.failure!r}>"

    def break_(self, reason: str) -> None:
        """Ask the link task to close the connection (safe from aiortc callbacks)."""
        if self.failure is None:
            self.failure = reason
        self.broken.set()
        self.wakeup.unpark_all()

    def refuse(self, reason: str) -> None:
        """Fail the link because the peer did not prove its identity (its senders get
        ``PeerNotAuthenticated``)."""
        if self.failure is None:
            self.error_type = PeerNotAuthenticated
        self.break_(reason)

    def send_control(self, message: bytes, then: Callable[[], object] | None = None) -> None:
        """Write ``message`` on CONTROL, then call ``then``; from any Trio task.

        aiortc's ``send`` schedules asyncio work, which needs the loop's context: tasks outside
        ``run`` (the runtime reading ``inbound``, a ``publish_track`` caller) lack it, so the
        write is queued on the loop with ``call_soon`` (FIFO, so CONTROL stays ordered).
        """
        if self.loop is None:
            return

        def write() -> None:
            channel = self.channels.get(_Channel.CONTROL)
            if channel is not None and channel.readyState == "open" and not self.broken.is_set():
                channel.send(message)
                if then is not None:
                    then()

        self.loop.call_soon(write)


class _InboundChannel(trio.abc.ReceiveChannel[Inbound]):
    """``transport.inbound``: grants flow-control credits as the runtime takes batches."""

    def __init__(self, recv: trio.MemoryReceiveChannel[tuple[_Link | None, Inbound]]) -> None:
        self._recv = recv

    def __repr__(self) -> str:
        return f"<WebRTC inbound {self._recv.statistics().current_buffer_used} waiting>"

    async def receive(self) -> Inbound:
        link, item = await self._recv.receive()
        _consumed(link, item)
        return item

    def receive_nowait(self) -> Inbound:
        """Take one item without waiting (raises ``trio.WouldBlock`` when none waits)."""
        link, item = self._recv.receive_nowait()
        _consumed(link, item)
        return item

    def close(self) -> None:
        self._recv.close()

    async def aclose(self) -> None:
        self._recv.close()
        await trio.lowlevel.checkpoint()


def _consumed(link: _Link | None, item: Inbound) -> None:
    if link is not None and isinstance(item, InboundPackets) and item.lane in _CREDITED:
        _grant(link, item.lane, 1)


def _grant(link: _Link, lane: Lane, frames: int, *, now: bool = False) -> None:
    """Give ``frames`` credits back to the sender, batched by ``CREDIT_BATCH`` unless ``now``."""
    link.consumed[lane] += frames
    if link.consumed[lane] >= CREDIT_BATCH or (now and link.consumed[lane] > 0):
        grant, link.consumed[lane] = link.consumed[lane], 0
        link.send_control(_CREDIT.pack(b"C", int(lane), grant))


class WebRTCTransport:
    """The WebRTC implementation of ``Transport`` (see the module docstring).

    Args:
        config: ``ice_servers`` (none by default: nothing leaves the host), ``ice_addresses``
            (restrict host candidates, e.g. ``("127.0.0.1",)``) and ``max_payload`` (largest
            packet reassembled: ``max_payload + PACKET_OVERHEAD``) are used.
        connect_timeout: seconds a new link may take to open before ``PeerUnavailable``.
        max_frame_size: largest data-channel message written (see ``_frames``).
        media_slots: kinds of the pre-provisioned media transceivers of every link: how many
            tracks of each kind can be published to one peer. Empty: no media.
    """

    def __init__(
        self,
        config: Config,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        media_slots: tuple[str, ...] = ("video", "audio"),
    ) -> None:
        for kind in media_slots:
            if kind not in _TRACK_KINDS:
                raise ValueError(f"media_slots entry {kind!r} must be 'video' or 'audio'")
        FrameEncoder(max_frame_size)  # validates the size
        self._config = config
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        self._max_packet = config.max_payload + PACKET_OVERHEAD
        self._media_slots = media_slots
        self._session: SignalingSession | None = None
        self._local: ActrId | None = None
        self._closed = False
        self._links: dict[ActrId, _Link] = {}
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[tuple[_Link, str | None]](16)
        self._inbound_send, inbound_recv = trio.open_memory_channel[tuple[_Link | None, Inbound]](
            INBOUND_BUFFER
        )
        self._inbound = _InboundChannel(inbound_recv)
        self._links_opened = 0
        self._links_failed = 0
        self._links_forgotten = 0
        self._frames_sent = 0
        self._packets_sent = 0
        self._frames_received = 0
        self._packets_received = 0
        self._dropped_latency_first = 0
        self._credit_waits = 0
        self._media_received = 0
        self._media_dropped = 0
        self._overflows = 0
        self._bindings_refused = 0
        # A hostile relay could send a refused offer per message: one WARNING per peer per 10 s.
        self._rate = RateLimiter(trio.current_time)

    def __repr__(self) -> str:
        return f"<WebRTCTransport {self._local} peers={len(self._links)} closed={self._closed}>"

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        """What peers sent to this node; ends (EndOfChannel) when the transport closed."""
        return self._inbound

    def statistics(self) -> WebRTCStatistics:
        """A snapshot of this transport's counters."""
        lost = sum(d.lost for link in self._links.values() for d in link.decoders.values())
        return WebRTCStatistics(
            peers=len(self._links),
            links_opened=self._links_opened,
            links_failed=self._links_failed,
            links_forgotten=self._links_forgotten,
            frames_sent=self._frames_sent,
            packets_sent=self._packets_sent,
            frames_received=self._frames_received,
            packets_received=self._packets_received,
            dropped_latency_first=self._dropped_latency_first,
            lost_packets=lost,
            credit_waits=self._credit_waits,
            media_frames_received=self._media_received,
            media_frames_dropped=self._media_dropped,
            overflows=self._overflows,
            bindings_refused=self._bindings_refused,
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started()`` once ``send`` may be called.

        Cancellation: closes every peer connection (each ``pc.close()`` shielded and bounded by
        ``CLOSE_GRACE``), then the asyncio loop; ``inbound`` then ends.
        """
        if self._session is not None:
            raise RuntimeError(f"{self!r} was already run")
        self._session = session
        self._local = session.actr_id
        try:
            with _ice.hooked(), self._inbound_send, self._spawn_recv:
                async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_relays, session)
                    task_status.started()
                    async for link, offer in self._spawn_recv:
                        nursery.start_soon(self._run_link, link, offer)
        finally:
            self._closed = True
            for link in self._links.values():
                for outbox in link.outboxes.values():
                    outbox.fail(ShuttingDown("transport is closed"))
            self._links.clear()

    async def _serve_relays(self, session: SignalingSession) -> None:
        async for relay in session.relays:
            if relay.kind == "offer":
                try:
                    offer = self._open(session, relay, "offer")
                except PeerNotAuthenticated as exc:
                    # Not answered, and no link is replaced: a forged offer cannot even cut
                    # the link we have with the node it names.
                    self._refused(relay, exc)
                    continue
                await self._on_offer(relay.source, offer)
            elif relay.kind == "answer":
                link = self._links.get(relay.source)
                if link is not None and link.offerer and not link.answered.is_set():
                    try:
                        link.answer = self._open(session, relay, "answer")
                    except PeerNotAuthenticated as exc:
                        self._refused(relay, exc)
                        link.refuse(f"answer refused: {exc}")
                        continue
                    link.answered.set()
                    link.wakeup.unpark_all()
                else:
                    log.debug("stale answer from %s ignored", relay.source)
            # "ice": candidates travel inside the SDP (non-trickle), nothing to do.

    def _open(self, session: SignalingSession, relay: Relay, kind: _binding.Kind) -> str:
        """The relayed SDP once its binding verified (see ``_binding.open_description``)."""
        verified = _binding.open_description(
            relay.payload,
            kind=kind,
            source=relay.source,
            local=session.actr_id,
            issuer_key=session.issuer_key,
            now=time.time(),
        )
        return verified.sdp

    def _seal(self, session: SignalingSession, kind: _binding.Kind, peer: ActrId, sdp: str) -> str:
        """Our SDP for ``peer`` as a relay payload: with our credential and binding signature."""
        return _binding.seal_description(
            kind,
            sdp,
            signer=session.actr_id,
            peer=peer,
            credential=session.credential,
            sign=session.node_key.sign,
        )

    def _refused(self, relay: Relay, error: PeerNotAuthenticated) -> None:
        self._bindings_refused += 1
        self._rate.log(
            log,
            logging.WARNING,
            (relay.source, "binding"),
            "refused the %s relayed as from %s: %s; no link",
            relay.kind,
            relay.source,
            error,
        )

    async def _on_offer(self, peer: ActrId, sdp: str) -> None:
        assert self._local is not None
        current = self._links.get(peer)
        if current is not None and current.offerer and not current.ready.is_set():
            if self._local < peer:
                log.debug("glare with %s: we stay the offerer", peer)
                return
            log.debug("glare with %s: dropping our offer, answering theirs", peer)
        if current is not None:
            current.superseded = True
            current.break_("superseded by a new offer from the peer")
        link = _Link(peer, False, self._max_frame_size, self._max_packet)
        self._links[peer] = link
        await self._spawn_send.send((link, sdp))

    # ------------------------------------------------------------------ sending

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        """Send ``packets`` to ``peer`` on ``lane``, opening the link on first use.

        Returns once the packets are queued for the lane's flusher (in order). LatencyFirst
        packets are dropped (and counted) when the lane is congested.

        Raises:
            PeerUnavailable: the peer is unknown to signaling, or the link failed or did not
                open within ``connect_timeout``.
            ShuttingDown: the transport is closed.
        """
        if lane not in _CHANNEL_OF_LANE:
            raise ValueError(f"lane={lane!r} is not a data lane (use publish_track for media)")
        link = await self._link_for(peer)
        await link.outboxes[lane].put(packets)

    def forget(self, peer: ActrId) -> None:
        """Drop the link to ``peer`` (the runtime saw it stop acknowledging: it may have
        restarted behind a connection that still looks alive until ICE consent fails, ~30 s;
        or it said goodbye).

        The next ``send`` offers a new link through signaling, which reaches the restarted
        node; senders waiting on the old link move to the new one.
        """
        link = self._links.pop(peer, None)
        if link is not None:
            self._links_forgotten += 1
            link.superseded = True
            link.break_("forgotten: the peer stopped acknowledging or said goodbye")

    async def _link_for(self, peer: ActrId) -> _Link:
        while True:
            if self._closed or self._local is None:
                raise ShuttingDown("transport is closed")
            link = self._links.get(peer)
            if link is None:
                link = _Link(peer, True, self._max_frame_size, self._max_packet)
                self._links[peer] = link
                try:
                    await self._spawn_send.send((link, None))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    raise ShuttingDown("transport is closed") from None
            if not link.ready.is_set():
                await link.ready.wait()
            if link.failure is None:
                return link
            if not link.superseded:
                raise link.error_type(f"{peer}: {link.failure}")

    async def _flush(self, link: _Link, lane: Lane) -> None:
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
        channel = link.channels[_CHANNEL_OF_LANE[lane]]
        drained = link.drained[lane]
        credited = lane in _CREDITED
        payload_per_frame = self._max_frame_size - _FRAME_OVERHEAD
        while True:
            await outbox.wait_pending()
            await self._wait_idle(outbox)
            if credited:
                await self._wait_credit(link, lane, encoder)
            while channel.bufferedAmount > HIGH_WATER:
                await drained.park()
            if credited:
                budget = link.credits[lane] * payload_per_frame
            else:
                budget = max(HIGH_WATER - channel.bufferedAmount, payload_per_frame)
            packets = outbox.take(budget)
            for frame in encoder.encode(packets):
                if credited:
                    await self._wait_credit(link, lane, encoder)
                    link.credits[lane] -= 1
                channel.send(frame)
                self._frames_sent += 1
            self._packets_sent += len(packets)

    async def _wait_credit(self, link: _Link, lane: Lane, encoder: FrameEncoder) -> None:
        """Return once ``lane`` has credit; probe the receiver while starved."""
        if link.credits[lane] > 0:
            return
        self._credit_waits += 1
        while link.credits[lane] <= 0:
            with trio.move_on_after(STALL_PROBE):
                await link.credit_lot[lane].park()
                continue
            # No credit for a while: frames may have been lost at the tail of a burst (no
            # later frame reveals the gap). Tell the receiver where we are.
            link.send_control(_PROBE.pack(b"P", int(lane), encoder.next_sequence))

    async def _wait_idle(self, outbox: _Outbox) -> None:
        """Let busy senders fill the frame: return once ``IDLE_ROUNDS`` rounds added nothing.

        Flush when idle or full (issue 3 §6): a sender that is still producing adds packets
        every scheduling round or two (Trio may run it before or after us within a round, hence
        several quiet rounds in a row before calling the lane idle); a lone packet (ping-pong)
        costs those few rounds. Bounded by a frame's worth of bytes and ``MAX_IDLE_ROUNDS``.
        """
        quiet = 0
        for _ in range(MAX_IDLE_ROUNDS):
            if outbox.size >= self._max_frame_size:
                return
            before = len(outbox.pending)
            await trio.lowlevel.cancel_shielded_checkpoint()
            if len(outbox.pending) == before:
                quiet += 1
                if quiet >= IDLE_ROUNDS:
                    return
            else:
                quiet = 0

    # ------------------------------------------------------------------ media

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        """Start sending ``track`` (an aiortc ``MediaStreamTrack``) to ``peer``.

        Uses a free pre-provisioned transceiver of the track's kind (no renegotiation) after
        announcing ``track.id`` for it on CONTROL.

        Raises:
            TypeError: ``track`` is not an aiortc ``MediaStreamTrack``.
            TransportError: every media slot of that kind is in use on this link.
            PeerUnavailable / ShuttingDown: as for :meth:`send`.
        """
        if not isinstance(track, MediaStreamTrack):
            raise TypeError(f"{track!r} is not an aiortc MediaStreamTrack")
        link = await self._link_for(peer)
        assert link.pc is not None
        slot = self._free_slot(link.pc, track.kind)
        if slot is None or slot.mid is None:
            raise TransportError(
                f"no free {track.kind} slot to {peer} (media_slots={self._media_slots})"
            )
        announce = b"T" + bytes([_TRACK_KINDS[track.kind]]) + f"{slot.mid}\0{track.id}".encode()
        sender = slot.sender
        link.send_control(announce, then=lambda: sender.replaceTrack(track))
        await trio.lowlevel.checkpoint()

    @staticmethod
    def _free_slot(pc: RTCPeerConnection, kind: str) -> RTCRtpTransceiver | None:
        for transceiver in pc.getTransceivers():
            # aiortc annotates sender.track as never None, but a slot without a track has None.
            current: MediaStreamTrack | None = transceiver.sender.track
            if (
                transceiver.kind == kind
                and current is None
                and transceiver.currentDirection in ("sendrecv", "sendonly")
            ):
                return transceiver
        return None

    async def _receive_track(self, link: _Link, mid: str, track: MediaStreamTrack) -> None:
        sequence = 0
        while True:
            try:
                frame = await _aio(track.recv)
            except MediaStreamError:
                return
            name = link.track_names.get(mid)
            if name is None:
                self._media_dropped += 1
                continue
            track_id, kind = name
            sequence += 1
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
            if not self._offer_lossy((None, item)):
                self._media_dropped += 1
            else:
                self._media_received += 1

    def _offer_lossy(self, entry: tuple[_Link | None, Inbound]) -> bool:
        """Put a droppable item on inbound while it is less than half full."""
        stats = self._inbound_send.statistics()
        if stats.current_buffer_used * 2 >= stats.max_buffer_size:
            return False
        try:
            self._inbound_send.send_nowait(entry)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    # ------------------------------------------------------------------ links

    async def _run_link(self, link: _Link, offer: str | None) -> None:
        """Open, serve and close one link (the link task; see the module docstring)."""
        assert self._session is not None
        try:
            with trio.move_on_after(self._connect_timeout) as connecting:
                await self._negotiate(self._session, link, offer)
                while link.open_channels < len(_Channel) and not link.broken.is_set():
                    await link.wakeup.park()
            if connecting.cancelled_caught:
                link.break_(f"did not connect within {self._connect_timeout} s")
            if not link.broken.is_set():
                self._links_opened += 1
                link.ready.set()
                log.info(
                    "linked to %s over WebRTC (%s)",
                    link.peer,
                    "we offered" if link.offerer else "it offered",
                )
                async with trio.open_nursery() as nursery:
                    for lane in _DATA_LANES:
                        nursery.start_soon(self._flush, link, lane)
                    nursery.start_soon(self._accept_tracks, link, nursery)
                    await link.broken.wait()
                    nursery.cancel_scope.cancel(reason="link closed")
        except PeerUnavailable as exc:
            link.break_(str(exc))
        except (
            TransportError,
            InternalError,
            InvalidAccessError,
            InvalidStateError,
            OperationError,
            ValueError,
            ConnectionError,
        ) as exc:
            # aiortc's errors on a bad or unexpected SDP, or a socket error: the link failed.
            log.warning("link to %s failed: %r", link.peer, exc)
            link.break_(f"link failed: {exc!r}")
        finally:
            if link.failure is None:
                link.break_("transport closed")
            if not link.superseded and not self._closed:
                self._links_failed += 1
            if self._links.get(link.peer) is link:
                del self._links[link.peer]
            error: ShuttingDown | PeerUnavailable = (
                ShuttingDown("transport is closed")
                if self._closed
                else link.error_type(f"{link.peer}: {link.failure}")
            )
            for outbox in link.outboxes.values():
                outbox.fail(error)
            link.ready.set()
            link.new_tracks_send.close()
            if link.pc is not None:
                _stop_decoder_threads(link.pc)
                with trio.move_on_after(CLOSE_GRACE, shield=True):
                    await _aio(link.pc.close)
                # setRemoteDescription may have started a receiver after the first stop.
                _stop_decoder_threads(link.pc)
            # A link that closes while we run is news (the peer left or the path broke); our
            # own shutdown closing every link is not.
            quiet = self._closed or link.superseded or link.failure == "transport closed"
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "link to %s closed: %s",
                link.peer,
                link.failure,
            )

    async def _accept_tracks(self, link: _Link, nursery: trio.Nursery) -> None:
        async for mid, track in link.new_tracks_recv:
            nursery.start_soon(self._receive_track, link, mid, track)

    async def _negotiate(self, session: SignalingSession, link: _Link, offer: str | None) -> None:
        servers = [RTCIceServer(url) for url in self._config.ice_servers]
        configuration = RTCConfiguration(
            iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        with _ice.host_addresses(self._config.ice_addresses):
            if offer is None:
                local = await _aio(lambda: self._aio_offer(configuration, link))
                await session.send_relay(
                    link.peer, "offer", self._seal(session, "offer", link.peer, local)
                )
                while not link.answered.is_set() and not link.broken.is_set():
                    await link.wakeup.park()
                if link.answer is None:
                    return
                answer = link.answer
                await _aio(lambda: self._aio_accept_answer(link, answer))
            else:
                local = await _aio(lambda: self._aio_answer(configuration, link, offer))
                await session.send_relay(
                    link.peer, "answer", self._seal(session, "answer", link.peer, local)
                )

    # The _aio_* coroutines run on the asyncio loop (called through _aio). Everything they
    # register on aiortc's emitters only hands data to Trio.

    def _aio_setup(self, configuration: RTCConfiguration, link: _Link) -> RTCPeerConnection:
        pc = RTCPeerConnection(configuration)
        link.pc = pc
        link.loop = asyncio.get_running_loop()
        # Transceivers before the data channels: with MAX_BUNDLE aiortc then bundles the SCTP
        # transport onto the first transceiver's from the start. The other order makes
        # setRemoteDescription "unbundle" the SCTP transport by stopping the shared transport.
        for kind in self._media_slots:
            pc.addTransceiver(kind, direction="sendrecv")
        for which in _Channel:
            ordered, max_retransmits = _CHANNEL_RELIABILITY[which]
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

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                link.break_(f"connection {pc.connectionState}")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track and transceiver.mid is not None:
                    try:
                        link.new_tracks_send.send_nowait((transceiver.mid, track))
                    except (trio.WouldBlock, trio.ClosedResourceError):
                        log.warning("track from %s not received: no room", link.peer)

        return pc

    def _watch_channel(self, link: _Link, which: _Channel, channel: RTCDataChannel) -> None:
        @channel.on("open")
        def on_open() -> None:
            link.open_channels += 1
            link.wakeup.unpark_all()

        @channel.on("close")
        def on_close() -> None:
            link.break_(f"data channel {which.name} closed")

        if which is _Channel.CONTROL:

            @channel.on("message")
            def on_control(message: bytes | str) -> None:
                self._on_control(link, message)

            return
        lane = _lane_of_channel(which)
        decoder = link.decoders[lane]
        drained = link.drained[lane]

        @channel.on("bufferedamountlow")
        def on_low() -> None:
            drained.unpark_all()

        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            if isinstance(message, str) or link.broken.is_set():
                return
            skipped = decoder.skipped_frames
            try:
                packets = decoder.feed(message)
            except FrameError as exc:
                log.error("malformed frame from %s on %s: %s", link.peer, lane.name, exc)
                link.break_(f"malformed frame: {exc}")
                return
            self._frames_received += 1
            if lane in _CREDITED:
                # Credits count frames: those that never reach the runtime as a batch (lost
                # on the lossy lane, or a fragment that completes no packet) come back now.
                unbatched = decoder.skipped_frames - skipped + (0 if packets else 1)
                if unbatched:
                    _grant(link, lane, unbatched)
            if not packets:
                return
            self._packets_received += len(packets)
            entry = (link, InboundPackets(link.peer, lane, packets))
            if lane is Lane.LATENCY_FIRST:
                if not self._offer_lossy(entry):
                    self._dropped_latency_first += len(packets)
                    _grant(link, lane, 1)  # never reaches the runtime: its credit comes back now
                return
            try:
                self._inbound_send.send_nowait(entry)
            except trio.WouldBlock:
                self._overflows += 1
                log.error(
                    "inbound buffer full (%d batches) for %s data from %s: closing the link; "
                    "end-to-end resends will recover",
                    INBOUND_BUFFER,
                    lane.name,
                    link.peer,
                )
                link.break_("inbound buffer overflow")
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                link.break_("transport closed")

    def _on_control(self, link: _Link, message: bytes | str) -> None:
        if isinstance(message, str) or not message:
            return
        if message[:1] == b"C" and len(message) == _CREDIT.size:
            _, lane_value, grant = _CREDIT.unpack(message)
            try:
                lane = Lane(lane_value)
            except ValueError:
                lane = Lane.MEDIA_TRACK
            if lane in _CREDITED:
                link.credits[lane] += grant
                link.credit_lot[lane].unpark_all()
                return
        elif message[:1] == b"P" and len(message) == _PROBE.size:
            _, lane_value, sequence = _PROBE.unpack(message)
            if lane_value in (int(Lane.SIGNAL), int(Lane.RELIABLE), int(Lane.LATENCY_FIRST)):
                lane = Lane(lane_value)
                written_off = link.decoders[lane].skip_to(sequence)
                _grant(link, lane, written_off, now=True)
                return
        elif message[:1] == b"T" and len(message) > 2:
            kind = _TRACK_KIND_NAMES.get(message[1])
            mid, sep, track_id = message[2:].decode("utf-8", "replace").partition("\0")
            if kind is not None and sep:
                link.track_names[mid] = (track_id, kind)
                return
        log.warning("ignoring malformed control message from %s", link.peer)

    async def _aio_offer(self, configuration: RTCConfiguration, link: _Link) -> str:
        pc = self._aio_setup(configuration, link)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    async def _aio_accept_answer(self, link: _Link, answer: str) -> None:
        assert link.pc is not None
        await link.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def _aio_answer(self, configuration: RTCConfiguration, link: _Link, offer: str) -> str:
        pc = self._aio_setup(configuration, link)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp


def _lane_of_channel(which: _Channel) -> Lane:
    for lane, channel in _CHANNEL_OF_LANE.items():
        if channel is which:
            return lane
    raise AssertionError(which)
