"""The state of one direct WebSocket link: lanes' outboxes, credits, decoders, lifecycle.

Part of the WebSocket transport (``_websocket.py`` has the overview). A :class:`Link` is owned
by its link task; the runtime's reads of ``inbound`` (``_inbound.InboundChannel``) only touch it
through :meth:`Link.grant`, which never blocks. Also the link's wire format after the
handshake, the flushers (outbox to frames, within credit) and the transport's counters.

Wire format: every binary WebSocket message is ``lane:u8`` followed by a frame of the lane's
``FrameEncoder`` (lanes 0 SIGNAL, 1 RELIABLE, 2 LATENCY_FIRST), or, on lane 3 CONTROL, a credit
grant ``b"C" lane:u8 frames:u32`` (the same message as on WebRTC's CONTROL channel). TCP loses
and reorders nothing, so there are no stall probes and no lost-frame accounting: a gap in a
lane's frame sequence is a protocol violation (:class:`~._frames.FrameError` via the decoder is
not raised for it, so the reader checks ``skipped_frames`` itself).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._ids import ActrId
from .._lanes import Lane
from ..errors import LinkRefused, PeerNotAuthenticated, PeerUnavailable
from ._abc import InboundPackets
from ._admission import AdmissionStatistics, Refusal
from ._frames import FrameDecoder, FrameEncoder
from ._outbox import FRAME_OVERHEAD as FRAME_OVERHEAD
from ._outbox import OUTBOX_LIMIT as OUTBOX_LIMIT
from ._outbox import RECORD_COST as RECORD_COST
from ._outbox import Outbox as Outbox

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

#: Frames per lane a sender may have in flight before the receiving runtime consumed them.
WINDOW: Final = 8
#: Consumed frames collected before granting them back in one CONTROL message.
CREDIT_BATCH: Final = 4
#: Inbound batches buffered for the runtime (see ``_webrtc_link.INBOUND_BUFFER``: reliable
#: data never exceeds ``WINDOW`` frames per lane and peer; LatencyFirst only fills half).
INBOUND_BUFFER: Final = 4096
#: Quiet scheduling rounds after which a lane counts as idle and is flushed.
IDLE_ROUNDS: Final = 3
#: Scheduling rounds a flusher waits at most for a busy sender to fill a frame.
MAX_IDLE_ROUNDS: Final = 512

DATA_LANES: Final = (Lane.SIGNAL, Lane.RELIABLE, Lane.LATENCY_FIRST)
#: The lane byte of a message (and of a credit grant): the lane's index in DATA_LANES.
INDEX_OF_LANE: Final = {lane: i for i, lane in enumerate(DATA_LANES)}
CONTROL: Final = 3
CREDIT: Final = struct.Struct(">cBI")


@attrs.define
class Counters:
    """The WebSocket transport's running counters (``statistics()`` snapshots them)."""

    links_opened: int = 0
    links_failed: int = 0
    links_forgotten: int = 0
    dials_failed: int = 0
    frames_sent: int = 0
    packets_sent: int = 0
    frames_received: int = 0
    packets_received: int = 0
    dropped_latency_first: int = 0
    credit_waits: int = 0
    overflows: int = 0
    handshakes_refused: int = 0
    connections_refused: int = 0
    handshake_timeouts: int = 0
    malformed: int = 0
    link_errors: int = 0


@attrs.frozen
class WebSocketStatistics:
    """Counters of one WebSocket transport (a snapshot).

    Attributes:
        address: the advertised listen address, or None (no listener).
        peers: links currently open or opening.
        links_opened / links_failed / links_forgotten: as for WebRTC.
        dials_failed: links this node dialled that did not open (refused, unreachable, proof).
        frames_sent / packets_sent / frames_received / packets_received: data on the lanes.
        dropped_latency_first: LatencyFirst packets dropped because the runtime fell behind.
        credit_waits: times a sender waited for the receiver's runtime to consume.
        overflows: links closed because reliable data found the inbound buffer full.
        handshakes_refused: connections closed because a proof did not verify.
        connections_refused: connections closed on accept (over the admission caps).
        handshake_timeouts: connections closed because the handshake overran.
        malformed: links closed because of a malformed message.
        link_errors: links closed by an unexpected exception.
        admission: the shared admission counters (see ``_admission``).
    """

    address: str | None
    peers: int
    links_opened: int
    links_failed: int
    links_forgotten: int
    dials_failed: int
    frames_sent: int
    packets_sent: int
    frames_received: int
    packets_received: int
    dropped_latency_first: int
    credit_waits: int
    overflows: int
    handshakes_refused: int
    connections_refused: int
    handshake_timeouts: int
    malformed: int
    link_errors: int
    admission: AdmissionStatistics


class Link:
    """One WebSocket connection to a peer and its per-lane state. Owned by its link task."""

    def __init__(
        self, peer: ActrId, dialler: bool, max_frame_size: int, max_packet: int, address: str
    ) -> None:
        self.peer = peer
        self.dialler = dialler
        self.address = address  # the peer's (dialler) or the remote end's (listener) address
        self.encoders = {lane: FrameEncoder(max_frame_size) for lane in DATA_LANES}
        self.decoders = {lane: FrameDecoder(max_packet) for lane in DATA_LANES}
        self.outboxes = {lane: Outbox() for lane in DATA_LANES}
        self.credits = dict.fromkeys(DATA_LANES, WINDOW)
        self.credit_lot = {lane: trio.lowlevel.ParkingLot() for lane in DATA_LANES}
        self.consumed = dict.fromkeys(DATA_LANES, 0)
        self.urgent = False  # a grant that must go out now, whatever CREDIT_BATCH says
        self.control_lot = trio.lowlevel.ParkingLot()
        self.ready = trio.Event()  # set once open, or once it failed (see failure)
        self.opened = False  # it reached the open state (handshake done)
        self.broken = trio.Event()
        self.failure: str | None = None
        self.error_type: type[PeerUnavailable] = PeerUnavailable
        self.refusal: Refusal | None = None
        self.superseded = False
        # The peer dials us at the same moment and keeps its dial (see _websocket: glare).
        self.glare = False
        self.ws: WebSocketConnection | None = None  # once open
        # A lane's frames are written by one task at a time (its flusher, or a sender writing
        # directly, see ``_websocket_serve.write_now``), so frames leave in sequence order.
        self.writing = dict.fromkeys(DATA_LANES, False)
        self.written = {lane: trio.lowlevel.ParkingLot() for lane in DATA_LANES}

    def __repr__(self) -> str:
        role = "dialler" if self.dialler else "listener"
        return f"<WebSocket link {self.peer} {role} ready={self.ready.is_set()} {self.failure!r}>"

    def break_(self, reason: str, error_type: type[PeerUnavailable] | None = None) -> None:
        """Ask the link task to close the connection (from any task, never blocks)."""
        if self.failure is None:
            self.failure = reason
            if error_type is not None:
                self.error_type = error_type
        self.broken.set()
        self.control_lot.unpark_all()

    def refused_by_peer(self, refusal: Refusal) -> None:
        if self.failure is None:
            self.refusal = refusal
        self.break_(f"peer refused the link: {refusal.message}")

    def error(self) -> PeerUnavailable:
        """What the link's senders get now that it failed."""
        message = f"{self.peer}: {self.failure}"
        if self.refusal is not None:
            return LinkRefused(message, self.refusal.code)
        if self.error_type is PeerNotAuthenticated:
            return PeerNotAuthenticated(message)
        return self.error_type(message)

    def took(self, item: InboundPackets) -> None:
        """The runtime took ``item`` off ``transport.inbound``: credit for one frame."""
        self.grant(item.lane, 1)

    def grant(self, lane: Lane, frames: int, *, now: bool = False) -> None:
        """Give ``frames`` credits back to the sender (the control writer sends them)."""
        self.consumed[lane] += frames
        if now:
            self.urgent = True
        if self.urgent or self.consumed[lane] >= CREDIT_BATCH:
            self.control_lot.unpark_all()

    def take_grants(self) -> list[bytes]:
        """The CONTROL messages due now (and forget them)."""
        due = []
        for lane in DATA_LANES:
            count = self.consumed[lane]
            if count and (self.urgent or count >= CREDIT_BATCH):
                due.append(bytes([CONTROL]) + CREDIT.pack(b"C", INDEX_OF_LANE[lane], count))
                self.consumed[lane] = 0
        self.urgent = False
        return due

    def on_credit(self, lane: Lane, frames: int) -> None:
        # More credit than the window would let the peer make us buffer for it: capped.
        self.credits[lane] = min(self.credits[lane] + frames, WINDOW)
        self.credit_lot[lane].unpark_all()


async def wait_credit(link: Link, lane: Lane, counters: Counters) -> None:
    """Return once ``lane`` has credit (TCP loses nothing: no stall probes needed)."""
    if link.credits[lane] > 0:
        return
    counters.credit_waits += 1
    while link.credits[lane] <= 0:
        await link.credit_lot[lane].park()


async def wait_idle(outbox: Outbox, max_frame_size: int) -> None:
    """Let busy senders fill the frame: return once ``IDLE_ROUNDS`` rounds added nothing
    (as the WebRTC flusher does; a lone packet costs those few rounds)."""
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
