"""The state of one WebRTC link: its lanes' outboxes, credits, decoders and lifecycle events.

Part of the WebRTC transport (``_webrtc.py`` has the overview): a :class:`Link` is owned by its
link task (``_webrtc_linktask``); what the asyncio side reports (``_webrtc_recv``) and the
runtime's reads of ``inbound`` (``_inbound.InboundChannel``) only touch it through the methods
here, which never block. All of it lives in Trio: the link reaches its aiortc connection only through
its :class:`~._webrtc_aio.Port`. Also the flow-control messages on CONTROL and the transport's
counters.
"""

from __future__ import annotations

import enum
import struct
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._ids import ActrId
from .._lanes import Lane
from ..errors import LinkRefused, PeerNotAuthenticated, PeerUnavailable
from ._abc import InboundPackets
from ._admission import Refusal
from ._frames import FrameDecoder, FrameEncoder
from ._outbox import FRAME_OVERHEAD as FRAME_OVERHEAD
from ._outbox import OUTBOX_LIMIT as OUTBOX_LIMIT
from ._outbox import RECORD_COST as RECORD_COST
from ._outbox import Outbox as Outbox

if TYPE_CHECKING:
    from ._webrtc_aio import Port

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

DATA_LANES: Final = (Lane.SIGNAL, Lane.RELIABLE, Lane.LATENCY_FIRST)
CREDITED: Final = (Lane.SIGNAL, Lane.RELIABLE, Lane.LATENCY_FIRST)

# CONTROL messages: b"C" lane:u8 frames:u32 (credit grant), b"T" kind:u8 mid\0track_id (track).
# b"P" lane:u8 next_sequence:u32 (a stalled sender's probe: frames before it are lost).
CREDIT: Final = struct.Struct(">cBI")
PROBE: Final = struct.Struct(">cBI")
TRACK_KINDS: Final = {"video": 1, "audio": 2}
TRACK_KIND_NAMES: Final = {v: k for k, v in TRACK_KINDS.items()}


class Channel(enum.IntEnum):
    """Negotiated data-channel ids (both sides create them; nothing is announced in band)."""

    SIGNAL = 0
    RELIABLE = 1
    LATENCY_FIRST = 2
    CONTROL = 3


# (ordered, maxRetransmits) per channel, as docs/architecture.md names the lanes' reliability.
CHANNEL_RELIABILITY: Final[dict[Channel, tuple[bool, int | None]]] = {
    Channel.SIGNAL: (True, None),
    Channel.RELIABLE: (True, 8),
    Channel.LATENCY_FIRST: (False, 4),
    Channel.CONTROL: (True, None),
}

CHANNEL_OF_LANE: Final = {
    Lane.SIGNAL: Channel.SIGNAL,
    Lane.RELIABLE: Channel.RELIABLE,
    Lane.LATENCY_FIRST: Channel.LATENCY_FIRST,
}
LANE_OF_CHANNEL: Final = {channel: lane for lane, channel in CHANNEL_OF_LANE.items()}


@attrs.define
class Counters:
    """The transport's running counters (``WebRTCTransport.statistics`` snapshots them)."""

    links_opened: int = 0
    links_failed: int = 0
    links_forgotten: int = 0
    frames_sent: int = 0
    packets_sent: int = 0
    frames_received: int = 0
    packets_received: int = 0
    dropped_latency_first: int = 0
    credit_waits: int = 0
    media_received: int = 0
    media_dropped: int = 0
    overflows: int = 0
    bindings_refused: int = 0
    malformed: int = 0
    link_errors: int = 0
    asyncio_errors: int = 0


class Link:
    """One peer connection and its per-lane state. Owned by its ``_run_link`` task."""

    def __init__(self, peer: ActrId, offerer: bool, max_frame_size: int, max_packet: int) -> None:
        self.peer = peer
        self.offerer = offerer
        # The asyncio side (set by the link task before negotiating).
        self.port: Port | None = None
        self.encoders = {lane: FrameEncoder(max_frame_size) for lane in DATA_LANES}
        self.decoders = {lane: FrameDecoder(max_packet) for lane in DATA_LANES}
        self.outboxes = {lane: Outbox() for lane in DATA_LANES}
        self.credits = dict.fromkeys(CREDITED, WINDOW)
        self.credit_lot = {lane: trio.lowlevel.ParkingLot() for lane in CREDITED}
        self.consumed = dict.fromkeys(CREDITED, 0)
        self.drained = {lane: trio.lowlevel.ParkingLot() for lane in DATA_LANES}
        self.track_names: dict[str, tuple[str, str]] = {}
        # Frames delivered per media slot (InboundFrame.sequence).
        self.track_sequences: dict[str, int] = {}
        self.answer: str | None = None
        self.answered = trio.Event()
        self.ready = trio.Event()
        self.broken = trio.Event()
        self.failure: str | None = None
        # PeerNotAuthenticated once the peer's answer failed its binding (see ``refuse``).
        self.error_type: type[PeerUnavailable] = PeerUnavailable
        # The peer's refusal of our offer, if it sent one (see ``refused_by_peer``).
        self.refusal: Refusal | None = None
        self.superseded = False
        self.open_channels = 0
        # Unparked on every state change the link task may wait for (open, answer, broken).
        self.wakeup = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        role = "offerer" if self.offerer else "answerer"
        return f"<Link {self.peer} {role} ready={self.ready.is_set()} failure={self.failure!r}>"

    def break_(self, reason: str) -> None:
        """Ask the link task to close the connection (never blocks; from any Trio code)."""
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

    def refused_by_peer(self, refusal: Refusal) -> None:
        """Fail the link because the peer refused our offer (its senders get ``LinkRefused``)."""
        if self.failure is None:
            self.refusal = refusal
        self.break_(f"peer refused the link: {refusal.message}")

    def error(self) -> PeerUnavailable:
        """What the link's senders get now that it failed."""
        message = f"{self.peer}: {self.failure}"
        if self.refusal is not None:
            return LinkRefused(message, self.refusal.code)
        return self.error_type(message)

    def took(self, item: InboundPackets) -> None:
        """The runtime took ``item`` off ``transport.inbound``: credit for one frame."""
        if item.lane in CREDITED:
            grant(self, item.lane, 1)

    def send_control(self, message: bytes) -> None:
        """Write ``message`` on CONTROL (queued on the asyncio loop in order; never blocks)."""
        if self.port is not None and not self.broken.is_set():
            self.port.write_soon(Channel.CONTROL, [message])


def grant(link: Link, lane: Lane, frames: int, *, now: bool = False) -> None:
    """Give ``frames`` credits back to the sender, batched by ``CREDIT_BATCH`` unless ``now``."""
    link.consumed[lane] += frames
    if link.consumed[lane] >= CREDIT_BATCH or (now and link.consumed[lane] > 0):
        granted, link.consumed[lane] = link.consumed[lane], 0
        link.send_control(CREDIT.pack(b"C", int(lane), granted))
