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
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from ._acl import AclGuard
from ._envelope import (
    REQUEST,
    RESPONSE,
    TELL,
    AckInfo,
    Chunk,
    Envelope,
    Goodbye,
    InvalidEnvelope,
    WireError,
    decode_envelope,
    decode_packet,
    encode_ack,
    encode_envelope,
    encode_rejection,
)
from ._idle import PeerActivity
from ._ids import ActrId
from ._lanes import Lane, Priority
from ._link import ReceiveLink
from ._local import LocalPeer, Verdicts
from ._logging import LINK, RateLimiter
from ._mailbox import (
    Accept,
    Accepted,
    Duplicate,
    Mailbox,
    Outcome,
    StoredEnvelope,
)
from ._mailbox_memory import MemoryMailbox
from ._metrics import NodeMetrics, refusal_reason
from ._proto.actr import wire_pb2
from .errors import (
    CallError,
    EnvelopeTooLarge,
    Overloaded,
    PermissionDenied,
    RemoteShuttingDown,
    RouteNotFound,
    WrongTarget,
)
from .transport._abc import InboundFrame, InboundPackets, Transport

if TYPE_CHECKING:
    from ._outgate import OutGate
    from ._peerlane import PeerLane
    from ._streams import StreamRegistry
    from ._tracks import TrackRegistry

log = logging.getLogger(LINK)

# Inbound batches an ack that is due may wait behind (while more keep arriving) before it is
# sent anyway: one ack then covers them all, and a flood cannot hold it back for long.
ACK_BATCHES: Final = 16

# The resolution of the per-peer activity times (seconds): a peer touched again sooner is not
# touched (the bounds time out after minutes; a table update per packet showed in profiles).
NOTE_GRAIN: Final = 1.0
# Defaults of the bounds on per-peer link state (the node passes its Config's).
PEER_STATE_TIMEOUT: Final = 300.0
MAX_PEER_STATES: Final = 4096


@attrs.define(slots=True)
class Work:
    """What the scheduler runs: the stored row and its decoded envelope."""

    stored: StoredEnvelope
    envelope: Envelope
    peer: ActrId
    # True for a freshly accepted envelope: its first attempt was counted by the accept's own
    # commit. Replayed, retried and redriven work is counted (committed) before it runs.
    counted: bool = False
    # The node that handed it over in process: its answer goes straight back there.
    reply: LocalPeer | None = None
    # Read back from the mailbox (after a restart, or redriven), not freshly accepted.
    replayed: bool = False


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
    #: Peers whose inbound link state was forgotten: quiet for ``peer_state_timeout``, or the
    #: quietest beyond ``max_peer_states``.
    evicted_peers: int = 0


class InGate:
    """Reads ``transport.inbound`` until it ends, and is this node's :class:`LocalPeer` for
    the nodes of its ``trio.run``; see the module docstring."""

    def __init__(
        self,
        *,
        local: ActrId,
        transport: Transport,
        mailbox: Mailbox,
        outgate: OutGate,
        streams: StreamRegistry[Any],
        tracks: TrackRegistry[Any],
        routes: Container[str],
        enqueue: Callable[[Priority, Work], None],
        max_payload: int,
        acl: AclGuard | None = None,
        metrics: NodeMetrics | None = None,
        peer_state_timeout: float = PEER_STATE_TIMEOUT,
        max_peer_states: int = MAX_PEER_STATES,
    ) -> None:
        self._local = local
        self._transport = transport
        self._mailbox = mailbox
        self._outgate = outgate
        self._streams = streams
        self._tracks = tracks
        self._routes = routes
        self._enqueue = enqueue
        self._max_payload = max_payload
        self._acl = acl
        self._metrics = metrics  # per-route counts (Config.metrics), else None
        self._links: dict[tuple[ActrId, Lane], ReceiveLink] = {}
        # Lanes whose owed ack is due now, sent once no inbound batch is waiting (one ack for
        # several batches that queued up meanwhile).
        self._urgent_acks: set[PeerLane] = set()
        self._ack_wait = 0  # batches handled since the first of them became due
        # When each peer last sent something: the links of one quiet for longer than
        # peer_state_timeout are forgotten, the quietest first beyond max_peer_states.
        self._seen: PeerActivity[ActrId] = PeerActivity(
            peer_state_timeout, max_peer_states, trio.current_time(), NOTE_GRAIN
        )
        self._evicted = 0
        # LocalPeer: plain attributes, read per envelope by in-process senders.
        self.actr_id = local
        self.key = str(local)
        # An in-memory mailbox records at once: in-process senders accept on their own stack
        # without a checkpoint, and without encoding (the Work keeps the envelope object).
        self.immediate = isinstance(mailbox, MemoryMailbox)
        self._memory = mailbox if isinstance(mailbox, MemoryMailbox) else None
        self._direct_senders: set[ActrId] = set()  # peers that handed over in process
        self.accepting = True
        self.running = True
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
            self._evicted,
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
                if self._urgent_acks:
                    self._ack_wait += 1
                    if self._ack_wait >= ACK_BATCHES or not _more_waiting(self._transport.inbound):
                        await self._flush_acks()

    def peers(self) -> set[ActrId]:
        """Peers that sent this node something (the ones to say goodbye to)."""
        return {peer for peer, _ in self._links} | self._direct_senders

    def _on_goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        # The transport names the peer a batch came from (over WebRTC: the DTLS identity it
        # signed), so a goodbye can only ever be about the link it arrived on.
        self._forget_links(peer)
        self._outgate.on_goodbye(peer, goodbye)

    def _forget_links(self, peer: ActrId) -> None:
        for lane in Lane:
            self._links.pop((peer, lane), None)
        self._seen.forget(peer)

    def _note(self, peer: ActrId) -> None:
        """``peer`` sent something now; forget the links of peers gone quiet (see
        :meth:`evict`), at most every half timeout, and at once beyond the bound."""
        now = trio.current_time()
        if self._seen.note(peer, now):
            self.evict(now)

    def evict(self, now: float) -> int:
        """Forget the inbound links of peers quiet for longer than ``peer_state_timeout``,
        and of the quietest beyond ``max_peer_states``; how many peers.

        Always safe: a forgotten link is what a restart of this node leaves. The peer's next
        packet with a higher ``seq`` gets a ``reset`` ack and it renumbers what it had not
        seen acknowledged; what this node committed before is recognised by the mailbox's
        dedupe table, and a stream's chunks it delivered already are late for the stream.
        """
        gone = self._seen.sweep(now)
        for peer in gone:
            self._forget_links(peer)
        if gone:
            self._evicted += len(gone)
            log.debug("forgot the inbound links of %d quiet peers", len(gone))
        return len(gone)

    def _refusal(self, env: Envelope, peer: ActrId) -> CallError | None:
        if env.target is not None and env.target != self._local and self.accepting:
            return WrongTarget(f"envelope for {env.target} reached {self._local}")
        return self._local_refusal(env, peer)

    def _local_refusal(self, env: Envelope, peer: ActrId) -> CallError | None:
        """Why ``env`` from ``peer`` is refused, if it is (in process the target is right by
        construction: the directory found this node by it)."""
        if not self.accepting:
            return RemoteShuttingDown(f"{self._local} is shutting down", code="shutting_down")
        # Before the route check: a caller the ACL refuses learns nothing about the routes.
        if self._acl is not None and not self._admits(
            peer, env.route_key, env.priority, f"{env.route_key} ({env.priority.name})"
        ):
            return PermissionDenied(
                f"{self._local} does not accept {env.route_key!r} at priority "
                f"{env.priority.name} from {peer}",
                code="acl",
            )
        if env.route_key not in self._routes:
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
        self._note(peer)
        link = self._links.get((peer, lane))
        if link is None:
            link = self._links[(peer, lane)] = ReceiveLink()
        accepts: list[tuple[int, Envelope, Accept]] = []
        touched: list[int] = []
        reset_epoch: int | None = None
        replies: list[bytes] = []
        goodbye: Goodbye | None = None
        waiting = False  # the sender waits for this batch's ack: send it without delay
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
            if pkt.piggyback is not None:
                # An ack of our link on this lane riding on the packet: first, so a response
                # finds its request acknowledged (or refused) already.
                self._outgate.on_ack(peer, lane, pkt.piggyback)
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
                waiting = True  # a resend: our ack was lost or late, and the sender waits
                continue
            if isinstance(body, InvalidEnvelope):
                self._refuse(link, pkt.seq, body.error, peer)
                continue
            if isinstance(body, Chunk):
                await self._deliver_chunk(link, pkt.seq, peer, lane, body)
                continue
            impostor = self._impostor(body, peer)
            if impostor is not None:
                self._refuse(link, pkt.seq, impostor, peer, logged=True, env=body)
                continue
            if body.kind == RESPONSE:
                self._outgate.on_response(peer, body)
                continue
            refusal = self._refusal(body, peer)
            if refusal is not None:
                self._refuse(
                    link,
                    pkt.seq,
                    refusal,
                    peer,
                    logged=isinstance(refusal, PermissionDenied),
                    env=body,
                )
                continue
            # A tell completes on its ack: its sender waits for it. A request's ack rides on
            # its response; a response's or a chunk's on the next packet going back.
            waiting = waiting or body.kind == TELL
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
            # Only now, after the commit: what is owed never runs ahead of the mailbox.
            ack = self._owe_ack(peer, lane, link, touched, urgent=waiting)
            if ack is not None:
                replies.append(ack)
        if reset_epoch is not None:
            replies.append(encode_ack(reset_epoch, 0, reset=True))
        if replies:
            await self._reply(peer, lane, replies)
        if goodbye is not None:
            self._on_goodbye(peer, goodbye)

    def _owe_ack(
        self, peer: ActrId, lane: Lane, link: ReceiveLink, touched: list[int], *, urgent: bool
    ) -> bytes | None:
        """Owe ``peer`` the ack of what this batch touched (it leaves with the next packet to
        ``peer`` on ``lane``, or on its own when due); an urgent one is sent once the inbound
        packets already waiting are handled. Returns the ack packet to send directly when no
        lane can carry it (shutting down)."""
        assert link.epoch is not None
        refused = link.refusals(touched)
        carrier = self._outgate.owe_ack(
            peer, lane, link.epoch, link.cumulative, refused, urgent=urgent
        )
        if carrier is None:
            return encode_ack(link.epoch, link.cumulative, refused=refused)
        if carrier.ack.due <= trio.current_time():
            self._urgent_acks.add(carrier)
        return None

    async def _flush_acks(self) -> None:
        carriers, self._urgent_acks = self._urgent_acks, set()
        self._ack_wait = 0
        for carrier in carriers:
            await carrier.flush_ack()

    async def _deliver_chunk(
        self, link: ReceiveLink, seq: int, peer: ActrId, lane: Lane, chunk: Chunk
    ) -> None:
        refusal = await self.deliver_chunk(peer, lane, chunk)
        if refusal is not None:
            link.refuse(seq, refusal)

    async def deliver_chunk(self, sender: ActrId, lane: Lane, chunk: Chunk) -> WireError | None:
        """Hand a chunk on a Signal/Reliable lane (or, in process, any lane) to the stream
        registry; the refusal when the ACL refuses ``sender`` or the stream has no callback.
        A LatencyFirst chunk is never refused (the sender is not told): it may be dropped."""
        if not lane.sequenced:
            if self._admits(sender, None, None, f"stream {chunk.stream_id!r}"):
                await self._streams.deliver(sender, lane, chunk)
            else:
                await trio.lowlevel.checkpoint()
            return None
        if not self._admits(sender, None, None, f"stream {chunk.stream_id!r}"):
            self._refused += 1
            await trio.lowlevel.checkpoint()
            denied = PermissionDenied(
                f"{self._local} does not accept stream chunks from {sender}", code="acl"
            )
            return WireError.of(denied)
        refusal = await self._streams.deliver(sender, lane, chunk)
        if refusal is None:
            return None
        # Refused, not silently dropped: the sender's close() reports it as unacknowledged.
        # The registry counts it and logs it (rate-limited: a flood is one line per 10 s).
        self._refused += 1
        error: CallError
        if refusal == "unregistered":
            error = RouteNotFound(f"{self._local} has no callback for stream {chunk.stream_id!r}")
        elif refusal == "peer_limit":
            error = Overloaded(
                f"{self._local}: {sender} has too many streams open (max_streams_per_peer)",
                code="streams",
            )
        else:
            error = Overloaded(f"{self._local}: stream {chunk.stream_id!r} is closing")
        return WireError.of(error)

    def _refuse(
        self,
        link: ReceiveLink,
        seq: int,
        error: CallError,
        peer: ActrId,
        *,
        logged: bool = False,
        env: Envelope | None = None,
    ) -> None:
        self._refused += 1
        if self._metrics is not None:
            route, priority = (None, None) if env is None else (env.route_key, env.priority)
            self._metrics.on_refused(route, priority, refusal_reason(error))
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
            refusal = self._settle(outcome, env, peer, None)
            if refusal is not None:
                link.refuse(seq, refusal)
            elif (
                isinstance(outcome, Duplicate)
                and outcome.response is not None
                and env.kind == REQUEST
            ):
                self._outgate.respond(peer, lane, outcome.response, env.deadline_ms)

    def _settle(
        self, outcome: Outcome, env: Envelope, peer: ActrId, reply: LocalPeer | None
    ) -> WireError | None:
        """Queue what the mailbox accepted; the refusal of what it did not (a duplicate is
        not refused: its sender learns it is there)."""
        if type(outcome) is Accepted:
            self._accepted += 1
            if self._metrics is not None:
                self._metrics.on_accepted(env.route_key, env.priority)
            self._enqueue(env.priority, Work(outcome.envelope, env, peer, True, reply))
            return None
        if isinstance(outcome, Duplicate):
            self._duplicates += 1
            if not outcome.dead_lettered:
                return None
            self._refused += 1
            if self._metrics is not None:
                self._metrics.on_refused(env.route_key, env.priority, "dead_letter")
            return WireError(
                wire_pb2.DEAD_LETTER, "dead_letter", f"{env.route_key}: in the dead-letter table"
            )
        # Refused: full, this sender's share full, or the disk full (the code says which).
        overloaded = Overloaded(f"{self._local}: {outcome.describe()}", code=outcome.reason)
        self._refused += 1
        if self._metrics is not None:
            self._metrics.on_refused(env.route_key, env.priority, outcome.reason)
        self._rate.log(
            log,
            logging.INFO,
            (peer, "refused"),
            "refused an envelope from %s: %s",
            peer,
            overloaded,
        )
        return WireError.of(overloaded)

    # -- LocalPeer: the nodes of this trio.run hand envelopes over here, on their own stack --

    def accept_one_now(self, sender: LocalPeer, env: Envelope) -> WireError | None:
        """:meth:`accept_now` of one envelope: the path of every in-process call and tell."""
        peer = sender.actr_id
        self._batches += 1
        if peer not in self._direct_senders:
            self._direct_senders.add(peer)
        if not (
            self.accepting
            and self._acl is None
            and env.route_key in self._routes
            and len(env.payload) <= self._max_payload
        ):
            refusal = self._hand_refusal(env, peer)
            if refusal is not None:
                return refusal
        memory = self._memory
        assert memory is not None
        outcome = memory.accept_one_now(sender.key, env.request_id, env.priority, b"")
        if type(outcome) is Accepted:
            self._accepted += 1
            if self._metrics is not None:
                self._metrics.on_accepted(env.route_key, env.priority)
            self._enqueue(env.priority, Work(outcome.envelope, env, peer, True, sender))
            return None
        return self._settle_handed(sender, env, outcome)

    def accept_now(self, sender: LocalPeer, envelopes: Sequence[Envelope]) -> Verdicts:
        """In-memory mailbox: accept at once (see :meth:`LocalPeer.accept_now`)."""
        verdicts, admitted, accepts = self._admit(sender, envelopes)
        if accepts:
            assert isinstance(self._mailbox, MemoryMailbox)
            outcomes = self._mailbox.accept_now(accepts)
            self._settle_local(sender, envelopes, admitted, outcomes, verdicts)
        return verdicts

    async def accept(self, sender: LocalPeer, envelopes: Sequence[Envelope]) -> Verdicts:
        """Accept, waiting for the mailbox's commit (see :meth:`LocalPeer.accept`)."""
        verdicts, admitted, accepts = self._admit(sender, envelopes)
        if not accepts:
            await trio.lowlevel.checkpoint()
            return verdicts
        # Shielded: once queued, the commit happens anyway, and what it accepted must reach
        # the scheduler, whatever becomes of the sender meanwhile (the writer bounds the wait).
        with trio.CancelScope(shield=True):
            outcomes = await self._mailbox.accept(accepts)
        self._settle_local(sender, envelopes, admitted, outcomes, verdicts)
        return verdicts

    def _admit(
        self, sender: LocalPeer, envelopes: Sequence[Envelope]
    ) -> tuple[Verdicts, list[int], list[Accept]]:
        peer = sender.actr_id
        self._batches += 1
        if peer not in self._direct_senders:
            self._direct_senders.add(peer)
        verdicts: Verdicts = [None] * len(envelopes)
        admitted: list[int] = []
        accepts: list[Accept] = []
        immediate, key = self.immediate, sender.key
        for i, env in enumerate(envelopes):
            refusal = self._hand_refusal(env, peer)
            if refusal is not None:
                verdicts[i] = refusal
                continue
            # A durable mailbox stores the encoding (replayed after a crash); an in-memory one
            # nothing: the Work carries the envelope itself.
            data = b"" if immediate else encode_envelope(env)
            accepts.append(Accept(key, env.request_id, env.priority, data))
            admitted.append(i)
        return verdicts, admitted, accepts

    def _hand_refusal(self, env: Envelope, peer: ActrId) -> WireError | None:
        """The refusal of an envelope handed over in process, counted and logged, if any."""
        refusal: CallError | None
        if len(env.payload) > self._max_payload:  # as decoding would, before anything else
            refusal = EnvelopeTooLarge(
                f"payload of {len(env.payload)} bytes exceeds max_payload={self._max_payload}"
            )
        else:
            refusal = self._local_refusal(env, peer)
        if refusal is None:
            return None
        self._refused += 1
        if self._metrics is not None:
            self._metrics.on_refused(env.route_key, env.priority, refusal_reason(refusal))
        if not isinstance(refusal, PermissionDenied):  # logged where it was decided
            self._rate.log(
                log,
                logging.INFO,
                (peer, "refused"),
                "refused an envelope from %s: %s",
                peer,
                refusal,
            )
        return WireError.of(refusal)

    def _settle_handed(
        self, sender: LocalPeer, env: Envelope, outcome: Outcome
    ) -> WireError | None:
        verdict = self._settle(outcome, env, sender.actr_id, sender)
        if isinstance(outcome, Duplicate) and outcome.response is not None and env.kind == REQUEST:
            # Its answer is on record: the sender's waiter gets it now.
            answer = decode_envelope(outcome.response, max_payload=self._max_payload)
            sender.respond(self._local, env.request_id, answer.payload, answer.error)
        return verdict

    def _settle_local(
        self,
        sender: LocalPeer,
        envelopes: Sequence[Envelope],
        admitted: list[int],
        outcomes: list[Outcome],
        verdicts: Verdicts,
    ) -> None:
        for i, outcome in zip(admitted, outcomes, strict=True):
            verdicts[i] = self._settle_handed(sender, envelopes[i], outcome)

    def respond(
        self, responder: ActrId, request_id: str, payload: bytes, error: WireError | None
    ) -> None:
        """``responder`` answers a request this node sent it in process."""
        self._outgate.on_answer(responder, request_id, payload, error)

    def goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        """``peer`` (a node of this trio.run) is shutting down gracefully."""
        self._direct_senders.discard(peer)
        self._on_goodbye(peer, goodbye)

    async def _reply(self, peer: ActrId, lane: Lane, packets: list[bytes]) -> None:
        # Acks bypass the sender links (they are not sequenced); a peer that vanished simply
        # retransmits later, so a failed ack is only logged.
        try:
            await self._transport.send(peer, lane, packets)
        except Exception as exc:  # any transport failure: the peer retransmits
            self._rate.log(log, logging.INFO, (peer, "ack"), "could not ack %s: %s", peer, exc)


def _more_waiting(inbound: object) -> bool:
    """Whether more inbound items wait already (a memory channel says so; otherwise assume
    not, and send due acks after each batch)."""
    statistics = getattr(inbound, "statistics", None)
    if statistics is None:
        return False
    return bool(getattr(statistics(), "current_buffer_used", 0))
