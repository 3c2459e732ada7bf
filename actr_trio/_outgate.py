"""The outbound gate: everything a node sends goes through here.

Two routes, chosen per envelope:

* **In process** (``_local.py``): the target node runs in this ``trio.run`` (same realm) and
  nothing is in flight to it on the wire lane: the envelope is handed over as a Python object
  and accepted on this task's stack. Answers come straight back to the call's waiter.
* **The wire** (``_wire.py``): per (peer, lane) a :class:`~actr_trio._peerlane.PeerLane`
  numbers the encoded envelope on its link, hands it to the transport in the next batch,
  resends it until acknowledged, and a tell completes on the ack; a call when its response
  arrives.

Either way a send fails with the typed error of a refusal, or ``DeadlineExceeded`` at its
deadline. A durable node records every call and tell in its outbox before sending it, and
forgets it once it has its outcome; :meth:`OutGate.recover` resends what a crash left.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Sequence
from typing import Final, Protocol, final

import attrs
import trio

from ._deadlines import DeadlineTimer
from ._envelope import (
    TELL,
    AckInfo,
    Chunk,
    Envelope,
    Goodbye,
    WireError,
    decode_envelope,
    encode_envelope,
)
from ._ids import ActrId
from ._lanes import Lane, Priority
from ._local import Directory, LocalPeer, LocalRoute
from ._logging import LINK, RateLimiter
from ._mailbox import Outgoing
from ._peerlane import ChunkAcks, PeerLane, Waiter
from ._tokens import request_id as new_request_id
from ._wire import MAX_PEER_STATES, PEER_STATE_TIMEOUT, WireRoute, trio_deadline
from .errors import (
    CallError,
    DeadlineExceeded,
    EnvelopeTooLarge,
    PeerUnavailable,
    ShuttingDown,
)
from .transport._abc import Transport

__all__ = ["ChunkAcks", "OutGate", "OutGateStatistics", "trio_deadline"]

log = logging.getLogger(LINK)

# Seconds a recovered request without a deadline is resent for after a restart.
RECOVERY_BOUND: Final = 60.0


@final
@attrs.frozen
class OutGateStatistics:
    """Counters of the outbound gate."""

    sent: int
    retransmitted: int
    acked: int
    refused: int
    unacked: int
    calls_waiting: int
    batches: int
    overloaded: int
    recovered: int
    asked_again: int
    #: Responses dropped because they came from another peer than the one the request went
    #: to (a forgery, or a confused peer).
    forged_responses: int = 0
    #: Envelopes handed to nodes of this ``trio.run`` directly (accepted or duplicates).
    direct: int = 0
    #: Peers whose lanes were forgotten: quiet for ``peer_state_timeout`` (or the quietest
    #: beyond ``max_peer_states``) with nothing pending to them.
    evicted_peers: int = 0
    #: Acknowledgements this node sent as packets of their own, and those that rode on a
    #: packet going to the same peer and lane anyway (a response, the next call).
    acks_sent: int = 0
    acks_piggybacked: int = 0
    #: Batches a sender handed to the transport itself because its lane was idle (nothing
    #: queued, no batch in flight), instead of waking the lane's flusher task.
    direct_writes: int = 0


class Outbox(Protocol):
    """Where a durable node keeps its outstanding calls and tells (the SQLite mailbox)."""

    async def record_outgoing(self, *items: Outgoing) -> None: ...

    def finish_outgoing(self, request_id: str) -> None: ...

    async def outgoing(self) -> list[Outgoing]: ...


class OutGate:
    """Sends calls, tells, responses and stream chunks; resolves acks and responses.

    With an ``outbox`` (durable nodes), every call and tell is recorded before it is sent and
    forgotten once it has its outcome; :meth:`recover` resends what a crash left outstanding.
    ``deadlines`` (a running DeadlineTimer) fails in-process calls at their deadline.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_payload: int,
        deadlines: DeadlineTimer,
        outbox: Outbox | None = None,
        peer_state_timeout: float = PEER_STATE_TIMEOUT,
        max_peer_states: int = MAX_PEER_STATES,
    ) -> None:
        self.transport = transport
        self._outbox = outbox
        self.local: ActrId | None = None
        self._max_payload = max_payload
        self._calls: dict[str, Waiter] = {}
        # Resend and expiry lines repeat while a peer is away: one per peer, lane and kind
        # every RATE_INTERVAL seconds.
        self._rate = RateLimiter(trio.current_time)
        # Lanes of peers gone quiet with nothing pending are forgotten (WireRoute.evict).
        self._wire = WireRoute(
            transport,
            self._calls,
            self._rate,
            deadlines,
            peer_state_timeout=peer_state_timeout,
            max_peer_states=max_peer_states,
        )
        self._route: LocalRoute | None = None
        self._deadlines = deadlines  # run by the node; fails in-process calls at their deadline
        self._direct_peers: set[ActrId] = set()  # reached in process (to say goodbye to)
        self._closed = False
        self._recovered = 0
        self._forged = 0

    def statistics(self) -> OutGateStatistics:
        wire, route = self._wire, self._route
        shared = wire.shared
        return OutGateStatistics(
            shared.sent,
            shared.retransmitted,
            shared.acked,
            shared.refused,
            wire.unacked(),
            len(self._calls),
            shared.batches,
            wire.overloaded + (0 if route is None else route.overloaded),
            self._recovered,
            wire.asked_again,
            self._forged,
            0 if route is None else route.delivered,
            wire.evicted,
            acks_sent=shared.acks_sent,
            acks_piggybacked=shared.acks_piggybacked,
            direct_writes=shared.direct_writes,
        )

    def lane_summary(self) -> dict[Lane, tuple[int, int]]:
        """Per wire lane in use: (peers linked on it, envelopes not acknowledged yet)."""
        return self._wire.lane_summary()

    def use_directory(self, directory: Directory, me: LocalPeer) -> None:
        """Send to the nodes of ``directory`` in process (``me``: this node's own entry)."""
        self._route = LocalRoute(directory, me, self._calls, self._deadlines, self._deliver_encoded)

    async def run(
        self, local: ActrId, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the wire route's flusher tasks until cancelled."""
        self.local = local
        await self._wire.run(task_status=task_status)

    @property
    def local_id(self) -> ActrId:
        """This node's identity (once :meth:`run` started)."""
        assert self.local is not None
        return self.local

    def close(self) -> None:
        """Refuse new sends (waiters of unacked envelopes still get their outcome)."""
        self._closed = self._wire.closed = True

    def peers(self) -> set[ActrId]:
        """Peers that acknowledged something on some lane, or were reached in process (the
        ones to say goodbye to)."""
        return self._wire.peers() | self._direct_peers

    def _local_peer(self, target: ActrId, lane: Lane) -> LocalPeer | None:
        """``target`` if it runs in this process and nothing is in flight to it on ``lane``'s
        wire link (what is, goes first: per-sender FIFO holds across the switch of routes)."""
        route = self._route
        if route is None:
            return None
        peer = route.directory.peers.get(target)
        if peer is None:
            return None
        if self._wire.busy(target, lane):
            return None
        if target not in self._direct_peers:
            self._direct_peers.add(target)
            log.info("linked to %s in process", target)
        return peer

    def local_reply(self, peer: ActrId, reply: LocalPeer | None) -> LocalPeer | None:
        """Where to hand the answer to a request from ``peer`` in process, if anywhere:
        ``reply`` (the node that sent it directly) while it runs, else ``peer``'s current
        entry in the directory (say it restarted since)."""
        if reply is not None and reply.running:
            return reply
        route = self._route
        return None if route is None else route.directory.peers.get(peer)

    def unacked_to(self, peer: ActrId) -> int:
        """Packets sent to ``peer`` that it has not acknowledged yet, on every lane."""
        return self._wire.unacked_to(peer)

    async def say_goodbye(self, peer: ActrId, goodbye: Goodbye) -> bool:
        """Tell ``peer`` that this node is leaving; True once the transport took it.

        Sent on the goodbye lane (``_wire.GOODBYE_LANE``) after what that lane already carries (one sender at a
        time). Bound it with a cancel scope: opening a link to a peer that left meanwhile waits.
        A peer in this process with no wire link from here gets it at once, in process
        (this node must have left the directory first: nothing reaches it that way after).
        """
        local = self._route.directory.peers.get(peer) if self._route is not None else None
        if local is not None and not self._wire.linked(peer):
            await trio.lowlevel.checkpoint()
            local.goodbye(self.local_id, goodbye)
            return True
        return await self._wire.say_goodbye(peer, goodbye)

    def on_goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        """``peer`` is shutting down gracefully: stop sending to it and forget its links.

        Calls and tells it never acknowledged fail with ``PeerUnavailable`` at once (they were
        not delivered: sending them again, to it once back or elsewhere, is safe). Responses to
        it are dropped (its retry after a restart gets the stored response). A call it
        acknowledged keeps waiting while the goodbye says answers may be pending (it kept the
        request for its next start, or its answer is still on the way); otherwise it fails
        with ``PeerUnavailable`` too: nobody will answer it.
        """
        gone = PeerUnavailable(f"{peer} shut down before accepting it (not delivered)")
        dropped, failed = self._wire.drop(peer, gone)
        if not goodbye.answers_pending:
            for request_id, waiter in list(self._calls.items()):
                if waiter.peer == peer and waiter.accepted:
                    del self._calls[request_id]
                    failed += 1
                    waiter.fail(PeerUnavailable(f"{peer} shut down without answering"))
        self.transport.forget(peer)
        log.info(
            "%s said goodbye (shutting down)%s%s",
            peer,
            f"; dropped {dropped} unacknowledged packets, {failed} calls/tells failed"
            if dropped or failed
            else "",
            "; calls it accepted wait for its answer" if goodbye.answers_pending else "",
        )

    def _check(self, payload: bytes, lane: Lane) -> None:
        if self._closed:
            raise ShuttingDown("node is shutting down")
        if len(payload) > self._max_payload:
            raise EnvelopeTooLarge(
                f"payload of {len(payload)} bytes exceeds max_payload={self._max_payload}"
            )
        if lane is not Lane.RELIABLE and lane is not Lane.SIGNAL:  # not lane.sequenced, faster
            raise ValueError(f"calls and tells use Lane.SIGNAL or Lane.RELIABLE, not {lane!r}")

    def request(
        self,
        target: ActrId,
        route_key: str,
        payload: bytes,
        kind: int,
        lane: Lane,
        priority: Priority,
        timeout: float,
        within: float,
        traceparent: str,
        request_id: str | None = None,
        tracestate: str = "",
    ) -> Awaitable[bytes]:
        """Send a REQUEST (its awaitable gives the response payload) or a TELL (``b""`` once
        the receiver's mailbox committed it), within ``timeout`` seconds and by ``within`` (a
        trio deadline: the handler's own, when sent from one). Await the result at once.

        Not a coroutine itself: it picks the route and hands back that route's coroutine (one
        coroutine fewer per envelope); bad arguments raise here.

        Raises:
            DeadlineExceeded: no answer by the deadline.
            CallError: the receiver refused it or the handler failed (typed by the wire kind).
            PeerUnavailable: the target was never reachable.
        """
        self._check(payload, lane)
        deadline, deadline_ms = _deadline(timeout, within)
        if deadline_ms < 0:
            return _passed(route_key, target)
        env = Envelope(
            kind,
            route_key,
            payload,
            request_id or new_request_id(),
            traceparent,
            self.local_id,
            target,
            priority,
            lane,
            deadline_ms,
            None,
            tracestate,
        )
        if self._outbox is not None:
            return self._request_durably(self._outbox, env, deadline)
        peer = self._local_peer(target, lane)
        if peer is not None:
            assert self._route is not None
            return self._route.deliver(peer, env, deadline)
        return self._wire.deliver(env, encode_envelope(env), deadline)

    async def _request_durably(self, outbox: Outbox, env: Envelope, deadline: float) -> bytes:
        """Record ``env`` in the outbox, send it, forget it once it has its outcome."""
        data = encode_envelope(env)
        record = Outgoing(
            env.request_id, str(env.target), int(env.lane), env.kind, data, env.deadline_ms
        )
        await outbox.record_outgoing(record)
        try:
            assert env.target is not None
            peer = self._local_peer(env.target, env.lane)
            if peer is not None:
                assert self._route is not None
                return await self._route.deliver(peer, env, deadline)
            return await self._wire.deliver(env, data, deadline)
        finally:
            outbox.finish_outgoing(env.request_id)

    async def tell_many(
        self,
        target: ActrId,
        route_key: str,
        payloads: Sequence[bytes],
        *,
        lane: Lane,
        priority: Priority,
        timeout: float,
        within: float,
        traceparent: str,
        tracestate: str = "",
    ) -> None:
        """Send TELLs, one envelope per payload, as one batch: one accept and one commit at
        the receiver (in process: one hand-over; over the wire: one frame). Returns once
        every one is committed.

        Raises:
            like :meth:`request`; nothing is retried past the first refusal that is not
            ``Overloaded`` (what was accepted before stays accepted).
        """
        for payload in payloads:
            self._check(payload, lane)
        if not payloads:
            await trio.lowlevel.checkpoint()
            return
        deadline, deadline_ms = _deadline(timeout, within)
        if deadline_ms < 0:
            await _passed(route_key, target)
        local = self.local_id
        envs = [
            Envelope(
                TELL,
                route_key,
                p,
                new_request_id(),
                traceparent,
                local,
                target,
                priority,
                lane,
                deadline_ms,
                None,
                tracestate,
            )
            for p in payloads
        ]
        outbox = self._outbox
        if outbox is not None:
            await self._record_all(outbox, envs)
        try:
            left = envs
            peer = self._local_peer(target, lane)
            if peer is not None:
                assert self._route is not None
                left = await self._route.deliver_many(peer, envs, deadline)
            if left:
                await self._wire.deliver_many(left, deadline)
        finally:
            if outbox is not None:
                for env in envs:
                    outbox.finish_outgoing(env.request_id)

    async def _record_all(self, outbox: Outbox, envs: list[Envelope]) -> None:
        """Record a batch in the outbox in one operation (one commit; one error if any)."""
        await outbox.record_outgoing(
            *(
                Outgoing(
                    env.request_id,
                    str(env.target),
                    int(env.lane),
                    TELL,
                    encode_envelope(env),
                    env.deadline_ms,
                )
                for env in envs
            )
        )

    async def _deliver_encoded(self, env: Envelope, deadline: float) -> bytes:
        """Over the wire (``env`` is not encoded yet): how the in-process route falls back
        when the receiver left before accepting."""
        return await self._wire.deliver(env, encode_envelope(env), deadline)

    async def recover(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Resend what the outbox held at start (same request ids), then return.

        The receiver's dedupe table recognises what it already had; responses to recovered
        calls have no waiter any more and are counted (``statistics().recovered``) and logged.
        """
        items = [] if self._outbox is None else await self._outbox.outgoing()
        task_status.started()
        if items:
            log.info("%s: resending %d outstanding requests", self.local, len(items))
        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(self._recover_one, item)

    async def _recover_one(self, item: Outgoing) -> None:
        assert self._outbox is not None
        try:
            env = decode_envelope(item.data, max_payload=self._max_payload)
            data = item.data
            if env.caller != self.local:
                # Recorded before the node got a new identity: receivers refuse an envelope
                # whose caller field is not who sent it.
                env.caller = self.local
                data = encode_envelope(env)
            deadline = trio_deadline(item.deadline_ms, RECOVERY_BOUND)
            with trio.move_on_at(deadline):
                outcome = await self._resend(env, data, deadline)
                self._recovered += 1
                log.info("recovered %s to %s: %s", item.request_id, env.target, outcome)
        except Exception as exc:  # any failure: it is logged, the request is given up
            log.warning("could not resend %s to %s: %s", item.request_id, item.target, exc)
        finally:
            self._outbox.finish_outgoing(item.request_id)

    async def _resend(self, env: Envelope, data: bytes, deadline: float) -> object:
        """Send a recovered request again (same request id); its outcome, for the log."""
        assert env.target is not None
        peer = self._local_peer(env.target, env.lane)
        if peer is not None:
            assert self._route is not None
            try:
                await self._route.deliver(peer, env, deadline)
            except CallError as exc:
                return exc
            return "ok"
        waiter = await self._wire.send_and_wait(
            env.target, env.lane, env.kind, env.request_id, data, math.inf
        )
        return waiter.error or "ok"

    def respond(self, peer: ActrId, lane: Lane, response: bytes, deadline_ms: int) -> None:
        """Queue an encoded RESPONSE envelope to ``peer`` over the wire (never blocks the
        scheduler); see :meth:`WireRoute.respond`."""
        self._wire.respond(peer, lane, response, deadline_ms)

    async def send_chunk(
        self,
        peer: ActrId,
        lane: Lane,
        chunk: Chunk,
        *,
        acks: ChunkAcks | None = None,
        deadline: float = math.inf,
    ) -> None:
        """Queue a stream chunk; waits while that peer's outbox is full (backpressure).

        On a Signal/Reliable lane pass ``acks``: the chunk is numbered on the link, resent until
        acknowledged or past ``deadline`` (trio clock), and settled in ``acks``; it also waits
        while the link's window is full. On LatencyFirst it is sent once, unacknowledged.
        """
        if len(chunk.payload) > self._max_payload:
            raise EnvelopeTooLarge(
                f"chunk of {len(chunk.payload)} bytes exceeds max_payload={self._max_payload}"
            )
        if lane.sequenced and acks is None:
            raise ValueError(f"a chunk on {lane!r} needs a ChunkAcks to count its acknowledgement")
        local = self._local_peer(peer, lane)
        if local is not None:
            # In process: the receiver's registry takes it (or refuses it) on this stack; on
            # a reliable lane that is the acknowledgement.
            refusal = await local.deliver_chunk(self.local_id, lane, chunk)
            if acks is not None:
                acks.settle_now(refusal, end=chunk.end)
            return
        await self._wire.send_chunk(peer, lane, chunk, acks, deadline)

    def on_ack(self, peer: ActrId, lane: Lane, ack: AckInfo) -> None:
        self._wire.on_ack(peer, lane, ack)

    def owe_ack(
        self,
        peer: ActrId,
        lane: Lane,
        epoch: int,
        cumulative: int,
        refused: Sequence[tuple[int, WireError]],
        *,
        urgent: bool,
    ) -> PeerLane | None:
        """The inbound gate committed ``peer``'s packets up to ``cumulative`` on ``lane``: the
        ack leaves with the next packet going there (see :meth:`WireRoute.owe_ack`)."""
        return self._wire.owe_ack(peer, lane, epoch, cumulative, refused, urgent=urgent)

    def on_response(self, peer: ActrId, env: Envelope) -> None:
        """A RESPONSE arrived on ``peer``'s link (``peer`` is the authenticated link end).

        Only the peer the request was sent to may answer it: a response from anyone else is
        dropped, counted (``statistics().forged_responses``) and logged at WARNING, and the
        call keeps waiting for the real answer.
        """
        self.on_answer(peer, env.request_id, env.payload, env.error)

    def on_answer(
        self, peer: ActrId, request_id: str, payload: bytes, error: WireError | None
    ) -> None:
        """``peer`` answered ``request_id`` (over the wire, or in process: then ``peer`` is the
        node that handled it). Only the peer the request was sent to may answer it."""
        waiter = self._calls.get(request_id)
        if waiter is None:
            return  # the caller gave up (deadline) or this is a duplicate
        if waiter.peer != peer:
            self._forged += 1
            self._rate.log(
                log,
                logging.WARNING,
                (peer, "forged response"),
                "dropped a response from %s to a request sent to %s (forged?)",
                peer,
                waiter.peer,
            )
            return
        del self._calls[request_id]
        if error is not None:
            waiter.fail(error)
        else:
            waiter.succeed(payload)

    async def wait_acked(self) -> None:
        """Return once nothing sent is waiting for an ack (bound it with a cancel scope)."""
        await self._wire.wait_acked()


def _deadline(timeout: float, within: float) -> tuple[float, int]:
    """A send's deadline on the trio clock, and as it travels: unix milliseconds (peers share
    no trio clock), or -1 when ``within`` has passed already."""
    now = trio.current_time()
    deadline = now + timeout
    if within < deadline:
        deadline = within
        if deadline <= now:
            return deadline, -1
    return deadline, int(time.time() * 1000) + int((deadline - now) * 1000)


async def _passed(route_key: str, target: ActrId) -> bytes:
    await trio.lowlevel.checkpoint()
    raise DeadlineExceeded(f"{route_key} to {target}: the deadline passed before it was sent")
