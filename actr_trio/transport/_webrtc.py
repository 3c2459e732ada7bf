"""WebRTC transport: aiortc peer connections driven from Trio through trio-asyncio.

The only modules of actr_trio that import asyncio, aiortc or trio_asyncio are this one and its
parts: ``_webrtc_link`` (a link's state: outboxes, credits, decoders, the CONTROL messages, the
counters), ``_webrtc_peer`` (creating a peer connection, its callbacks, and keeping aiortc's
errors inside the link they concern), ``_webrtc_send`` (a lane's flusher: outbox to frames,
within credit). The admission policy is sans-IO, in ``_admission``.
``run`` opens one asyncio loop (``trio_asyncio.open_loop``) and owns every peer connection;
aiortc callbacks do nothing but hand data to Trio (set an event, ``send_nowait`` on a bounded
channel).

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
loop's exception handler is replaced, since trio-asyncio's default one re-raises into the
loop's nursery (see ``_webrtc_peer``).

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
(``pc.close()`` under a shielded, bounded scope) before the asyncio loop is closed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

import attrs
import trio
import trio_asyncio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy

from .._config import Config
from .._ids import ActrId
from .._lanes import Lane
from .._logging import TRANSPORT
from ..errors import (
    LinkRefused,
    PeerNotAuthenticated,
    PeerUnavailable,
    ShuttingDown,
    TransportError,
)
from . import _binding, _ice
from ._abc import Inbound, InboundFrame, MediaSource, Relay, SignalingSession
from ._admission import Admission, AdmissionStatistics, Refusal, decode_refusal, encode_refusal
from ._frames import DEFAULT_MAX_FRAME_SIZE, PACKET_OVERHEAD, FrameEncoder
from ._webrtc_link import (
    CHANNEL_OF_LANE,
    DATA_LANES,
    INBOUND_BUFFER,
    TRACK_KINDS,
    Channel,
    Counters,
    InboundChannel,
    Link,
    aio,
    stop_decoder_threads,
)
from ._webrtc_peer import PeerConnections
from ._webrtc_send import flush

__all__ = ["WebRTCStatistics", "WebRTCTransport"]

log = logging.getLogger(TRANSPORT)

#: Seconds a link may take from first use to open data channels.
CONNECT_TIMEOUT: Final = 10.0
#: Seconds ``pc.close()`` may take at link teardown (shielded).
CLOSE_GRACE: Final = 5.0
#: Refusals waiting to be relayed; beyond it a refusal is not sent (the offerer times out).
REFUSAL_QUEUE: Final = 16


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
        self._config = config
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        self._max_packet = config.max_payload + PACKET_OVERHEAD
        self._media_slots = media_slots
        self._session: SignalingSession | None = None
        self._local: ActrId | None = None
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._links: dict[ActrId, Link] = {}
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[tuple[Link, str | None]](16)
        self._refusal_send, self._refusal_recv = trio.open_memory_channel[tuple[ActrId, str]](
            REFUSAL_QUEUE
        )
        self._inbound_send, inbound_recv = trio.open_memory_channel[tuple[Link | None, Inbound]](
            INBOUND_BUFFER
        )
        self._inbound = InboundChannel(inbound_recv)
        self._counters = Counters()
        self._peers = PeerConnections(
            self._counters, self._inbound_send, media_slots, lambda: list(self._links.values())
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
        self._rate = self._peers.rate

    def __repr__(self) -> str:
        return f"<WebRTCTransport {self._local} peers={len(self._links)} closed={self._closed}>"

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
        ``CLOSE_GRACE``), then the asyncio loop; ``inbound`` then ends.
        """
        if self._session is not None:
            raise RuntimeError(f"{self!r} was already run")
        self._session = session
        self._local = session.actr_id
        try:
            with _ice.hooked(), self._inbound_send, self._spawn_recv, self._refusal_recv:
                async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
                    # trio-asyncio's default handler re-raises into the loop's nursery.
                    loop.set_exception_handler(self._peers.on_asyncio_error)
                    self._nursery = nursery
                    nursery.start_soon(self._serve_relays, session)
                    nursery.start_soon(self._send_refusals, session)
                    task_status.started()
                    async for link, offer in self._spawn_recv:
                        nursery.start_soon(self._run_link, link, offer)
        finally:
            self._closed = True
            self._nursery = None
            for link in self._links.values():
                for outbox in link.outboxes.values():
                    outbox.fail(ShuttingDown("transport is closed"))
            self._links.clear()

    # ------------------------------------------------------------------ relays and admission

    async def _serve_relays(self, session: SignalingSession) -> None:
        """Handle what signaling relays to us. Never waits on anything but the next relay: a
        flood of relays is refused at the rate it arrives, so signaling never sees us stall."""
        async for relay in session.relays:
            if relay.kind == "offer":
                self._on_offer(session, relay)
            elif relay.kind == "answer":
                self._on_answer(session, relay)
            elif relay.kind == "refuse":
                self._on_refusal(relay)
            # "ice": candidates travel inside the SDP (non-trickle), nothing to do.
            await trio.lowlevel.checkpoint()

    def _on_offer(self, session: SignalingSession, relay: Relay) -> None:
        assert self._local is not None
        assert self._nursery is not None
        peer = relay.source
        current = self._links.get(peer)
        if current is not None and current.offerer and not current.ready.is_set():
            if self._local < peer:
                log.debug("glare with %s: we stay the offerer", peer)
                return
            log.debug("glare with %s: dropping our offer, answering theirs", peer)
        replaces = None if current is None else current.ready.is_set()
        now = time.monotonic()
        refusal = self._admission.check_offer(peer, len(relay.payload), now, replaces=replaces)
        if refusal is not None:
            self._refuse_offer(peer, refusal, now)
            return
        try:
            offer = self._open(session, relay, "offer")
        except PeerNotAuthenticated as exc:
            # Not answered, and no link is replaced: a forged offer cannot even cut the link we
            # have with the node it names.
            self._refused(relay, exc)
            return
        if current is not None:
            current.superseded = True
            current.break_("superseded by a new offer from the peer")
        link = Link(peer, False, self._max_frame_size, self._max_packet)
        self._links[peer] = link
        self._admission.link_started()
        self._nursery.start_soon(self._run_link, link, offer)

    def _on_answer(self, session: SignalingSession, relay: Relay) -> None:
        link = self._links.get(relay.source)
        if link is None or not link.offerer or link.answered.is_set():
            log.debug("stale answer from %s ignored", relay.source)
            return
        try:
            link.answer = self._open(session, relay, "answer")
        except PeerNotAuthenticated as exc:
            self._refused(relay, exc)
            link.refuse(f"answer refused: {exc}")
            return
        link.answered.set()
        link.wakeup.unpark_all()

    def _on_refusal(self, relay: Relay) -> None:
        """The peer refused our offer: its senders fail now, with the peer's reason."""
        link = self._links.get(relay.source)
        if link is None or not link.offerer or link.answered.is_set() or link.ready.is_set():
            log.debug("stale refusal from %s ignored", relay.source)
            return
        refusal = decode_refusal(relay.payload)
        self._rate.log(
            log,
            logging.INFO,
            (relay.source, "refused us"),
            "%s refused our offer (%s): %s",
            relay.source,
            refusal.code,
            refusal.message,
        )
        link.refused_by_peer(refusal)

    def _refuse_offer(self, peer: ActrId, refusal: Refusal, now: float) -> None:
        self._rate.log(
            log,
            logging.WARNING,
            ("offer refused", refusal.code),
            "refused an offer from %s: %s",
            peer,
            refusal.message,
        )
        if self._admission.refusal_due(peer, refusal, now):
            # A full queue: the offerer times out instead of failing fast.
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                self._refusal_send.send_nowait((peer, encode_refusal(refusal)))

    async def _send_refusals(self, session: SignalingSession) -> None:
        async for peer, payload in self._refusal_recv:
            try:
                await session.send_relay(peer, "refuse", payload)
            except TransportError as exc:  # gone, or signaling busy or away: it times out
                log.debug("refusal to %s not relayed: %s", peer, exc)

    def _open(self, session: SignalingSession, relay: Relay, kind: _binding.Kind) -> str:
        """The relayed SDP once its binding verified (see ``_binding.open_description``)."""
        verified = _binding.open_description(
            relay.payload,
            kind=kind,
            source=relay.source,
            local=session.actr_id,
            issuer_key=session.issuer_key,
            now=time.time(),
            max_size=self._config.max_relay_payload,
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
        self._counters.bindings_refused += 1
        self._rate.log(
            log,
            logging.WARNING,
            (relay.source, "binding"),
            "refused the %s relayed as from %s: %s; no link",
            relay.kind,
            relay.source,
            error,
        )

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
            if self._closed or self._local is None:
                raise ShuttingDown("transport is closed")
            link = self._links.get(peer)
            if link is None:
                refusal = self._admission.check_outbound()
                if refusal is not None:
                    raise LinkRefused(f"{peer}: not linked: {refusal.message}", refusal.code)
                link = Link(peer, True, self._max_frame_size, self._max_packet)
                self._links[peer] = link
                self._admission.link_started()
                try:
                    await self._spawn_send.send((link, None))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    self._admission.link_ended(was_ready=False)
                    raise ShuttingDown("transport is closed") from None
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
        if not isinstance(track, MediaStreamTrack):
            raise TypeError(f"{track!r} is not an aiortc MediaStreamTrack")
        link = await self._link_for(peer)
        assert link.pc is not None
        slot = self._free_slot(link.pc, track.kind)
        if slot is None or slot.mid is None:
            raise TransportError(
                f"no free {track.kind} slot to {peer} (media_slots={self._media_slots})"
            )
        announce = b"T" + bytes([TRACK_KINDS[track.kind]]) + f"{slot.mid}\0{track.id}".encode()
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

    async def _receive_track(self, link: Link, mid: str, track: MediaStreamTrack) -> None:
        sequence = 0
        counters = self._counters
        while True:
            try:
                frame = await aio(track.recv)
            except MediaStreamError:
                return
            name = link.track_names.get(mid)
            if name is None:
                counters.media_dropped += 1
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
            if not self._peers.offer_lossy((None, item)):
                counters.media_dropped += 1
            else:
                counters.media_received += 1

    # ------------------------------------------------------------------ links

    async def _run_link(self, link: Link, offer: str | None) -> None:
        """Open, serve and close one link (the link task; see the module docstring).

        Whatever is raised on the link ends here: the link closes, nothing else does.
        """
        assert self._session is not None
        ready = False
        try:
            with trio.move_on_after(self._connect_timeout) as connecting:
                await self._negotiate(self._session, link, offer)
                while link.open_channels < len(Channel) and not link.broken.is_set():
                    await link.wakeup.park()
            if connecting.cancelled_caught:
                link.break_(f"did not connect within {self._connect_timeout} s")
            if not link.broken.is_set():
                self._counters.links_opened += 1
                self._admission.link_ready()
                ready = True
                link.ready.set()
                log.info(
                    "linked to %s over WebRTC (%s)",
                    link.peer,
                    "we offered" if link.offerer else "it offered",
                )
                await self._serve_link(link)
        except PeerUnavailable as exc:
            link.break_(str(exc))
        except Exception as exc:
            # aiortc's errors on a bad or unexpected SDP, a socket error, a bug: this link only.
            self._peers.link_error(link, exc, "negotiation" if not ready else "the link")
        finally:
            # Shielded so a cancelled link still closes its peer connection; _close_link's own
            # bound is CLOSE_GRACE.
            with trio.move_on_after(CLOSE_GRACE + 1, shield=True):
                await self._close_link(link)
            self._admission.link_ended(was_ready=ready)

    async def _serve_link(self, link: Link) -> None:
        async with trio.open_nursery() as nursery:
            for lane in DATA_LANES:
                nursery.start_soon(
                    self._guarded,
                    link,
                    f"{lane.name} flusher",
                    partial(flush, max_frame_size=self._max_frame_size, counters=self._counters),
                    lane,
                )
            nursery.start_soon(self._guarded, link, "track reader", self._accept_tracks, nursery)
            await link.broken.wait()
            nursery.cancel_scope.cancel(reason="link closed")

    async def _guarded(
        self, link: Link, where: str, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run one of ``link``'s tasks: an exception in it closes the link, nothing more."""
        try:
            await fn(link, *args)
        except Exception as exc:
            self._peers.link_error(link, exc, where)

    async def _close_link(self, link: Link) -> None:
        """Fail the link's senders, close its peer connection (shielded, bounded)."""
        if link.failure is None:
            link.break_("transport closed")
        if not link.superseded and not self._closed:
            self._counters.links_failed += 1
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
        error: ShuttingDown | PeerUnavailable = (
            ShuttingDown("transport is closed") if self._closed else link.error()
        )
        for outbox in link.outboxes.values():
            outbox.fail(error)
        link.ready.set()
        link.new_tracks_send.close()
        pc = link.pc
        if pc is not None:
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                try:
                    stop_decoder_threads(pc)
                    await aio(pc.close)
                except Exception as exc:
                    log.debug("closing the connection to %s raised %r", link.peer, exc)
            # Also after a close that overran its bound: setRemoteDescription may have started a
            # receiver after the first stop.
            try:
                stop_decoder_threads(pc)
            except Exception as exc:
                log.debug("stopping codec threads of %s raised %r", link.peer, exc)
        # A link that closes while we run is news (the peer left or the path broke); our own
        # shutdown closing every link is not.
        quiet = self._closed or link.superseded or link.failure == "transport closed"
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "link to %s closed: %s",
            link.peer,
            link.failure,
        )

    async def _accept_tracks(self, link: Link, nursery: trio.Nursery) -> None:
        async for mid, track in link.new_tracks_recv:
            nursery.start_soon(self._guarded, link, "track reader", self._receive_track, mid, track)

    async def _negotiate(self, session: SignalingSession, link: Link, offer: str | None) -> None:
        servers = [RTCIceServer(url) for url in self._config.ice_servers]
        configuration = RTCConfiguration(
            iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        peers = self._peers
        with _ice.host_addresses(self._config.ice_addresses):
            if offer is None:
                local = await aio(lambda: peers.offer(configuration, link))
                await session.send_relay(
                    link.peer, "offer", self._seal(session, "offer", link.peer, local)
                )
                while not link.answered.is_set() and not link.broken.is_set():
                    await link.wakeup.park()
                if link.answer is None:
                    return
                answer = link.answer
                await aio(lambda: peers.accept_answer(link, answer))
            else:
                local = await aio(lambda: peers.answer(configuration, link, offer))
                await session.send_relay(
                    link.peer, "answer", self._seal(session, "answer", link.peer, local)
                )
