"""The contract between the runtime and a transport (the outer ring of docs/architecture.md).

A transport moves *packets* (encoded ``actr.Packet`` protobufs, see ``_envelope.py``) between
nodes on lanes, and media tracks. It knows nothing of mailboxes, acks or routes: reliability
end to end (sequence numbers, acks, resends, dedupe) lives above it in the runtime, so it works
the same over every transport. Two implementations must pass the same conformance suite
(``actr_trio.testing.conformance``): ``LoopbackTransport`` (in-process) and ``WebRTCTransport``.

Rules every transport keeps:

* ``send(peer, lane, packets)`` hands over packets in order; on SIGNAL/RELIABLE lanes they
  arrive in that order or not at all (a lossy lane may drop, never reorder, on those lanes);
  LATENCY_FIRST may drop and reorder. A transport may coalesce packets into frames; the
  receiver sees the same packets, in ``InboundPackets`` batches.
* ``inbound`` yields what peers sent to this node, bounded: when the runtime does not keep up,
  Signal/Reliable data waits (backpressure) and LatencyFirst data may be dropped and counted.
* A peer that cannot be reached raises ``PeerUnavailable`` from ``send``; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, final

import attrs
import trio

from .._identity import NodeKey
from .._ids import ActrId, ActrType
from .._lanes import Lane


@final
@attrs.frozen
class InboundPackets:
    """Packets one peer sent on one lane, in the order they were sent (per lane rules)."""

    peer: ActrId
    lane: Lane
    packets: Sequence[bytes]


@final
@attrs.define(eq=False)
class InboundFrame:
    """One decoded media frame from a peer's published track.

    ``frame`` is the transport's own frame object (an ``av.VideoFrame`` over WebRTC, whatever
    the source produced over loopback); the metadata fields are always filled.
    """

    peer: ActrId
    track_id: str
    sequence: int
    kind: str
    pts: int | None
    width: int
    height: int
    frame: object


Inbound = InboundPackets | InboundFrame


class MediaSource(Protocol):
    """What ``publish_track`` accepts: an aiortc ``MediaStreamTrack`` over WebRTC.

    Over the loopback transport any object with ``id``, ``kind`` and a Trio-native
    ``async def recv()`` returning a frame (or raising ``EOFError`` at the end) works.
    """

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...


@final
@attrs.frozen
class Relay:
    """An offer, answer or ICE candidate relayed through signaling between two nodes."""

    source: ActrId
    target: ActrId
    kind: str  # "offer" | "answer" | "ice" | "refuse"
    payload: str


class SignalingSession(Protocol):
    """A node's registered session with signaling, as the runtime and transports use it.

    Implemented by the WebSocket client (``actr_trio.signaling``) and by the in-memory
    service of ``actr_trio.testing.LocalRealm``.
    """

    @property
    def actr_id(self) -> ActrId:
        """This node's identity, as assigned (or confirmed) at registration."""
        ...

    @property
    def node_key(self) -> NodeKey:
        """This node's Ed25519 key, whose possession registration proved."""
        ...

    @property
    def credential(self) -> bytes:
        """The current serialized credential (``actr.Credential``) for this node's ``actr_id``
        and ``node_key``, renewed before it expires; verify it with ``issuer_key``."""
        ...

    @property
    def issuer_key(self) -> bytes:
        """The pinned 32-byte Ed25519 public key of the credential issuer (the signaling
        server): peers' credentials are verified against it."""
        ...

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        """Nodes of ``actr_type`` currently present in this node's realm (never another realm)."""
        ...

    def peer_address(self, peer: ActrId) -> str | None:
        """The address ``peer`` takes direct WebSocket links on (``HOST:PORT``, checked), as
        discovery last reported it; ``None``: it advertised none, or it was never discovered.
        A hint only: the link proves who answers there."""
        ...

    async def send_relay(self, target: ActrId, kind: str, payload: str) -> None:
        """Relay an offer/answer/ICE payload to ``target``.

        Raises:
            PeerUnavailable: ``target`` is not registered in this realm.
            SignalingError: the server cannot be reached right now.
        """
        ...

    @property
    def relays(self) -> trio.abc.ReceiveChannel[Relay]:
        """Relays addressed to this node, in arrival order."""
        ...


class SignalingConnector(Protocol):
    """How a node gets a :class:`SignalingSession` (step 1 of the start order)."""

    async def run(
        self,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey | None = None,
        *,
        listen: str | None = None,
        task_status: trio.TaskStatus[SignalingSession] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, authenticate and register; then keep the registration until cancelled.

        ``previous_id`` is the identity the node kept in its data dir: the server registers the
        node under it again (taking over a stale session) if it is bound to ``node_key``
        (``None``: a fresh ephemeral key). ``listen``: the address the node takes direct
        WebSocket links on, advertised with the registration (``None``: none).
        ``task_status.started(session)`` once registered. While running: heartbeats, and reconnect with backoff + re-register when the
        server goes away (open peer links keep working meanwhile). On cancellation: unregister
        (shielded, bounded) and return.

        Raises:
            AuthError: the server rejected the realm credentials (``IdentityTaken``:
                ``previous_id`` is bound to another key or was never assigned;
                ``IssuerKeyMismatch``: the server's issuer key is not the pinned one;
                ``CredentialError``: its credential did not verify).
            SignalingError: the first registration failed.
        """
        ...


class Transport(Protocol):
    """Moves packets and media between this node and its peers (see the module docstring)."""

    async def run(
        self,
        session: SignalingSession,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started()`` once ``send`` may be called.

        Cancellation closes every link. Inbound traffic is delivered on ``inbound`` as soon
        as ``started`` was called.
        """
        ...

    @property
    def inbound(self) -> trio.abc.ReceiveChannel[Inbound]:
        """What peers sent to this node. Ends (EndOfChannel) when the transport closed."""
        ...

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        """Send ``packets`` to ``peer`` on ``lane``, opening the link on first use.

        Raises:
            PeerUnavailable: the peer cannot be reached.
            ShuttingDown: the transport is closed.
        """
        ...

    async def publish_track(self, peer: ActrId, track: MediaSource) -> None:
        """Start sending ``track``'s frames to ``peer`` (returns once it is flowing)."""
        ...

    def forget(self, peer: ActrId) -> None:
        """Drop the link to ``peer``: the runtime saw it stop acknowledging (it may have
        restarted), or it said goodbye. The next ``send`` opens a new link; packets in flight on
        the old one may be lost (the runtime resends them). Never blocks; a no-op for an unknown
        peer."""
        ...
