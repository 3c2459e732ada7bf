"""WebRTC transport: aiortc on a native asyncio loop in its own thread, driven from Trio.

aiortc runs on one asyncio event loop per transport, on a thread of its own; everything else is
Trio. The only module of actr_trio that runs asyncio code is ``_webrtc_aio`` (the loop thread,
the batched crossings between the two sides, and each link's ``RTCPeerConnection``; ``_ice``
bends aioice's address gathering). The Trio side is split by component: this module (the
transport: links table, ``send``, ``publish_track``, statistics), ``_webrtc_relays`` (offers,
answers, refusals from signaling; admission), ``_webrtc_linktask`` (a link's life: negotiate,
serve, close), ``_webrtc_link`` (a link's state: outboxes, credits, decoders, the CONTROL
messages, the counters), ``_webrtc_recv`` (what the asyncio side reports: decoding, credit,
inbound), ``_webrtc_send`` (a lane's flusher: outbox to frames, within credit),
``_webrtc_ports`` (the asyncio side's lifecycle: started on first need, stopped with ``run``).
The admission policy is sans-IO, in ``_admission``.

Threads. Neither aiortc nor the loop thread is there before a link needs them (``_webrtc_ports``):
the first link (a ``send`` or ``publish_track`` that opens one, or an offer received) imports
aiortc, on a worker thread, and starts the loop; links that need it meanwhile wait for that one
start. A node that never links over WebRTC never imports aiortc. When ``run`` ends (cancelled
or not) every link is closed first, then, if the loop was started, its remaining tasks are
cancelled, the codec threads of any connection left are stopped, the loop is closed and the
thread joined. The two sides exchange
batches, never one crossing per frame: frames a flusher writes cross as one call, and the
messages aiortc delivers in one loop iteration reach Trio as one callback (``_webrtc_aio``).
aiortc callbacks do nothing but report to Trio.

Links. One ``RTCPeerConnection`` per remote node, opened by the first ``send``/``publish_track``
(offer relayed through signaling once ICE gathering finished: no trickle) and reused. When both
sides offer at once (glare) the lower ``ActrId`` stays the offerer; the higher one drops its own
attempt and answers. A link that fails, closes, or does not connect within ``connect_timeout``
is dropped from the table (the next ``send`` opens a new one) and its senders get
``PeerUnavailable``. A fresh offer from a peer we are linked to replaces the link (the peer lost
its end, e.g. it restarted).

Admission. Offers are admitted, not just accepted (``_admission``): before anything is decoded,
an offer is checked against ``max_relay_payload``, the sender's offer rate
(``offers_per_peer_rate``/``offers_per_peer_burst``), the node's (``offers_total_rate``), and
the caps on links being negotiated (``max_negotiating_links``) and held (``max_links``, which
also bounds the links this node opens itself: ``LinkRefused``). An offer that fails is refused,
never queued: the node sends a "refuse" relay naming the reason (paced: a flood gets few), so
the offerer's senders fail at once with ``LinkRefused`` instead of at ``connect_timeout``.
Admission never closes a link: a flood of offers costs existing links nothing, and a peer that
holds a link may always offer again (it restarted). Refusals are logged at WARNING, once per
reason per 10 s with the count of the lines suppressed, and counted in ``statistics()``.

Binding. Every offer and answer travels sealed (``_binding``): the SDP with our credential and
our node key's signature over its DTLS fingerprints. A received one is opened (verified) after
admission and before any aiortc work: an offer that does not verify is not answered and
replaces no link; an answer that does not verify fails the link with ``PeerNotAuthenticated``.
Both are logged at WARNING (rate-limited per peer). aiortc then holds the DTLS handshake to the
verified fingerprints, so the peer at the other end of an open link is the node its credential
names.

Containment. Any exception on a link (an aiortc callback, its negotiation, a flusher, a track
reader, an aiortc task whose object belongs to the link) closes that link and is logged at
WARNING (rate-limited) and counted; it never reaches the transport's nursery. The asyncio
loop's exception handler attributes what aiortc's own tasks raise to the link they belong to
(``_webrtc_aio.Ports``), and the Trio side closes it (``_webrtc_recv``).

Lanes. Four *negotiated* data channels with fixed ids, so neither side announces anything in
band: SIGNAL (ordered, fully reliable), RELIABLE (ordered, maxRetransmits=8), LATENCY_FIRST
(unordered, maxRetransmits=4) and CONTROL (ordered, reliable; flow-control credits and track
announcements). ``send`` appends packets to the lane's outbox; one flusher task per lane packs
whatever has accumulated into frames (``_frames``: flush when idle or full) and writes them
(``_webrtc_send.flush``).

Backpressure. aiortc's ``send`` never blocks and its receiver buffers without bound, so:

* sending side: a flusher waits while the channel's ``bufferedAmount`` is above
  :data:`HIGH_WATER` (until ``bufferedamountlow``); ``send`` waits while the outbox holds more
  than :data:`OUTBOX_LIMIT` bytes. No lane drops here: a LATENCY_FIRST sender that outruns the
  link or the receiver waits too (it learns it is too fast instead of losing most of what it
  sends); LATENCY_FIRST still loses packets in the network (maxRetransmits=4);
* receiving side: every data lane uses credit-based flow control. A sender may have at most
  :data:`WINDOW` frames per lane (every frame waits for its credit, see ``flush``) that the
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
  logged warning rather than dropping silently: the runtime's end-to-end acks and resends
  recover.

Malformed input (a frame that does not decode, a bad CONTROL message) is logged at WARNING,
once per peer per 10 s with the count of lines suppressed meanwhile, and counted.

Media. Each link is created with pre-provisioned ``sendrecv`` transceivers (``media_slots``,
default one video and one audio), so ``publish_track`` never renegotiates: it announces
``(mid, track.id, kind)`` on CONTROL, then ``replaceTrack``\\ s the free slot's sender. The
receiver maps the transceiver's mid to the announced ``track_id`` and delivers decoded frames as
``InboundFrame`` (frames arriving before the announcement are dropped, like any late media).

Shutdown. Cancelling ``run`` cancels every link task; each closes its peer connection
(``pc.close()`` under a shielded, bounded scope) before the asyncio loop (if it was started)
is stopped and its thread joined: no thread of the transport (the loop's, aiortc's codec threads, the loop's
executor) outlives ``run``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from .._config import Config
from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT
from ..errors import LinkRefused, ShuttingDown
from ._abc import Inbound, MediaSource, SignalingSession
from ._admission import Admission, AdmissionStatistics
from ._frames import DEFAULT_MAX_FRAME_SIZE, PACKET_OVERHEAD, FrameEncoder
from ._inbound import InboundChannel
from ._webrtc_link import (
    CHANNEL_OF_LANE,
    INBOUND_BUFFER,
    TRACK_KINDS,
    Counters,
    Link,
)
from ._webrtc_linktask import CLOSE_GRACE, LinkTasks
from ._webrtc_ports import Ports
from ._webrtc_recv import Receiver
from ._webrtc_relays import RelayHandler

__all__ = ["CLOSE_GRACE", "CONNECT_TIMEOUT", "WebRTCStatistics", "WebRTCTransport"]

log = logging.getLogger(TRANSPORT)

#: Seconds a link may take from first use to open data channels.
CONNECT_TIMEOUT = 10.0


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
        malformed: malformed frames and CONTROL messages received.
        link_errors: links closed by an exception raised on them (aiortc or ours).
        asyncio_errors: errors the asyncio loop reported (its exception handler).
        admission: offers admitted and refused, by reason, and the links counted against the
            caps (see ``_admission``).
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
    malformed: int
    link_errors: int
    asyncio_errors: int
    admission: AdmissionStatistics


class WebRTCTransport:
    """The WebRTC implementation of ``Transport`` (see the module docstring).

    Args:
        config: ``ice_servers`` (none by default: nothing leaves the host), ``ice_addresses``
            (restrict host candidates, e.g. ``("127.0.0.1",)``), ``max_payload`` (largest
            packet reassembled: ``max_payload + PACKET_OVERHEAD``) and the admission limits
            (``max_links``, ``max_negotiating_links``, ``offers_per_peer_rate``,
            ``offers_per_peer_burst``, ``offers_total_rate``, ``max_relay_payload``) are used.
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
            if kind not in TRACK_KINDS:
                raise ValueError(f"media_slots entry {kind!r} must be 'video' or 'audio'")
        FrameEncoder(max_frame_size)  # validates the size
        for address in config.ice_addresses:
            # Checked here, not when the first link gathers: raises ValueError naming it.
            ipaddress.ip_address(address)
        self._config = config
        self._max_frame_size = max_frame_size
        self._max_packet = config.max_payload + PACKET_OVERHEAD
        self._media_slots = media_slots
        self._session: SignalingSession | None = None
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._links: dict[ActrId, Link] = {}
        self._inbound_send, inbound_recv = trio.open_memory_channel[tuple[Link | None, Inbound]](
            INBOUND_BUFFER
        )
        self._inbound = InboundChannel(inbound_recv, "WebRTC")
        self._counters = Counters()
        self._receiver = Receiver(self._counters, self._inbound_send)
        self._receiver.max_tracks = config.max_tracks_per_peer
        self._ports = Ports(
            self._receiver, media_slots, tuple(config.ice_servers), tuple(config.ice_addresses)
        )
        self._admission = Admission(
            max_links=config.max_links,
            max_negotiating=config.max_negotiating_links,
            peer_rate=config.offers_per_peer_rate,
            peer_burst=config.offers_per_peer_burst,
            total_rate=config.offers_total_rate,
            max_payload=config.max_relay_payload,
            now=time.monotonic(),
        )
        # A hostile relay could send a refused offer per message: one WARNING per key per 10 s.
        self._rate = self._receiver.rate
        self._relays = RelayHandler(
            config,
            links=self._links,
            admission=self._admission,
            counters=self._counters,
            rate=self._rate,
            new_link=self._answer_link,
        )
        self._tasks = LinkTasks(
            links=self._links,
            admission=self._admission,
            counters=self._counters,
            receiver=self._receiver,
            ports=self._ports,
            connect_timeout=connect_timeout,
            max_frame_size=max_frame_size,
            closed=lambda: self._closed,
        )

    def __repr__(self) -> str:
        local = None if self._session is None else self._session.actr_id
        return f"<WebRTCTransport {local} peers={len(self._links)} closed={self._closed}>"

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        """What peers sent to this node; ends (EndOfChannel) when the transport closed."""
        return self._inbound

    def statistics(self) -> WebRTCStatistics:
        """A snapshot of this transport's counters."""
        lost = sum(d.lost for link in self._links.values() for d in link.decoders.values())
        c = self._counters
        return WebRTCStatistics(
            peers=len(self._links),
            links_opened=c.links_opened,
            links_failed=c.links_failed,
            links_forgotten=c.links_forgotten,
            frames_sent=c.frames_sent,
            packets_sent=c.packets_sent,
            frames_received=c.frames_received,
            packets_received=c.packets_received,
            dropped_latency_first=c.dropped_latency_first,
            lost_packets=lost,
            credit_waits=c.credit_waits,
            media_frames_received=c.media_received,
            media_frames_dropped=c.media_dropped,
            overflows=c.overflows,
            bindings_refused=c.bindings_refused,
            malformed=c.malformed,
            link_errors=c.link_errors,
            asyncio_errors=c.asyncio_errors,
            admission=self._admission.statistics(),
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
        ``CLOSE_GRACE``), then stops the asyncio loop and joins its thread; ``inbound`` then
        ends.
        """
        if self._session is not None:
            raise RuntimeError(f"{self!r} was already run")
        self._session = session
        try:
            with self._inbound_send, self._relays.refusal_recv:
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        nursery.start_soon(self._relays.serve, session)
                        nursery.start_soon(self._relays.send_refusals, session)
                        task_status.started()
                        await trio.sleep_forever()
                finally:
                    # Every link task ended: no new one, and no loop starts any more.
                    self._nursery = None
                    with trio.CancelScope(shield=True):
                        await self._ports.stop()
        finally:
            self._closed = True
            self._nursery = None
            for link in self._links.values():
                for outbox in link.outboxes.values():
                    outbox.fail(ShuttingDown("transport is closed"))
            self._links.clear()

    def _start_link(self, link: Link, offer: str | None) -> None:
        assert self._nursery is not None
        assert self._session is not None
        self._links[link.peer] = link
        self._admission.link_started()
        self._nursery.start_soon(self._tasks.run_link, self._session, link, offer)

    def _answer_link(self, peer: ActrId, offer: str) -> None:
        self._start_link(Link(peer, False, self._max_frame_size, self._max_packet), offer)

    # ------------------------------------------------------------------ sending

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        """Send ``packets`` to ``peer`` on ``lane``, opening the link on first use.

        Returns once the packets are queued for the lane's flusher (in order). LatencyFirst
        packets are dropped (and counted) when the lane is congested.

        Raises:
            PeerUnavailable: the peer is unknown to signaling, or the link failed or did not
                open within ``connect_timeout``; ``LinkRefused`` when the peer refused it, or
                this node holds ``max_links`` links already.
            ShuttingDown: the transport is closed.
        """
        if lane not in CHANNEL_OF_LANE:
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
            self._counters.links_forgotten += 1
            link.superseded = True
            link.break_("forgotten: the peer stopped acknowledging or said goodbye")

    async def _link_for(self, peer: ActrId) -> Link:
        while True:
            if self._closed or self._nursery is None:
                raise ShuttingDown("transport is closed")
            link = self._links.get(peer)
            if link is None:
                refusal = self._admission.check_outbound()
                if refusal is not None:
                    raise LinkRefused(f"{peer}: not linked: {refusal.message}", refusal.code)
                link = Link(peer, True, self._max_frame_size, self._max_packet)
                self._start_link(link, None)
            if not link.ready.is_set():
                await link.ready.wait()
            if link.failure is None:
                return link
            if not link.superseded:
                raise link.error()

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
        # A track is an aiortc object: whoever made one imported aiortc already.
        from ._webrtc_aio import is_media_track

        if not is_media_track(track):
            raise TypeError(f"{track!r} is not an aiortc MediaStreamTrack")
        link = await self._link_for(peer)
        port, thread = link.port, self._ports.thread
        assert port is not None
        assert thread is not None
        await thread.run(partial(port.publish, track))
