"""The wire route: what a node sends to peers over its transport, encoded and numbered.

Per (peer, lane) a :class:`~actr_trio._peerlane.PeerLane` numbers Signal/Reliable packets on
its link, hands them to the transport in batches (one flusher task per lane, owned by
:meth:`WireRoute.run`), and resends them until acknowledged. A tell completes on its ack, a
call when its response arrives (asked again while accepted but unanswered: the response may
have died with a restarted receiver); a refusal fails it with its typed error, an overloaded
receiver gets the envelope again after a backoff, and ``DeadlineExceeded`` ends the wait at
its deadline. Acks arrive from the inbound gate (:meth:`WireRoute.on_ack`), and the acks this
node owes its peers leave through the same lanes (:meth:`WireRoute.owe_ack`): on the next packet
going that way, or on their own once due.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Final

import trio

from ._deadlines import DeadlineTimer
from ._envelope import (
    REQUEST,
    RESPONSE,
    TELL,
    AckInfo,
    Chunk,
    Envelope,
    Goodbye,
    WireError,
    encode_ack,
    encode_chunk,
    encode_chunk_body,
    encode_envelope,
    encode_goodbye,
    encode_piggyback,
)
from ._idle import PeerActivity
from ._ids import ActrId
from ._lanes import Lane
from ._logging import LINK, RateLimiter
from ._peerlane import (
    CHUNK,
    OUTBOX_LIMIT,
    ChunkAcks,
    LinkItem,
    LinkShared,
    PeerLane,
    Waiter,
)
from .errors import DeadlineExceeded, Overloaded, PeerUnavailable, ShuttingDown, TransportError
from .transport._abc import Transport

__all__ = ["GOODBYE_LANE", "WireRoute", "too_late", "trio_deadline"]

log = logging.getLogger(LINK)

# Backoff between resends of an envelope the receiver refused as overloaded (jittered).
OVERLOADED_BACKOFF_MIN: Final = 0.01
OVERLOADED_BACKOFF_MAX: Final = 1.0
# A call acknowledged but unanswered this long is asked again (same request id), doubling.
RESPONSE_RETRY_MIN: Final = 1.0
RESPONSE_RETRY_MAX: Final = 8.0
# Seconds a response to a request without a deadline is resent for until acknowledged.
RESPONSE_BOUND: Final = 60.0
# New (peer, lane) flushers waiting to be started by run(); consumed at once, so small.
SPAWN_BUFFER: Final = 256
# The lane a goodbye travels on: fully reliable and ordered.
GOODBYE_LANE: Final = Lane.SIGNAL
# The resolution of the per-peer activity times (seconds): a peer touched again sooner is not
# touched (the bounds time out after minutes; a table update per packet showed in profiles).
NOTE_GRAIN: Final = 1.0
# Defaults of the bounds on per-peer lanes (the node passes its Config's).
PEER_STATE_TIMEOUT: Final = 300.0
MAX_PEER_STATES: Final = 4096


class WireRoute:
    """The sending side of a node's links (see the module docstring).

    Args:
        transport: the node's transport.
        calls: the node's calls waiting for an answer, by request id (shared with the
            in-process route).
        rate: the rate limiter of the link log (shared with the gate).
        deadlines: the node's running DeadlineTimer: it ends calls at their deadlines and
            wakes the flushers when acks and retransmissions are due.
    """

    def __init__(
        self,
        transport: Transport,
        calls: dict[str, Waiter],
        rate: RateLimiter,
        deadlines: DeadlineTimer,
        *,
        peer_state_timeout: float = PEER_STATE_TIMEOUT,
        max_peer_states: int = MAX_PEER_STATES,
    ) -> None:
        self._shared = LinkShared(transport, calls, rate, deadlines)
        self._calls = calls
        self._lanes: dict[tuple[ActrId, Lane], PeerLane] = {}
        # When each peer was last sent to or acked something: the lanes of one quiet for
        # longer than peer_state_timeout are forgotten if nothing to it is pending.
        self._seen: PeerActivity[ActrId] = PeerActivity(
            peer_state_timeout, max_peer_states, trio.current_time(), NOTE_GRAIN
        )
        self.evicted = 0  # peers whose lanes were forgotten
        self._spawn_send, self._spawn_recv = trio.open_memory_channel[PeerLane](SPAWN_BUFFER)
        self.closed = False
        self.overloaded = 0  # back-offs because a receiver's mailbox was full
        self.asked_again = 0  # accepted calls asked again for their answer

    def __repr__(self) -> str:
        return f"<WireRoute lanes={len(self._lanes)}>"

    @property
    def shared(self) -> LinkShared:
        """The counters of every lane."""
        return self._shared

    def unacked(self) -> int:
        """Packets sent and not acknowledged yet, on every lane."""
        return sum(len(pl.link) for pl in self._lanes.values())

    def lane_summary(self) -> dict[Lane, tuple[int, int]]:
        """Per lane in use: (peers with a link on it, packets not acknowledged yet)."""
        summary: dict[Lane, tuple[int, int]] = {}
        for (_, lane), pl in self._lanes.items():
            peers, unacked = summary.get(lane, (0, 0))
            summary[lane] = (peers + 1, unacked + len(pl.link))
        return summary

    def peers(self) -> set[ActrId]:
        """Peers that acknowledged something on some lane."""
        return {pl.peer for pl in self._lanes.values() if pl.ever_acked}

    def busy(self, peer: ActrId, lane: Lane) -> bool:
        """Whether something to ``peer`` on ``lane`` is unsent or unacknowledged."""
        if not self._lanes:
            return False
        pl = self._lanes.get((peer, lane))
        return pl is not None and bool(pl.link or pl.outbox)

    def linked(self, peer: ActrId) -> bool:
        """Whether any lane to ``peer`` exists."""
        return any(key[0] == peer for key in self._lanes)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the flusher tasks until cancelled."""
        with self._spawn_recv:
            async with trio.open_nursery() as nursery:
                task_status.started()
                async for pl in self._spawn_recv:
                    nursery.start_soon(pl.flush_loop, name=repr(pl))

    def unacked_to(self, peer: ActrId) -> int:
        """Packets sent to ``peer`` that it has not acknowledged yet, on every lane."""
        return sum(len(pl.link) for pl in self._lanes.values() if pl.peer == peer)

    async def say_goodbye(self, peer: ActrId, goodbye: Goodbye) -> bool:
        """Send ``goodbye`` to ``peer`` on :data:`GOODBYE_LANE`, after what that lane already
        carries (one sender at a time); True once the transport took it. Bound it with a
        cancel scope: opening a link to a peer that left meanwhile waits."""
        packet = encode_goodbye(goodbye)
        # Acks still owed leave first: the peer fails whatever it never had acknowledged.
        for key, owed in list(self._lanes.items()):
            if key[0] == peer and key[1] != GOODBYE_LANE and owed.ack.owed:
                owed.ack.due = -math.inf
                async with owed.sending:
                    await owed.send_outbox()
        pl = self._lanes.get((peer, GOODBYE_LANE))
        transport = self._shared.transport
        try:
            if pl is None:
                await transport.send(peer, GOODBYE_LANE, [packet])
            else:
                async with pl.sending:
                    await transport.send(peer, GOODBYE_LANE, _with_owed_ack(pl, packet))
        except (TransportError, ShuttingDown) as exc:
            log.debug("could not say goodbye to %s: %s", peer, exc)
            return False
        return True

    def drop(self, peer: ActrId, error: PeerUnavailable) -> tuple[int, int]:
        """``peer`` said goodbye: close its lanes, failing what it never acknowledged with
        ``error``. Returns (packets dropped, calls/tells failed)."""
        dropped = failed = 0
        self._seen.forget(peer)
        for key in [key for key in self._lanes if key[0] == peer]:
            pl = self._lanes.pop(key)
            dropped += len(pl.link)
            failed += sum(
                1
                for _, item in pl.link.unacked()
                if item.waiter is not None and not item.waiter.accepted
            )
            pl.close(error)
        return dropped, failed

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
        """Owe ``peer`` an ack of its link on ``lane`` (see :meth:`PeerLane.owe_ack`); the lane
        that carries it, or None when none can be had (shutting down): send it directly."""
        try:
            pl = self._lane(peer, lane)
        except (ShuttingDown, PeerUnavailable):
            return None
        pl.owe_ack(epoch, cumulative, refused, urgent=urgent)
        return pl

    def _lane(self, peer: ActrId, lane: Lane) -> PeerLane:
        self._note(peer)
        pl = self._lanes.get((peer, lane))
        if pl is None:
            if self.closed:
                raise ShuttingDown("node is shutting down")
            pl = PeerLane(self._shared, peer, lane)
            try:
                self._spawn_send.send_nowait(pl)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                raise PeerUnavailable(f"cannot open a link to {peer} now") from None
            self._lanes[(peer, lane)] = pl
        return pl

    async def deliver(self, env: Envelope, data: bytes, deadline: float) -> bytes:
        """Send ``env`` (encoded as ``data``) and wait for its outcome: the answer of a
        REQUEST, the acknowledgement of a TELL; what the receiver refused as overloaded is sent
        again after a backoff (jittered, doubling) until ``deadline``."""
        target, lane, kind, request_id = env.target, env.lane, env.kind, env.request_id
        assert target is not None
        backoff = OVERLOADED_BACKOFF_MIN
        # One cancel scope per call (the deadline): it also bounds a send that has to wait
        # for a link to open.
        with trio.move_on_at(deadline) as scope:
            while True:
                waiter = await self.send_and_wait(target, lane, kind, request_id, data, deadline)
                error = waiter.error
                if not (isinstance(error, WireError) and error.kind == Overloaded.wire_kind):
                    break
                # The receiver's mailbox is full: back off and resend the same request_id (the
                # receiver never accepted it), until the deadline.
                self.overloaded += 1
                await trio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, OVERLOADED_BACKOFF_MAX)
        if scope.cancelled_caught:
            raise too_late(env, overloaded=backoff > OVERLOADED_BACKOFF_MIN)
        if isinstance(error, WireError):
            raise error.to_exception()
        if error is not None:
            raise error
        return waiter.payload

    async def deliver_many(self, envs: list[Envelope], deadline: float) -> None:
        """Over the wire: send the tells ``envs`` (one target and lane) in one frame and wait
        until every one is acknowledged; what the receiver refused as overloaded is sent again
        after a backoff (the refused ones are the tail of the batch: order holds)."""
        backoff = OVERLOADED_BACKOFF_MIN
        pending = [(env, encode_envelope(env)) for env in envs]
        with trio.move_on_at(deadline) as scope:
            while pending:
                waiters = await self._stamp_many(pending, deadline)
                for waiter in waiters:
                    if not waiter.done:
                        await waiter.wait()
                retry = []
                for item, waiter in zip(pending, waiters, strict=True):
                    error = waiter.error
                    if isinstance(error, WireError) and error.kind == Overloaded.wire_kind:
                        retry.append(item)
                    elif isinstance(error, WireError):
                        raise error.to_exception()
                    elif error is not None:
                        raise error
                pending = retry
                if pending:
                    self.overloaded += 1
                    await trio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, OVERLOADED_BACKOFF_MAX)
        if scope.cancelled_caught:
            raise too_late(envs[0], overloaded=backoff > OVERLOADED_BACKOFF_MIN)

    async def _stamp_many(
        self, items: list[tuple[Envelope, bytes]], deadline: float
    ) -> list[Waiter]:
        """Number every item on its link, then hand them to the transport in one batch."""
        waiters: list[Waiter] = []
        pl: PeerLane | None = None
        for env, data in items:
            assert env.target is not None
            while True:
                pl = self._lane(env.target, env.lane)
                try:
                    pl.window.acquire_nowait()
                except trio.WouldBlock:
                    await pl.window.acquire()  # the flusher sends what is stamped meanwhile
                if not pl.closed:
                    break
                pl.window.release()  # the peer said goodbye meanwhile: take the new lane
            waiter = Waiter(env.target)
            pl.stamp(LinkItem(TELL, env.request_id, data, deadline, waiter), wake=False)
            waiters.append(waiter)
        assert pl is not None
        await pl.send_inline()
        return waiters

    async def send_and_wait(
        self, target: ActrId, lane: Lane, kind: int, request_id: str, data: bytes, deadline: float
    ) -> Waiter:
        """Send and wait for the outcome (bound it with a cancel scope: the deadline)."""
        waiter = Waiter(target)
        if kind == REQUEST:
            self._calls[request_id] = waiter
        try:
            item = await self._stamp(target, lane, kind, request_id, data, deadline, waiter)
            if kind != REQUEST:
                await waiter.wait()
                return waiter
            timer = self._shared.deadlines
            interval = RESPONSE_RETRY_MIN
            while True:
                # Woken by the answer, or by this nudge (the DeadlineTimer's: no cancel scope
                # per call) to ask again.
                nudge = _Nudge(waiter)
                timer.add(trio.current_time() + interval, nudge)
                await waiter.wait()
                nudge.settled = True
                if waiter.done:
                    return waiter
                if item.acked or item.dropped:
                    # Accepted but unanswered: the response may have died with a restarted
                    # receiver. Ask again; its dedupe table answers with the stored response
                    # (or just acks while the handler still runs).
                    self.asked_again += 1
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
        waiter: Waiter,
    ) -> LinkItem:
        while True:
            pl = self._lane(target, lane)
            try:
                pl.window.acquire_nowait()  # the send below is this call's checkpoint
            except trio.WouldBlock:
                await pl.window.acquire()  # the window is full: wait for acks
            if not pl.closed:
                break
            pl.window.release()  # the peer said goodbye meanwhile: its lane is gone, take anew
        item = LinkItem(kind, request_id, data, deadline, waiter)
        pl.stamp(item, wake=False)
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
        pl.stamp(LinkItem(RESPONSE, "", response, deadline, None, slot=False))

    async def send_chunk(
        self, peer: ActrId, lane: Lane, chunk: Chunk, acks: ChunkAcks | None, deadline: float
    ) -> None:
        """Queue a stream chunk (see ``OutGate.send_chunk``); waits while the peer's outbox,
        or on a reliable lane its link's window, is full."""
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
        assert acks is not None
        await pl.window.acquire()
        if self._lanes.get((peer, lane)) is not pl:  # goodbye dropped the lane while we waited
            pl.window.release()
            raise PeerUnavailable(f"{peer} shut down")
        item = LinkItem(CHUNK, "", encode_chunk_body(chunk), deadline, None)
        acks.track(item, end=chunk.end)
        pl.stamp(item)

    def on_ack(self, peer: ActrId, lane: Lane, ack: AckInfo) -> None:
        pl = self._lanes.get((peer, lane))
        if pl is not None:
            self._note(peer)
            pl.on_ack(ack)

    def _note(self, peer: ActrId) -> None:
        """Traffic with ``peer`` now; forget the lanes of peers gone quiet (see
        :meth:`evict`), at most every half timeout, and at once beyond the bound."""
        now = trio.current_time()
        if self._seen.note(peer, now):
            self.evict(now)

    def evict(self, now: float) -> int:
        """Forget the lanes of peers quiet for longer than ``peer_state_timeout`` (and of the
        quietest beyond ``max_peer_states``) to which nothing is pending; how many peers.

        Only state that is rebuilt as it was is forgotten: a lane with nothing unsent, nothing
        unacknowledged, no batch with the transport and no sender waiting holds only its
        epoch and next seq, and the next send opens a new lane (a new epoch, which the
        receiver takes at seq 1). A peer with a call waiting for its answer keeps its lanes
        (the call asks again on them). A durable node's outbox is in its mailbox database,
        not here: nothing recorded there is touched.
        """
        quiet = self._seen.sweep(now)
        if not quiet:
            return 0
        waiting = {waiter.peer for waiter in self._calls.values()}
        evicted = 0
        for peer in quiet:
            if peer in waiting:
                continue
            lanes = [(lane, pl) for lane in Lane if (pl := self._lanes.get((peer, lane)))]
            if any(not _idle(pl) for _, pl in lanes):
                continue
            for lane, pl in lanes:
                del self._lanes[(peer, lane)]
                pl.close(PeerUnavailable(f"{peer}: lane forgotten while idle"))
            self._seen.forget(peer)
            evicted += 1
        self.evicted += evicted
        if evicted:
            log.debug("forgot the lanes of %d quiet peers", evicted)
        return evicted

    async def wait_acked(self) -> None:
        """Return once nothing sent is waiting for an ack (bound it with a cancel scope)."""
        for pl in list(self._lanes.values()):
            while pl.link:
                pl.drained = trio.Event()
                await pl.drained.wait()
        await trio.lowlevel.checkpoint()


class _Nudge:
    """Wakes a call's waiting task after an interval without settling it (it asks again)."""

    __slots__ = ("settled", "waiter")

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter
        self.settled = False

    def expire(self) -> None:
        self.settled = True
        self.waiter.nudge()


def _with_owed_ack(pl: PeerLane, packet: bytes) -> list[bytes]:
    """``packet`` carrying what ``pl`` owes the peer (refusals in an ack of its own)."""
    if not pl.ack.owed:
        return [packet]
    epoch, cumulative, refused = pl.ack.take()
    if refused:
        return [encode_ack(epoch, cumulative, refused=refused), packet]
    return [packet + encode_piggyback(epoch, cumulative)]


def _idle(pl: PeerLane) -> bool:
    """Whether ``pl`` holds nothing but its numbering (nothing pending, nobody waiting, no
    ack owed to the peer)."""
    return not (
        pl.link
        or pl.outbox
        or pl.ack.owed
        or pl.sending.locked()
        or pl.window.statistics().tasks_waiting
    )


def too_late(env: Envelope, *, overloaded: bool) -> Overloaded | DeadlineExceeded:
    """The error of a send whose deadline passed (while the receiver was overloaded, or not)."""
    if overloaded:
        return Overloaded(
            f"{env.route_key} to {env.target}: receiver overloaded until the deadline"
        )
    return DeadlineExceeded(f"{env.route_key} to {env.target}: no answer before the deadline")


def trio_deadline(deadline_ms: int, default: float) -> float:
    """The envelope's deadline on this process's Trio clock; ``default`` seconds from now if none."""
    if not deadline_ms:
        return trio.current_time() + default
    return trio.current_time() + (deadline_ms / 1000 - time.time())
