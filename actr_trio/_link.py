"""Sans-IO end-to-end reliability for Signal/Reliable envelopes between two nodes.

A lane that may drop (RELIABLE has maxRetransmits=8) must not lose what it promised to keep,
nor reorder it (FIFO per sender). So every sequenced envelope from A to B carries
``(epoch, seq)``; B accepts only the next expected ``seq`` (go-back-N: a gap is dropped, not
buffered) and acknowledges cumulatively once the envelope is committed; A retransmits everything
unacknowledged, in order, when acks stop making progress.

Rules:

1. B accepts a new epoch only at ``seq == 1``. A packet of an epoch B does not know, with a
   higher ``seq``, gets an ack with ``reset``: A then starts a new epoch and renumbers its
   unacknowledged envelopes from 1, in their original order. (B restarted and lost its link
   state; envelopes it had committed are recognised by the mailbox's dedupe table.)
2. An ack acknowledges every ``seq <= cumulative`` of its epoch; acks of another epoch are stale.
3. A refused envelope (overloaded, malformed, shutting down...) is still acknowledged, with the
   reason; B keeps recent refusals so a retransmission gets the same answer.
4. B's acks ride on whatever B sends A on the same lane anyway (``Packet.piggyback``): a response
   acknowledges its request that way. What B owes A waits in a :class:`PendingAck` until such a
   packet leaves, and goes out as a packet of its own only when due: after :data:`ACK_DELAY`,
   or at once when A is waiting for it (a tell completes on its ack), when A retransmitted
   (B's ack was lost), with a refusal, or once it covers :data:`ACK_EVERY` packets (A's window
   never fills for want of an ack). B owes only what it committed: an ack never runs ahead of
   the mailbox.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Generic, Literal, TypeVar

from ._envelope import WireError

T = TypeVar("T")

# Refusals remembered per link, to answer a resent packet again with its refusal: a plain
# cumulative ack would tell the sender it was accepted. A sender has at most its window
# (``_peerlane.WINDOW``, 4,096 packets) unacknowledged, so what it resends lies within the
# last 4,096 seqs; twice that is kept (a stress run with 1,024 saw refused packets resent
# under load come back as accepted). Bounded: a few MB for a hostile peer's link at most.
REFUSALS_KEPT: Final = 8192

# Seconds an owed ack waits for a packet going the same way to ride on before it is sent on
# its own: a few ms, far below the sender's retransmission timeout (RTO_MIN, 0.2 s), and above
# the gap between a quick handler's response, or a caller's next call, and the ack it carries.
ACK_DELAY: Final = 0.005
# Packets an owed ack may cover before it is sent at once: a sixteenth of the sender's window
# (``_peerlane.WINDOW``), so the sender never waits for room because the receiver waits.
ACK_EVERY: Final = 256

Verdict = Literal["accept", "duplicate", "gap", "reset"]


def new_epoch() -> int:
    """A random 63-bit epoch (distinct across restarts without any stored state)."""
    return random.getrandbits(63) or 1


class SendLink(Generic[T]):
    """The sender's side of one link: numbering, unacknowledged items, retransmission."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = new_epoch() if epoch is None else epoch
        self._next = 1
        self._unacked: OrderedDict[int, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._unacked)

    def stamp(self, item: T) -> int:
        """Number ``item`` and remember it until it is acknowledged; returns its seq."""
        seq = self._next
        self._next += 1
        self._unacked[seq] = item
        return seq

    def unacked(self) -> list[tuple[int, T]]:
        """Everything not yet acknowledged, in seq order (what a retransmission sends)."""
        return list(self._unacked.items())

    def on_ack(self, epoch: int, cumulative: int) -> list[tuple[int, T]]:
        """Apply an ack; returns the items it acknowledged, in seq order."""
        if epoch != self.epoch:
            return []
        done: list[tuple[int, T]] = []
        while self._unacked:
            seq = next(iter(self._unacked))
            if seq > cumulative:
                break
            done.append((seq, self._unacked.pop(seq)))
        return done

    def restart(self) -> list[tuple[int, T]]:
        """Start a new epoch, renumbering unacknowledged items from 1 in their order."""
        items = list(self._unacked.values())
        self.epoch = new_epoch()
        self._next = 1
        self._unacked.clear()
        return [(self.stamp(item), item) for item in items]


class ReceiveLink:
    """The receiver's side of one link: which packets to accept, and what to ack."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.expected = 1
        self._refusals: OrderedDict[int, WireError] = OrderedDict()

    def classify(self, epoch: int, seq: int) -> Verdict:
        """Decide what to do with sequenced packet ``(epoch, seq)``; advances on "accept"."""
        if epoch != self.epoch:
            if seq != 1:
                return "reset"
            self.epoch = epoch
            self.expected = 1
            self._refusals.clear()
        if seq < self.expected:
            return "duplicate"
        if seq > self.expected:
            return "gap"
        self.expected += 1
        return "accept"

    @property
    def cumulative(self) -> int:
        """Highest seq accepted in the current epoch (0 when none)."""
        return self.expected - 1

    def refuse(self, seq: int, error: WireError) -> None:
        """Remember that accepted ``seq`` was refused with ``error``."""
        self._refusals[seq] = error
        while len(self._refusals) > REFUSALS_KEPT:
            self._refusals.popitem(last=False)

    def refusals(self, seqs: Iterable[int]) -> list[tuple[int, WireError]]:
        """The remembered refusals among ``seqs``."""
        return [(s, self._refusals[s]) for s in seqs if s in self._refusals]


class PendingAck:
    """What a receiver owes the sender of one link and has not sent yet (rule 4).

    ``due`` is when it must leave as a packet of its own (``math.inf``: nothing is owed); any
    packet going to that sender on the same lane before then carries it instead (:meth:`take`).
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.cumulative = 0
        self.due = math.inf
        self._refused: OrderedDict[int, WireError] = OrderedDict()
        self._told = 0  # the cumulative last sent in this epoch

    def __repr__(self) -> str:
        return f"<PendingAck epoch={self.epoch} cumulative={self.cumulative} due={self.due}>"

    @property
    def owed(self) -> bool:
        return self.due != math.inf

    def owe(
        self,
        epoch: int,
        cumulative: int,
        refused: Iterable[tuple[int, WireError]],
        now: float,
        *,
        urgent: bool,
    ) -> None:
        """Owe the sender ``cumulative`` (committed) in ``epoch``: due at once when ``urgent``,
        refused or covering :data:`ACK_EVERY` packets, else within :data:`ACK_DELAY`."""
        if epoch != self.epoch:
            # The sender started a new link: what was owed on the old one is moot.
            self.epoch, self._told, self.cumulative = epoch, 0, 0
            self._refused.clear()
        self.cumulative = max(self.cumulative, cumulative)
        # Every refusal stays until it is sent: the cumulative ack covers the refused packets
        # too, so a refusal dropped here would reach the sender as an acceptance. What they
        # take is bounded by what the sender may have in flight (its credit), and a refusal
        # makes the ack due at once.
        for seq, error in refused:
            self._refused[seq] = error
        if urgent or self._refused or self.cumulative - self._told >= ACK_EVERY:
            self.due = now
        else:
            self.due = min(self.due, now + ACK_DELAY)

    def take(self) -> tuple[int, int, list[tuple[int, WireError]]]:
        """(epoch, cumulative, refusals) to send now; nothing is owed afterwards."""
        refused = list(self._refused.items())
        self._refused.clear()
        self._told = self.cumulative
        self.due = math.inf
        return self.epoch, self.cumulative, refused
