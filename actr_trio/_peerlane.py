"""One link's sending side: per (peer, lane), what the wire path keeps until it is acknowledged.

A :class:`PeerLane` owns a :class:`~actr_trio._link.SendLink` that numbers Signal/Reliable
envelopes and keeps them until acknowledged, an outbox of encoded packets, and one flusher task
(started by the OutGate's nursery) that hands the whole outbox to the transport in one ``send``.
While a send is in flight new packets accumulate, so batches grow with load and a lone packet
goes out at once: coalescing without a timer.

When acks stop making progress for ``rto`` seconds, the flusher retransmits every unacked
packet in order (go-back-N, see ``_link.py``), doubling ``rto`` up to ``RTO_MAX``.

The same PeerLane carries what this node owes the peer's link on this lane (its
:class:`~actr_trio._link.PendingAck`, filled by the inbound gate after each commit): every batch
that leaves carries the owed ack on its last packet (``Packet.piggyback``), so a response
acknowledges its request and a call takes two packets; when nothing leaves, the flusher sends
the ack on its own once it is due (``ACK_DELAY``, or at once when the gate says so).

Stream chunks on a Signal/Reliable lane ride the same link (numbered, acknowledged once the
receiver's stream registry took them, resent like envelopes); each stream counts what became of
its chunks in a :class:`ChunkAcks`. LatencyFirst chunks are unsequenced: sent once, never acked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Final, final

import attrs
import trio

from ._deadlines import DeadlineTimer
from ._envelope import (
    TELL,
    AckInfo,
    WireError,
    encode_ack,
    encode_piggyback,
    encode_sequenced,
)
from ._ids import ActrId
from ._lanes import Lane
from ._link import PendingAck, SendLink
from ._logging import LINK, RateLimiter
from .errors import DeadlineExceeded, PeerUnavailable, ShuttingDown, TransportError
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
# The LinkItem.kind of a stream chunk on a sequenced link (not an envelope kind on the wire).
CHUNK: Final = -1


#: The error a :class:`Waiter` gets when its deadline passed first (the waiting call raises a
#: ``DeadlineExceeded`` of its own, naming itself).
EXPIRED: Final = DeadlineExceeded("deadline passed")


class Waiter:
    """Where the task waiting for a call or tell learns its outcome (one task per waiter).

    A :class:`~actr_trio._deadlines.Expiring`: a DeadlineTimer fails it with :data:`EXPIRED`
    at its deadline. It parks its task directly (no ``trio.Event`` and parking lot per call:
    creating and waking those was a visible part of an in-process call).
    """

    __slots__ = ("_task", "accepted", "done", "error", "payload", "peer")

    def __init__(self, peer: ActrId) -> None:
        self.done = False
        self.payload: bytes = b""
        self.error: WireError | BaseException | None = None
        self.peer = peer
        # The peer acknowledged the request: from then on only its answer or the deadline
        # settle the call (a lost link does not: the peer answers or replays it).
        self.accepted = False
        self._task: trio.lowlevel.Task | None = None

    def succeed(self, payload: bytes = b"") -> None:
        if not self.done:
            self.payload = payload
            self._settle()

    def fail(self, error: WireError | BaseException) -> None:
        if not self.done:
            self.error = error
            self._settle()

    def nudge(self) -> None:
        """Wake the waiting task without settling (its :meth:`wait` returns, ``done`` False)."""
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _settle(self) -> None:
        self.done = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Return once settled (a checkpoint either way; cancellable)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    @property
    def settled(self) -> bool:
        return self.done

    def expire(self) -> None:
        self.fail(EXPIRED)


@attrs.define(slots=True, eq=False)
class LinkItem:
    """One packet body numbered on a link, kept until acknowledged."""

    kind: int
    request_id: str
    data: bytes
    deadline: float
    waiter: Waiter | None
    slot: bool = True  # holds a place in the window (responses do not: they never wait)
    acked: bool = False
    dropped: bool = False  # left unsent when its link failed (its waiter keeps waiting)
    stream: ChunkAcks | None = None  # for CHUNK: the stream that counts its acknowledgement


@final
class ChunkAcks:
    """What became of the chunks one stream sent on a sequenced lane.

    Each chunk is settled once: acknowledged (the receiver's registry took it), refused (e.g.
    no callback for the stream; the reason is kept) or failed (link given up: past its
    deadline, peer unreachable, shutting down). On the in-process route a chunk is settled at
    once, by :meth:`settle_now`, when the receiver's registry took or refused it.
    """

    def __init__(self) -> None:
        self.acked = 0  # data chunks acknowledged
        self.end_acked = False
        self.reason: WireError | BaseException | None = None  # the first refusal or failure
        self._pending: set[LinkItem] = set()
        self._end: LinkItem | None = None
        self._settled = trio.Event()

    def track(self, item: LinkItem, *, end: bool) -> None:
        item.stream = self
        self._pending.add(item)
        if end:
            self._end = item

    def settle(self, item: LinkItem, failure: WireError | BaseException | None) -> None:
        if item not in self._pending:
            return
        self._pending.discard(item)
        self.settle_now(failure, end=item is self._end)
        if not self._pending:
            self._settled.set()

    def settle_now(self, failure: WireError | BaseException | None, *, end: bool) -> None:
        """Count one chunk's outcome (not tracked on a link: delivered in process)."""
        if failure is not None:
            if self.reason is None:
                self.reason = failure
        elif end:
            self.end_acked = True
        else:
            self.acked += 1

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


@attrs.define(eq=False)
class LinkShared:
    """What every PeerLane of one OutGate shares: the transport, the calls waiting for a
    response, the rate limiter of the link log, and the counters the gate reports."""

    transport: Transport
    calls: dict[str, Waiter]
    rate: RateLimiter
    deadlines: DeadlineTimer  # wakes the flushers for acks and retransmissions that are due
    sent: int = 0
    retransmitted: int = 0
    acked: int = 0
    refused: int = 0
    batches: int = 0
    acks_sent: int = 0  # acknowledgements sent as packets of their own
    acks_piggybacked: int = 0  # acknowledgements that rode on a packet going anyway
    direct_writes: int = 0  # batches a sender handed to the transport itself (lane was idle)


class PeerLane:
    def __init__(self, shared: LinkShared, peer: ActrId, lane: Lane) -> None:
        self.shared = shared
        self.peer = peer
        self.lane = lane
        self.link: SendLink[LinkItem] = SendLink()
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
        # What this node owes the peer's link on this lane, and when the flusher wakes next.
        self.ack = PendingAck()
        # The earliest wake-up of the flusher asked of the DeadlineTimer and not yet passed
        # (see _Alarm): an ack or retransmission due later needs no new one, so a call
        # usually arms nothing and the flusher sleeps without a cancel scope.
        self.armed = math.inf

    def __repr__(self) -> str:
        return f"<PeerLane {self.peer} {self.lane.name} unacked={len(self.link)}>"

    def push(self, packet: bytes) -> None:
        self.outbox.append(packet)
        self.wake.set()

    def stamp(self, item: LinkItem, *, wake: bool = True) -> None:
        """Number ``item`` and queue its packet; with ``wake=False`` the caller hands the
        outbox to the transport itself next (:meth:`send_inline`), so the flusher sleeps on."""
        if not self.link:
            self.last_progress = now = trio.current_time()
            self._wake_by(now + self.rto)  # the retransmission timer starts with the link
        seq = self.link.stamp(item)
        packet = self._packet(seq, item)
        if wake:
            self.push(packet)
        else:
            self.outbox.append(packet)

    def next_due(self) -> float:
        """When the flusher must act next with nothing queued: send the owed ack, or resend."""
        if self.link:
            return min(self.ack.due, self.last_progress + self.rto)
        return self.ack.due

    def _wake_by(self, when: float) -> None:
        """Have the flusher wake at ``when`` at the latest (no task switch now)."""
        if when < self.armed:
            self.armed = when
            self.shared.deadlines.add(when, _Alarm(self, when))

    def retransmit(self, items: Sequence[tuple[int, LinkItem]]) -> None:
        self.shared.retransmitted += len(items)
        for seq, item in items:
            self.push(self._packet(seq, item))

    def _packet(self, seq: int, item: LinkItem) -> bytes:
        return encode_sequenced(self.link.epoch, seq, item.data, chunk=item.kind == CHUNK)

    def on_ack(self, ack: AckInfo) -> None:
        if ack.reset:
            if ack.epoch == self.link.epoch:
                self.shared.rate.log(
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
        shared = self.shared
        shared.acked += len(done)
        for seq, item in done:
            item.acked = True
            if item.slot:
                self.window.release()
            refusal = ack.refused.get(seq)
            if item.stream is not None:
                item.stream.settle(item, refusal)
            if refusal is not None:
                shared.refused += 1
                if item.waiter is not None:
                    shared.calls.pop(item.request_id, None)
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
            self.shared.calls.pop(item.request_id, None)
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
            self.shared.rate.log(
                log,
                logging.INFO,
                (self.peer, self.lane, "expired"),
                "%s: %d packets to %s expired unacknowledged",
                self.lane.name,
                len(items),
                self.peer,
            )
            self.fail_all(DeadlineExceeded("deadline passed before the peer acknowledged"))

    def owe_ack(
        self,
        epoch: int,
        cumulative: int,
        refused: Sequence[tuple[int, WireError]],
        *,
        urgent: bool,
    ) -> None:
        """The inbound gate committed the peer's packets up to ``cumulative``: acknowledge them
        with the next batch, or on their own when due. An ``urgent`` ack is due now; the gate
        then calls :meth:`flush_ack` (after the inbound packets already waiting)."""
        self.ack.owe(epoch, cumulative, refused, trio.current_time(), urgent=urgent)
        if not urgent:
            self._wake_by(self.ack.due)  # the flusher may sleep past the new due time

    async def flush_ack(self) -> None:
        """Send an ack that is due: inline when no batch is in flight, else the flusher sends
        it (with the batch after the one in flight)."""
        if self.sending.locked():
            self.wake.set()
            await trio.lowlevel.checkpoint()
            return
        await self.send_inline()

    async def flush_loop(self) -> None:
        while not self.closed:
            if self.outbox or self.ack.due <= trio.current_time():
                try:
                    self.sending.acquire_nowait()  # the send is the checkpoint
                except trio.WouldBlock:
                    await self.sending.acquire()
                try:
                    if not await self.send_outbox():
                        return
                finally:
                    self.sending.release()
                continue
            self.wake = trio.Event()
            self._wake_by(self.next_due())
            await self.wake.wait()
            now = trio.current_time()
            if not self.outbox and self.link and now >= self.last_progress + self.rto:
                self._timed_out(now)

    def _timed_out(self, now: float) -> None:
        """Acks made no progress for ``rto``: expire, or resend everything unacked."""
        self.expire(now)
        if not self.link:
            return
        self.timeouts += 1
        if self.timeouts % FORGET_AFTER == 0:
            # Silence although the peer is registered: it may have restarted behind a link
            # that looks alive. Start a new one.
            self.shared.rate.log(
                log,
                logging.INFO,
                (self.peer, self.lane, "silent"),
                "%s: no ack for %.1f s on %s; resending %d packets over a new link",
                self.peer,
                now - self.last_progress,
                self.lane.name,
                len(self.link),
            )
            self.shared.transport.forget(self.peer)
        self.retransmit(self.link.unacked())
        self.rto = min(self.rto * 2, RTO_MAX)
        self.last_progress = now

    async def send_outbox(self) -> bool:
        """Hand the whole outbox to the transport (caller holds ``sending``); False once closed."""
        batch, self.outbox = self.outbox, []
        self.flushed.set()
        shared = self.shared
        shared.sent += len(batch)
        ack = self.ack
        if ack.owed and (batch or ack.due <= trio.current_time()):
            epoch, cumulative, refused = ack.take()
            if batch and not refused:
                batch[-1] += encode_piggyback(epoch, cumulative)
                shared.acks_piggybacked += 1
            else:
                # Refusals (rare, possibly many, each with its message) travel in a packet of
                # their own: a passenger must never push a packet over the receiver's limit.
                batch.append(encode_ack(epoch, cumulative, refused=refused))
                shared.acks_sent += 1
        if not batch:
            return True
        shared.batches += 1
        try:
            await self.shared.transport.send(self.peer, self.lane, batch)
        except PeerUnavailable as exc:
            if not self.ever_acked:
                self.fail_all(exc)
            else:
                self.shared.rate.log(
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
            self.shared.rate.log(
                log,
                logging.WARNING,
                (self.peer, self.lane, "failed"),
                "sending to %s failed: %s",
                self.peer,
                exc,
            )
        return True

    async def send_inline(self) -> None:
        """Send the outbox from the calling task when no batch is in flight (saves waking
        the flusher: a task switch); otherwise the flusher sends it with the batch that
        follows. Either way the outbox leaves whole and in order, one batch at a time."""
        try:
            self.sending.acquire_nowait()
        except trio.WouldBlock:
            self.wake.set()  # whoever sends now leaves it to the flusher
            await trio.lowlevel.checkpoint()
            return
        try:
            if self.outbox:
                self.shared.direct_writes += 1
            await self.send_outbox()
        finally:
            self.sending.release()
        if self.outbox:
            self.wake.set()  # queued behind our batch: the flusher takes it


class _Alarm:
    """A wake-up of one PeerLane's flusher, kept by the node's DeadlineTimer.

    Alarms fire in time order, so when one fires, every alarm armed for an earlier time has
    fired too: the lane has none pending before this one (``armed`` says so).
    """

    __slots__ = ("lane", "when")

    def __init__(self, lane: PeerLane, when: float) -> None:
        self.lane = lane
        self.when = when

    @property
    def settled(self) -> bool:
        return self.lane.closed

    def expire(self) -> None:
        lane = self.lane
        if lane.armed <= self.when:
            lane.armed = math.inf
        due = lane.next_due()
        if lane.outbox or due <= trio.current_time():
            lane.wake.set()
        else:
            # Nothing due yet (say the ack left with a response meanwhile): arm the next
            # wake-up from here rather than wake the flusher only to go back to sleep.
            lane._wake_by(due)
