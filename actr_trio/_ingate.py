"""The inbound gate (middle ring): what arrives from the transport goes where it belongs.

* Stream chunks go to the StreamRegistry (FLG1), media frames to the TrackRegistry (FLG2).
  A chunk on a Signal/Reliable lane is sequenced on the link like an envelope: accepted in link
  order and acknowledged once the registry took it, or refused when its stream has no callback.
* Acks and responses go to the OutGate, which is waiting for them.
* Requests and tells are accepted in link order (``_link.ReceiveLink``), committed to the
  mailbox **before** they are acknowledged (one transaction per inbound batch: group commit),
  then queued on the scheduler. Anything unacceptable (unknown route, wrong target, too large,
  malformed, overloaded, shutting down, refused by the ACL) is acknowledged with a refusal
  naming the reason, so its sender gets a typed error; the node keeps serving.

Authenticity (docs/security.md): the caller of whatever arrives is the peer the transport names
for the batch (the authenticated end of the link), never the envelope's own ``caller`` field.
An envelope whose field names anyone else is refused (``PermissionDenied``, code
``caller_mismatch``); the mailbox stores the link peer with each accepted envelope, and the ACL
judges the link peer. Responses go to the OutGate with the link peer, which accepts them only
from the peer the request went to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._acl import AclGuard
from ._envelope import (
    REQUEST,
    RESPONSE,
    AckInfo,
    Chunk,
    Envelope,
    Goodbye,
    InvalidEnvelope,
    WireError,
    decode_packet,
    encode_ack,
    encode_rejection,
)
from ._ids import ActrId
from ._lanes import Lane, Priority
from ._link import ReceiveLink
from ._logging import LINK, RateLimiter
from ._mailbox import Accept, Accepted, Duplicate, Mailbox, StoredEnvelope
from ._proto.actr import wire_pb2
from .errors import (
    CallError,
    Overloaded,
    PermissionDenied,
    RemoteShuttingDown,
    RouteNotFound,
    WrongTarget,
)
from .transport._abc import InboundFrame, InboundPackets, Transport

if TYPE_CHECKING:
    from ._outgate import OutGate
    from ._streams import StreamRegistry
    from ._tracks import TrackRegistry

log = logging.getLogger(LINK)


@attrs.define(slots=True)
class Work:
    """What the scheduler runs: the stored row and its decoded envelope."""

    stored: StoredEnvelope
    envelope: Envelope
    peer: ActrId
    # True for a freshly accepted envelope: its first attempt was counted by the accept's own
    # commit. Replayed, retried and redriven work is counted (committed) before it runs.
    counted: bool = False


@final
@attrs.frozen
class InGateStatistics:
    """Counters of the inbound gate."""

    batches: int
    accepted: int
    duplicates: int
    refused: int
    rejected_packets: int
    #: Refused or dropped because of the ACL or a ``caller`` field naming someone else
    #: (also counted in ``refused`` when refused).
    denied: int = 0


class InGate:
    """Reads ``transport.inbound`` until it ends; see the module docstring."""

    def __init__(
        self,
        *,
        local: ActrId,
        transport: Transport,
        mailbox: Mailbox,
        outgate: OutGate,
        streams: StreamRegistry,
        tracks: TrackRegistry,
        has_route: Callable[[str], bool],
        enqueue: Callable[[Work], None],
        max_payload: int,
        acl: AclGuard | None = None,
    ) -> None:
        self._local = local
        self._transport = transport
        self._mailbox = mailbox
        self._outgate = outgate
        self._streams = streams
        self._tracks = tracks
        self._has_route = has_route
        self._enqueue = enqueue
        self._max_payload = max_payload
        self._acl = acl
        self._links: dict[tuple[ActrId, Lane], ReceiveLink] = {}
        self.accepting = True
        self._batches = self._accepted = self._duplicates = self._refused = self._rejected = 0
        self._denied = 0
        # Refusals and failed acks repeat per envelope (a whole backlog while shutting down).
        self._rate = RateLimiter(trio.current_time)

    def statistics(self) -> InGateStatistics:
        return InGateStatistics(
            self._batches,
            self._accepted,
            self._duplicates,
            self._refused,
            self._rejected,
            self._denied,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve inbound traffic until the transport's inbound channel ends or cancelled."""
        task_status.started()
        async for item in self._transport.inbound:
            if isinstance(item, InboundFrame):
                if self._admits(item.peer, None, None, "a media frame"):
                    self._tracks.deliver(item)
            else:
                await self._on_batch(item)

    def peers(self) -> set[ActrId]:
        """Peers that sent this node something (the ones to say goodbye to)."""
        return {peer for peer, _ in self._links}

    def _on_goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        # The transport names the peer a batch came from (over WebRTC: the DTLS identity it
        # signed), so a goodbye can only ever be about the link it arrived on.
        for key in [key for key in self._links if key[0] == peer]:
            del self._links[key]
        self._outgate.on_goodbye(peer, goodbye)

    def _refusal(self, env: Envelope, peer: ActrId) -> CallError | None:
        if not self.accepting:
            return RemoteShuttingDown(f"{self._local} is shutting down", code="shutting_down")
        if env.target is not None and env.target != self._local:
            return WrongTarget(f"envelope for {env.target} reached {self._local}")
        # Before the route check: a caller the ACL refuses learns nothing about the routes.
        if not self._admits(
            peer, env.route_key, env.priority, f"{env.route_key} ({env.priority.name})"
        ):
            return PermissionDenied(
                f"{self._local} does not accept {env.route_key!r} at priority "
                f"{env.priority.name} from {peer}",
                code="acl",
            )
        if not self._has_route(env.route_key):
            return RouteNotFound(f"{self._local} has no route {env.route_key!r}")
        return None

    def _admits(
        self, peer: ActrId, route_key: str | None, priority: Priority | None, what: str
    ) -> bool:
        """The ACL's verdict on ``peer`` sending ``what``; a refusal is counted and logged."""
        if self._acl is None:
            return True
        reason = self._acl.refusal(peer, route_key, priority)
        if reason is None:
            return True
        self._denied += 1
        self._rate.log(
            log,
            logging.WARNING,
            (peer, "acl", route_key),
            "ACL refused %s from %s: %s",
            what,
            peer,
            reason,
        )
        return False

    def _impostor(self, env: Envelope, peer: ActrId) -> PermissionDenied | None:
        # The field is the sender's claim; the link peer is who it is. A mismatch is either a
        # forgery or a broken sender: never take the claim, refuse it and say so.
        if env.caller is None or env.caller == peer:
            return None
        self._denied += 1
        self._rate.log(
            log,
            logging.WARNING,
            (peer, "caller mismatch"),
            "refused an envelope from %s that names %s as its caller (forged?)",
            peer,
            env.caller,
        )
        return PermissionDenied(
            f"envelope names caller {env.caller} but came from {peer}", code="caller_mismatch"
        )

    async def _on_batch(self, batch: InboundPackets) -> None:
        self._batches += 1
        peer, lane = batch.peer, batch.lane
        link = self._links.get((peer, lane))
        if link is None:
            link = self._links[(peer, lane)] = ReceiveLink()
        accepts: list[tuple[int, Envelope, Accept]] = []
        touched: list[int] = []
        reset_epoch: int | None = None
        replies: list[bytes] = []
        goodbye: Goodbye | None = None
        for raw in batch.packets:
            try:
                pkt = decode_packet(raw, max_payload=self._max_payload)
            except CallError as exc:
                self._rejected += 1
                self._rate.log(
                    log,
                    logging.WARNING,
                    (peer, "rejected"),
                    "rejected a packet from %s: %s",
                    peer,
                    exc,
                )
                replies.append(encode_rejection(WireError.of(exc)))
                continue
            body = pkt.body
            if isinstance(body, Chunk) and not (pkt.seq and lane.sequenced):
                # LatencyFirst: never acked, so a chunk the ACL refuses is only dropped.
                if self._admits(peer, None, None, f"stream {body.stream_id!r}"):
                    await self._streams.deliver(peer, lane, body)
                continue
            if isinstance(body, AckInfo):
                self._outgate.on_ack(peer, lane, body)
                continue
            if isinstance(body, WireError):
                self._rate.log(
                    log,
                    logging.WARNING,
                    (peer, "rejected us"),
                    "%s rejected something we sent: %s",
                    peer,
                    body.message,
                )
                continue
            if isinstance(body, Goodbye):
                goodbye = body  # acted on after this batch's own packets and acks
                continue
            verdict = link.classify(pkt.epoch, pkt.seq)
            if verdict == "reset":
                reset_epoch = pkt.epoch
                continue
            touched.append(pkt.seq)
            if verdict != "accept":
                continue
            if isinstance(body, InvalidEnvelope):
                self._refuse(link, pkt.seq, body.error, peer)
                continue
            if isinstance(body, Chunk):
                await self._deliver_chunk(link, pkt.seq, peer, lane, body)
                continue
            impostor = self._impostor(body, peer)
            if impostor is not None:
                self._refuse(link, pkt.seq, impostor, peer, logged=True)
                continue
            if body.kind == RESPONSE:
                self._outgate.on_response(peer, body)
                continue
            refusal = self._refusal(body, peer)
            if refusal is not None:
                self._refuse(
                    link, pkt.seq, refusal, peer, logged=isinstance(refusal, PermissionDenied)
                )
                continue
            accepts.append(
                (
                    pkt.seq,
                    body,
                    Accept(str(peer), body.request_id, body.priority, pkt.envelope_bytes),
                )
            )
        if accepts:
            await self._commit(link, peer, lane, accepts)
        if touched and link.epoch is not None:
            replies.append(encode_ack(link.epoch, link.cumulative, refused=link.refusals(touched)))
        if reset_epoch is not None:
            replies.append(encode_ack(reset_epoch, 0, reset=True))
        if replies:
            await self._reply(peer, lane, replies)
        if goodbye is not None:
            self._on_goodbye(peer, goodbye)

    async def _deliver_chunk(
        self, link: ReceiveLink, seq: int, peer: ActrId, lane: Lane, chunk: Chunk
    ) -> None:
        if not self._admits(peer, None, None, f"stream {chunk.stream_id!r}"):
            self._refused += 1
            denied = PermissionDenied(
                f"{self._local} does not accept stream chunks from {peer}", code="acl"
            )
            link.refuse(seq, WireError.of(denied))
            return
        if await self._streams.deliver(peer, lane, chunk):
            return
        # Refused, not silently dropped: the sender's close() reports it as unacknowledged.
        # Not logged per chunk (a whole stream would flood the log); the registry counts it.
        self._refused += 1
        error = RouteNotFound(f"{self._local} has no callback for stream {chunk.stream_id!r}")
        link.refuse(seq, WireError.of(error))

    def _refuse(
        self, link: ReceiveLink, seq: int, error: CallError, peer: ActrId, *, logged: bool = False
    ) -> None:
        self._refused += 1
        if not logged:  # security refusals were logged at WARNING where they were decided
            self._rate.log(
                log, logging.INFO, (peer, "refused"), "refused an envelope from %s: %s", peer, error
            )
        link.refuse(seq, WireError.of(error))

    async def _commit(
        self,
        link: ReceiveLink,
        peer: ActrId,
        lane: Lane,
        accepts: list[tuple[int, Envelope, Accept]],
    ) -> None:
        outcomes = await self._mailbox.accept([a for _, _, a in accepts])
        for (seq, env, _), outcome in zip(accepts, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                self._accepted += 1
                self._enqueue(Work(outcome.envelope, env, peer, counted=True))
            elif isinstance(outcome, Duplicate):
                self._duplicates += 1
                if outcome.dead_lettered:
                    error = WireError(
                        wire_pb2.DEAD_LETTER,
                        "dead_letter",
                        f"{env.route_key}: in the dead-letter table",
                    )
                    self._refused += 1
                    link.refuse(seq, error)
                elif outcome.response is not None and env.kind == REQUEST:
                    self._outgate.respond(peer, lane, outcome.response, env.deadline_ms)
            else:
                self._refuse(
                    link,
                    seq,
                    Overloaded(
                        f"{self._local}: mailbox full ({outcome.reason})", code="overloaded"
                    ),
                    peer,
                )

    async def _reply(self, peer: ActrId, lane: Lane, packets: list[bytes]) -> None:
        # Acks bypass the sender links (they are not sequenced); a peer that vanished simply
        # retransmits later, so a failed ack is only logged.
        try:
            await self._transport.send(peer, lane, packets)
        except Exception as exc:  # any transport failure: the peer retransmits
            self._rate.log(log, logging.INFO, (peer, "ack"), "could not ack %s: %s", peer, exc)
