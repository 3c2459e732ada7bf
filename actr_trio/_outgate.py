"""The outbound gate: everything a node sends goes through here.

Per (peer, lane) there is one :class:`_PeerLane`: a :class:`~actr_trio._link.SendLink` that
numbers Signal/Reliable envelopes and keeps them until acknowledged, an outbox of encoded
packets, and one flusher task (owned by :meth:`OutGate.run`'s nursery) that hands the whole
outbox to the transport in one ``send``. While a send is in flight new packets accumulate, so
batches grow with load and a lone packet goes out at once: coalescing without a timer.

When acks stop making progress for ``rto`` seconds, the flusher retransmits every unacked
packet in order (go-back-N, see ``_link.py``), doubling ``rto`` up to ``RTO_MAX``. Waiters:
a tell completes when its envelope is acked; a call when its response arrives; either fails
with the typed error of a refusal, or ``DeadlineExceeded`` at its deadline.

Stream chunks on a Signal/Reliable lane ride the same link (numbered, acknowledged once the
receiver's stream registry took them, resent like envelopes); each stream counts what became of
its chunks in a :class:`ChunkAcks`. LatencyFirst chunks are unsequenced: sent once, never acked.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Sequence
from typing import Final, Protocol, final

import attrs
import trio

from ._envelope import (
    REQUEST,
    RESPONSE,
    TELL,
    AckInfo,
    Chunk,
    Envelope,
    Goodbye,
    WireError,
    decode_envelope,
    encode_chunk,
    encode_chunk_body,
    encode_envelope,
    encode_goodbye,
    encode_sequenced,
)
from ._ids import ActrId
from ._lanes import Lane, Priority
from ._link import SendLink
from ._logging import LINK, RateLimiter
from ._mailbox import Outgoing
from .errors import (
    DeadlineExceeded,
    EnvelopeTooLarge,
    Overloaded,
    PeerUnavailable,
    ShuttingDown,
    TransportError,
)
from .transport._abc import Transport

log = logging.getLogger(LINK)

RTO_MIN: Final = 0.2
RTO_MAX: Final = 2.0
# After this many retransmission timeouts in a row the link is dropped and opened anew.
FORGET_AFTER: Final = 2
# Unacknowledged envelopes per (peer, lane) before senders wait: bounds memory and lets a
# retransmission (which resends them all) stay a modest burst.
WINDOW: Final = 4096
# Encoded unsequenced packets (stream chunks) waiting per (peer, lane) before senders wait.
OUTBOX_LIMIT: Final = 1024
# Backoff between resends of an envelope the receiver refused as overloaded (jittered).
OVERLOADED_BACKOFF_MIN: Final = 0.01
OVERLOADED_BACKOFF_MAX: Final = 1.0
# A call acknowledged but unanswered this long is asked again (same request id), doubling.
RESPONSE_RETRY_MIN: Final = 1.0
RESPONSE_RETRY_MAX: Final = 8.0
# Seconds a recovered request without a deadline is resent for after a restart.
RECOVERY_BOUND: Final = 60.0
# Seconds a response to a request without a deadline is resent for until acknowledged.
RESPONSE_BOUND: Final = 60.0
# New (peer, lane) flushers waiting to be started by run(); consumed at once, so small.
SPAWN_BUFFER: Final = 256
# The _Outgoing.kind of a stream chunk on a sequenced link (not an envelope kind on the wire).
CHUNK: Final = -1
# The lane a goodbye travels on: fully reliable and ordered.
GOODBYE_LANE: Final = Lane.SIGNAL


class _Waiter:
    """Where a waiting call/tell learns its outcome."""

    __slots__ = ("accepted", "error", "event", "payload", "peer")

    def __init__(self, peer: ActrId) -> None:
        self.event = trio.Event()
        self.payload: bytes = b""
        self.error: WireError | BaseException | None = None
        self.peer = peer
        # The peer acknowledged the request: from then on only its answer or the deadline
        # settle the call (a lost link does not: the peer answers or replays it).
        self.accepted = False

    def succeed(self, payload: bytes = b"") -> None:
        if not self.event.is_set():
            self.payload = payload
            self.event.set()

    def fail(self, error: WireError | BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


@attrs.define(slots=True, eq=False)
class _Outgoing:
    kind: int
    request_id: str
    data: bytes
    deadline: float
    waiter: _Waiter | None
    slot: bool = True  # holds a place in the window (responses do not: they never wait)
    acked: bool = False
    dropped: bool = False  # left unsent when its link failed (its waiter keeps waiting)
    stream: ChunkAcks | None = None  # for CHUNK: the stream that counts its acknowledgement


@final
class ChunkAcks:
    """What became of the chunks one stream sent on a sequenced lane.

    The gate settles each chunk once: acknowledged (the receiver's registry took it), refused
    (e.g. no callback for the stream; the reason is kept) or failed (link given up: past its
    deadline, peer unreachable, shutting down).
    """

    def __init__(self) -> None:
        self.acked = 0  # data chunks acknowledged
        self.end_acked = False
        self.reason: WireError | BaseException | None = None  # the first refusal or failure
        self._pending: set[_Outgoing] = set()
        self._end: _Outgoing | None = None
        self._settled = trio.Event()

    def track(self, item: _Outgoing, *, end: bool) -> None:
        item.stream = self
        self._pending.add(item)
        if end:
            self._end = item

    def settle(self, item: _Outgoing, failure: WireError | BaseException | None) -> None:
        if item not in self._pending:
            return
        self._pending.discard(item)
        if failure is not None:
            if self.reason is None:
                self.reason = failure
        elif item is self._end:
            self.end_acked = True
        else:
            self.acked += 1
        if not self._pending:
            self._settled.set()

    async def wait(self) -> None:
        """Return once every tracked chunk is settled (bound it with a cancel scope)."""
        while self._pending:
            self._settled = trio.Event()
            await self._settled.wait()
        await trio.lowlevel.checkpoint()

    def abandon(self) -> None:
        """Nobody waits for the pending chunks any more: the link may expire them at once."""
        now = trio.current_time()
        for item in self._pending:
            item.deadline = min(item.deadline, now)


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


class _PeerLane:
    def __init__(self, gate: OutGate, peer: ActrId, lane: Lane) -> None:
        self.gate = gate
        self.peer = peer
        self.lane = lane
        self.link: SendLink[_Outgoing] = SendLink()
        self.outbox: list[bytes] = []
        self.wake = trio.Event()
        self.drained = trio.Event()
        self.flushed = trio.Event()
        self.window = trio.Semaphore(WINDOW)
        self.rto = RTO_MIN
        self.last_progress = trio.current_time()
        self.ever_acked = False
        self.timeouts = 0  # retransmission timeouts in a row, without an ack making progress
        # Held while a batch is with the transport: one sender at a time keeps the lane's order.
        self.sending = trio.Lock()
        # Set when the peer said goodbye: the gate dropped this lane and its flusher returns.
        self.closed = False

    def __repr__(self) -> str:
        return f"<PeerLane {self.peer} {self.lane.name} unacked={len(self.link)}>"

    def push(self, packet: bytes) -> None:
        self.outbox.append(packet)
        self.wake.set()

    def stamp(self, item: _Outgoing) -> None:
        if not self.link:
            self.last_progress = trio.current_time()
        seq = self.link.stamp(item)
        self.push(self._packet(seq, item))

    def retransmit(self, items: Sequence[tuple[int, _Outgoing]]) -> None:
        self.gate._retransmitted += len(items)
        for seq, item in items:
            self.push(self._packet(seq, item))

    def _packet(self, seq: int, item: _Outgoing) -> bytes:
        return encode_sequenced(self.link.epoch, seq, item.data, chunk=item.kind == CHUNK)

    def on_ack(self, ack: AckInfo) -> None:
        if ack.reset:
            if ack.epoch == self.link.epoch:
                self.gate._rate.log(
                    log,
                    logging.INFO,
                    (self.peer, self.lane, "reset"),
                    "%s asked for a new %s link (it restarted?); resending %d packets",
                    self.peer,
                    self.lane.name,
                    len(self.link),
                )
                self.retransmit(self.link.restart())
            return
        done = self.link.on_ack(ack.epoch, ack.cumulative)
        if not done:
            return
        self.ever_acked = True
        self.timeouts = 0
        self.rto = RTO_MIN
        self.last_progress = trio.current_time()
        gate = self.gate
        gate._acked += len(done)
        for seq, item in done:
            item.acked = True
            if item.slot:
                self.window.release()
            refusal = ack.refused.get(seq)
            if item.stream is not None:
                item.stream.settle(item, refusal)
            if refusal is not None:
                gate._refused += 1
                if item.waiter is not None:
                    gate._calls.pop(item.request_id, None)
                    item.waiter.fail(refusal)
            elif item.waiter is not None:
                item.waiter.accepted = True
                if item.kind == TELL:
                    item.waiter.succeed()
        if not self.link:
            self.drained.set()

    def fail_all(self, error: BaseException) -> None:
        for _, item in self.link.unacked():
            if item.slot:
                self.window.release()
            if item.stream is not None:
                item.stream.settle(item, error)
            waiter = item.waiter
            if waiter is None:
                continue
            if waiter.accepted and isinstance(error, PeerUnavailable):
                # Asked again after the peer had accepted it: the peer answers it (or replays
                # it at its next start), so only that answer or the deadline settles the call.
                item.dropped = True
                continue
            self.gate._calls.pop(item.request_id, None)
            waiter.fail(error)
        self.link = SendLink()
        self.outbox.clear()
        self.drained.set()

    def close(self, error: PeerUnavailable) -> None:
        """The peer said goodbye: fail what it never acknowledged, stop the flusher."""
        self.closed = True
        self.fail_all(error)
        self.wake.set()
        self.flushed.set()

    def expire(self, now: float) -> None:
        """Forget the link when every unacked item is past its deadline (nobody waits)."""
        items = self.link.unacked()
        if items and all(item.deadline <= now for _, item in items):
            self.gate._rate.log(
                log,
                logging.INFO,
                (self.peer, self.lane, "expired"),
                "%s: %d packets to %s expired unacknowledged",
                self.lane.name,
                len(items),
                self.peer,
            )
            self.fail_all(DeadlineExceeded("deadline passed before the peer acknowledged"))

    async def flush_loop(self) -> None:
        while not self.closed:
            if not self.outbox:
                self.wake = trio.Event()
                if self.link:
                    with trio.move_on_at(self.last_progress + self.rto):
                        await self.wake.wait()
                    now = trio.current_time()
                    if not self.outbox and self.link and now >= self.last_progress + self.rto:
                        self.expire(now)
                        if self.link:
                            self.timeouts += 1
                            if self.timeouts % FORGET_AFTER == 0:
                                # Silence although the peer is registered: it may have
                                # restarted behind a link that looks alive. Start a new one.
                                self.gate._rate.log(
                                    log,
                                    logging.INFO,
                                    (self.peer, self.lane, "silent"),
                                    "%s: no ack for %.1f s on %s; resending %d packets "
                                    "over a new link",
                                    self.peer,
                                    now - self.last_progress,
                                    self.lane.name,
                                    len(self.link),
                                )
                                self.gate.transport.forget(self.peer)
                            self.retransmit(self.link.unacked())
                            self.rto = min(self.rto * 2, RTO_MAX)
                            self.last_progress = now
                    continue
                await self.wake.wait()
                continue
            async with self.sending:
                if not await self.send_outbox():
                    return

    async def send_outbox(self) -> bool:
        """Hand the whole outbox to the transport (caller holds ``sending``); False once closed."""
        batch, self.outbox = self.outbox, []
        self.flushed.set()
        if not batch:
            return True
        self.gate._batches += 1
        self.gate._sent += len(batch)
        try:
            await self.gate.transport.send(self.peer, self.lane, batch)
        except PeerUnavailable as exc:
            if not self.ever_acked:
                self.fail_all(exc)
            else:
                self.gate._rate.log(
                    log,
                    logging.INFO,
                    (self.peer, self.lane, "unreachable"),
                    "%s unreachable (%s); will resend %d packets on %s",
                    self.peer,
                    exc,
                    len(self.link),
                    self.lane.name,
                )
        except ShuttingDown:
            self.fail_all(ShuttingDown("node is shutting down"))
            return False
        except TransportError as exc:
            self.gate._rate.log(
                log,
                logging.WARNING,
                (self.peer, self.lane, "failed"),
                "sending to %s failed: %s",
                self.peer,
                exc,
            )
        return True

    async def send_inline(self) -> None:
        """Send from the calling task when no batch is in flight (saves a task switch);
        otherwise the flusher picks the packet up with the batch that follows."""
        try:
            self.sending.acquire_nowait()
        except trio.WouldBlock:
            return
        try:
            await self.send_outbox()
        finally:
            self.sending.release()


class Outbox(Protocol):
    """Where a durable node keeps its outstanding calls and tells (the SQLite mailbox)."""

    async def record_outgoing(self, item: Outgoing) -> None: ...

    def finish_outgoing(self, request_id: str) -> None: ...

    async def outgoing(self) -> list[Outgoing]: ...


class OutGate:
    """Sends calls, tells, responses and stream chunks; resolves acks and responses.

    With an ``outbox`` (durable nodes), every call and tell is recorded before it is sent and
    forgotten once it has its outcome; :meth:`recover` resends what a crash left outstanding.
    """

    def __init__(
        self, transport: Transport, *, max_payload: int, outbox: Outbox | None = None
    ) -> None:
        self.transport = transport
        self._outbox = outbox
        self.local: ActrId | None = None
        self._max_payload = max_payload
        self._lanes: dict[tuple[ActrId, Lane], _PeerLane] = {}
        self._calls: dict[str, _Waiter] = {}
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[_PeerLane](SPAWN_BUFFER)
        self._closed = False
        self._sent = self._retransmitted = self._acked = self._refused = self._batches = 0
        self._overloaded = 0
        self._recovered = 0
        self._asked_again = 0
        self._forged = 0
        # Resend and expiry lines repeat while a peer is away: one per peer, lane and kind
        # every RATE_INTERVAL seconds.
        self._rate = RateLimiter(trio.current_time)

    def statistics(self) -> OutGateStatistics:
        return OutGateStatistics(
            self._sent,
            self._retransmitted,
            self._acked,
            self._refused,
            sum(len(pl.link) for pl in self._lanes.values()),
            len(self._calls),
            self._batches,
            self._overloaded,
            self._recovered,
            self._asked_again,
            self._forged,
        )

    async def run(
        self, local: ActrId, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the flusher tasks until cancelled."""
        self.local = local
        with self._spawn_recv:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for pl in self._spawn_recv:
                    nursery.start_soon(pl.flush_loop, name=repr(pl))

    def close(self) -> None:
        """Refuse new sends (waiters of unacked envelopes still get their outcome)."""
        self._closed = True

    def peers(self) -> set[ActrId]:
        """Peers that acknowledged something on some lane (the ones to say goodbye to)."""
        return {pl.peer for pl in self._lanes.values() if pl.ever_acked}

    def unacked_to(self, peer: ActrId) -> int:
        """Packets sent to ``peer`` that it has not acknowledged yet, on every lane."""
        return sum(len(pl.link) for pl in self._lanes.values() if pl.peer == peer)

    async def say_goodbye(self, peer: ActrId, goodbye: Goodbye) -> bool:
        """Tell ``peer`` that this node is leaving; True once the transport took it.

        Sent on :data:`GOODBYE_LANE` after what that lane already carries (one sender at a
        time). Bound it with a cancel scope: opening a link to a peer that left meanwhile waits.
        """
        packet = encode_goodbye(goodbye)
        pl = self._lanes.get((peer, GOODBYE_LANE))
        try:
            if pl is None:
                await self.transport.send(peer, GOODBYE_LANE, [packet])
            else:
                async with pl.sending:
                    await self.transport.send(peer, GOODBYE_LANE, [packet])
        except (TransportError, ShuttingDown) as exc:
            log.debug("could not say goodbye to %s: %s", peer, exc)
            return False
        return True

    def on_goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        """``peer`` is shutting down gracefully: stop sending to it and forget its links.

        Calls and tells it never acknowledged fail with ``PeerUnavailable`` at once (they were
        not delivered: sending them again, to it once back or elsewhere, is safe). Responses to
        it are dropped (its retry after a restart gets the stored response). A call it
        acknowledged keeps waiting while the goodbye says answers may be pending (it kept the
        request for its next start, or its answer is still on the way); otherwise it fails
        with ``PeerUnavailable`` too: nobody will answer it.
        """
        dropped = failed = 0
        gone = PeerUnavailable(f"{peer} shut down before accepting it (not delivered)")
        for key in [key for key in self._lanes if key[0] == peer]:
            pl = self._lanes.pop(key)
            dropped += len(pl.link)
            failed += sum(
                1
                for _, item in pl.link.unacked()
                if item.waiter is not None and not item.waiter.accepted
            )
            pl.close(gone)
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

    def _lane(self, peer: ActrId, lane: Lane) -> _PeerLane:
        pl = self._lanes.get((peer, lane))
        if pl is None:
            if self._closed:
                raise ShuttingDown("node is shutting down")
            pl = _PeerLane(self, peer, lane)
            try:
                self._spawn_send.send_nowait(pl)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                raise PeerUnavailable(f"cannot open a link to {peer} now") from None
            self._lanes[(peer, lane)] = pl
        return pl

    def new_request_id(self) -> str:
        """128 random bits: unique across restarts, and unpredictable, so a peer that saw some
        of this node's request ids cannot guess the next one (defence in depth: a response is
        accepted only from the peer the request went to anyway)."""
        return secrets.token_hex(16)

    def _check(self, payload: bytes, lane: Lane) -> None:
        if self._closed:
            raise ShuttingDown("node is shutting down")
        if len(payload) > self._max_payload:
            raise EnvelopeTooLarge(
                f"payload of {len(payload)} bytes exceeds max_payload={self._max_payload}"
            )
        if not lane.sequenced:
            raise ValueError(f"calls and tells use Lane.SIGNAL or Lane.RELIABLE, not {lane!r}")

    async def request(
        self,
        target: ActrId,
        route_key: str,
        payload: bytes,
        *,
        kind: int,
        lane: Lane,
        priority: Priority,
        deadline: float,
        trace_id: str,
        request_id: str | None = None,
    ) -> bytes:
        """Send a REQUEST (returns the response payload) or a TELL (returns b"" once acked).

        Raises:
            DeadlineExceeded: no answer by ``deadline`` (trio clock).
            CallError: the receiver refused it or the handler failed (typed by the wire kind).
            PeerUnavailable: the target was never reachable.
        """
        self._check(payload, lane)
        assert self.local is not None
        request_id = request_id or self.new_request_id()
        env = Envelope(
            kind=kind,
            route_key=route_key,
            payload=payload,
            request_id=request_id,
            trace_id=trace_id,
            caller=self.local,
            target=target,
            priority=priority,
            lane=lane,
            deadline_ms=wire_deadline(deadline),
        )
        data = encode_envelope(env)
        if self._outbox is not None:
            record = Outgoing(request_id, str(target), int(lane), kind, data, env.deadline_ms)
            await self._outbox.record_outgoing(record)
        try:
            return await self._deliver(target, route_key, lane, kind, request_id, data, deadline)
        finally:
            if self._outbox is not None:
                self._outbox.finish_outgoing(request_id)

    async def _deliver(
        self,
        target: ActrId,
        route_key: str,
        lane: Lane,
        kind: int,
        request_id: str,
        data: bytes,
        deadline: float,
    ) -> bytes:
        backoff = OVERLOADED_BACKOFF_MIN
        with trio.move_on_at(deadline) as scope:
            while True:
                waiter = await self._send_and_wait(target, lane, kind, request_id, data, deadline)
                error = waiter.error
                if not (isinstance(error, WireError) and error.kind == Overloaded.wire_kind):
                    break
                # The receiver's mailbox is full: back off and resend the same request_id (the
                # receiver never accepted it), until the deadline.
                self._overloaded += 1
                await trio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, OVERLOADED_BACKOFF_MAX)
        if scope.cancelled_caught:
            if backoff > OVERLOADED_BACKOFF_MIN:
                raise Overloaded(f"{route_key} to {target}: receiver overloaded until the deadline")
            raise DeadlineExceeded(f"{route_key} to {target}: no answer before the deadline")
        if isinstance(waiter.error, WireError):
            raise waiter.error.to_exception()
        if waiter.error is not None:
            raise waiter.error
        return waiter.payload

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
            target = ActrId.parse(item.target)
            data = self._from_local(item.data)
            with trio.move_on_at(trio_deadline(item.deadline_ms, RECOVERY_BOUND)):
                waiter = await self._send_and_wait(
                    target, Lane(item.lane), item.kind, item.request_id, data, math.inf
                )
                self._recovered += 1
                log.info("recovered %s to %s: %s", item.request_id, target, waiter.error or "ok")
        except Exception as exc:  # any failure: it is logged, the request is given up
            log.warning("could not resend %s to %s: %s", item.request_id, item.target, exc)
        finally:
            self._outbox.finish_outgoing(item.request_id)

    def _from_local(self, data: bytes) -> bytes:
        """``data`` naming this node as its caller (receivers refuse an envelope whose caller
        field is not the link's peer): a request recorded before the node got a new identity
        is re-encoded, anything else is returned as it is."""
        env = decode_envelope(data, max_payload=self._max_payload)
        if env.caller == self.local:
            return data
        env.caller = self.local
        return encode_envelope(env)

    async def _send_and_wait(
        self, target: ActrId, lane: Lane, kind: int, request_id: str, data: bytes, deadline: float
    ) -> _Waiter:
        waiter = _Waiter(target)
        if kind == REQUEST:
            self._calls[request_id] = waiter
        try:
            item = await self._stamp(target, lane, kind, request_id, data, deadline, waiter)
            if kind != REQUEST:
                await waiter.event.wait()
                return waiter
            interval = RESPONSE_RETRY_MIN
            while True:
                with trio.move_on_after(interval):
                    await waiter.event.wait()
                if waiter.event.is_set():
                    return waiter
                if item.acked or item.dropped:
                    # Accepted but unanswered: the response may have died with a restarted
                    # receiver. Ask again; its dedupe table answers with the stored response
                    # (or just acks while the handler still runs).
                    self._asked_again += 1
                    item = await self._stamp(target, lane, kind, request_id, data, deadline, waiter)
                interval = min(interval * 2, RESPONSE_RETRY_MAX)
        finally:
            self._calls.pop(request_id, None)

    async def _stamp(
        self,
        target: ActrId,
        lane: Lane,
        kind: int,
        request_id: str,
        data: bytes,
        deadline: float,
        waiter: _Waiter,
    ) -> _Outgoing:
        while True:
            pl = self._lane(target, lane)
            await pl.window.acquire()
            if not pl.closed:
                break
            pl.window.release()  # the peer said goodbye meanwhile: its lane is gone, take anew
        item = _Outgoing(kind, request_id, data, deadline, waiter)
        pl.stamp(item)
        await pl.send_inline()
        return item

    def respond(self, peer: ActrId, lane: Lane, response: bytes, deadline_ms: int) -> None:
        """Queue an encoded RESPONSE envelope to ``peer`` (never blocks the scheduler).

        It is resent until acknowledged or past the request's ``deadline_ms`` (wire form;
        :data:`RESPONSE_BOUND` seconds when the request had none).
        """
        try:
            pl = self._lane(peer, lane)
        except (ShuttingDown, PeerUnavailable):
            return  # the caller's retry will find the stored response
        deadline = trio_deadline(deadline_ms, RESPONSE_BOUND)
        pl.stamp(_Outgoing(RESPONSE, "", response, deadline, None, slot=False))

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
        pl = self._lane(peer, lane)
        while len(pl.outbox) >= OUTBOX_LIMIT and not pl.closed:
            pl.flushed = trio.Event()
            await pl.flushed.wait()
        if pl.closed:
            raise PeerUnavailable(f"{peer} shut down")
        if not lane.sequenced:
            await trio.lowlevel.checkpoint()
            pl.push(encode_chunk(chunk))
            return
        if acks is None:
            raise ValueError(f"a chunk on {lane!r} needs a ChunkAcks to count its acknowledgement")
        await pl.window.acquire()
        if self._lanes.get((peer, lane)) is not pl:  # goodbye dropped the lane while we waited
            pl.window.release()
            raise PeerUnavailable(f"{peer} shut down")
        item = _Outgoing(CHUNK, "", encode_chunk_body(chunk), deadline, None)
        acks.track(item, end=chunk.end)
        pl.stamp(item)

    def on_ack(self, peer: ActrId, lane: Lane, ack: AckInfo) -> None:
        pl = self._lanes.get((peer, lane))
        if pl is not None:
            pl.on_ack(ack)

    def on_response(self, peer: ActrId, env: Envelope) -> None:
        """A RESPONSE arrived on ``peer``'s link (``peer`` is the authenticated link end).

        Only the peer the request was sent to may answer it: a response from anyone else is
        dropped, counted (``statistics().forged_responses``) and logged at WARNING, and the
        call keeps waiting for the real answer.
        """
        waiter = self._calls.get(env.request_id)
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
        del self._calls[env.request_id]
        if env.error is not None:
            waiter.fail(env.error)
        else:
            waiter.succeed(env.payload)

    async def wait_acked(self) -> None:
        """Return once nothing sent is waiting for an ack (bound it with a cancel scope)."""
        for pl in list(self._lanes.values()):
            while pl.link:
                pl.drained = trio.Event()
                await pl.drained.wait()
        await trio.lowlevel.checkpoint()


def wire_deadline(deadline: float) -> int:
    """A Trio-clock deadline as the envelope carries it: unix milliseconds, 0 for none.

    Peers share no Trio clock, so the deadline travels as wall-clock time.
    """
    remaining = deadline - trio.current_time()
    if math.isinf(remaining):
        return 0
    return int(time.time() * 1000) + max(0, int(remaining * 1000))


def trio_deadline(deadline_ms: int, default: float) -> float:
    """The envelope's deadline on this process's Trio clock; ``default`` seconds from now if none."""
    if not deadline_ms:
        return trio.current_time() + default
    return trio.current_time() + (deadline_ms / 1000 - time.time())
