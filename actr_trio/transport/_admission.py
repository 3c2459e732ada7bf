"""Link admission: which WebRTC offers a node answers, and which it refuses with a reason.

Sans-IO (no aiortc, no Trio, no clock of its own): the transport passes ``now`` (monotonic
seconds) and reports every link's life (:meth:`Admission.link_started`, :meth:`link_ready`,
:meth:`link_ended`); :meth:`Admission.check_offer` then decides, cheapest check first, before
anything is decoded or verified and long before aiortc does any work:

1. the relay's size (``max_relay_payload``): a larger offer is refused unread;
2. the sender's token bucket (``offers_per_peer_rate`` per second, ``offers_per_peer_burst``
   at once), per peer identity (the ``ActrId`` signaling authenticated);
3. the node's token bucket (``offers_total_rate`` per second, up to ``max_negotiating_links``
   at once) over every offer its signaling connection brings;
4. the caps: links being negotiated (``max_negotiating_links``) and links held at all
   (``max_links``: open, opening or closing, both directions).

An offer that fails a check is refused, never queued: the caller sends a :class:`Refusal`
back (``"refuse"`` relay, :func:`encode_refusal`), paced by :meth:`Admission.refusal_due` so
that a flood of offers cannot make the node flood signaling with refusals (an offer over its
sender's own rate gets none). Existing links are
never touched by a refusal: they are counted, not evicted.

Invariants: the per-peer table holds at most ``max_peers`` entries (least recently seen
forgotten first, which only hands a forgotten peer a fresh burst; the node's bucket still
bounds the total); every count is exact as long as each ``link_started`` is matched by one
``link_ended``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, final

import attrs

from .._bucket import TokenBucket

__all__ = [
    "REFUSAL_CODES",
    "Admission",
    "AdmissionStatistics",
    "Refusal",
    "decode_refusal",
    "encode_refusal",
]

# Refusal codes (the first word of a "refuse" relay's payload).
TOO_LARGE: Final = "too_large"
PEER_RATE: Final = "peer_rate"
TOTAL_RATE: Final = "total_rate"
NEGOTIATING: Final = "negotiating"
LINKS: Final = "links"
#: Every code a node sends; anything else read from the wire becomes ``UNKNOWN``.
REFUSAL_CODES: Final = (TOO_LARGE, PEER_RATE, TOTAL_RATE, NEGOTIATING, LINKS)
UNKNOWN: Final = "unknown"

#: Peers whose offer buckets are remembered (least recently seen forgotten first).
MAX_PEERS: Final = 4096
#: Refusals sent per second at most, and at once. A refusal is a courtesy (the offerer fails
#: fast instead of at its connect timeout): the node's own signaling connection must stay far
#: below the server's message budget (50 frames/s by default) whatever it is sent.
REFUSAL_RATE: Final = 20.0
REFUSAL_BURST: Final = 20
#: Seconds between two refusals to one peer: a flooding identity gets one now and then, so
#: the budget above is left for the others (one refusal every 2 s for each of 40 flooding
#: identities, and a newcomer's refusal still goes out).
REFUSAL_INTERVAL: Final = 2.0
#: Longest "refuse" payload sent or read (characters); a longer one is cut.
MAX_REFUSAL: Final = 256
_CODE_RE: Final = re.compile(r"[a-z_]{1,32}")


@final
@attrs.frozen
class Refusal:
    """Why an offer was not answered: ``code`` (one of :data:`REFUSAL_CODES`) and a sentence."""

    code: str
    message: str


@final
@attrs.frozen
class AdmissionStatistics:
    """Counters of link admission (a snapshot).

    Attributes:
        links: link tasks alive (open, negotiating or closing), both directions.
        negotiating: links not yet open (including ones closing before they opened).
        offers_admitted: offers that passed admission (then verified and answered, or refused
            by their binding).
        refused_too_large / refused_peer_rate / refused_total_rate / refused_negotiating /
        refused_links: offers refused, by reason.
        refused_outbound: links this node did not open itself because of ``max_links``.
        refusals_sent: "refuse" relays sent back (the others were paced out).
    """

    links: int
    negotiating: int
    offers_admitted: int
    refused_too_large: int
    refused_peer_rate: int
    refused_total_rate: int
    refused_negotiating: int
    refused_links: int
    refused_outbound: int
    refusals_sent: int

    @property
    def offers_refused(self) -> int:
        """Offers refused, whatever the reason."""
        return (
            self.refused_too_large
            + self.refused_peer_rate
            + self.refused_total_rate
            + self.refused_negotiating
            + self.refused_links
        )


@attrs.define
class _Peer:
    bucket: TokenBucket
    last_refusal: float | None = None


@final
class Admission:
    """The admission policy of one node (see the module docstring).

    Args:
        max_links: links held at once, any state, both directions.
        max_negotiating: links being negotiated at once (at most ``max_links``).
        peer_rate / peer_burst: one peer's offers per second, and at once.
        total_rate: offers per second over the node's signaling connection (at once: up to
            ``max_negotiating``).
        max_payload: largest offer relay (characters) read at all.
        now: the clock's current value (buckets start full).
        max_peers: per-peer buckets remembered.

    Raises:
        ValueError: a limit out of range.
    """

    def __init__(
        self,
        *,
        max_links: int,
        max_negotiating: int,
        peer_rate: float,
        peer_burst: int,
        total_rate: float,
        max_payload: int,
        now: float,
        max_peers: int = MAX_PEERS,
    ) -> None:
        if not 1 <= max_negotiating <= max_links:
            raise ValueError(
                f"max_negotiating={max_negotiating!r} must be from 1 to max_links={max_links!r}"
            )
        if max_payload < 1 or max_peers < 1:
            raise ValueError("max_payload and max_peers must be > 0")
        TokenBucket(peer_rate, peer_burst, now)  # validates both
        self.max_links = max_links
        self.max_negotiating = max_negotiating
        self.peer_rate = peer_rate
        self.peer_burst = peer_burst
        self.max_payload = max_payload
        self._max_peers = max_peers
        self._total = TokenBucket(total_rate, max_negotiating, now)
        self._refusals = TokenBucket(REFUSAL_RATE, REFUSAL_BURST, now)
        self._peers: OrderedDict[Hashable, _Peer] = OrderedDict()
        self.links = 0
        self.negotiating = 0
        self._admitted = 0
        self._refused = dict.fromkeys(REFUSAL_CODES, 0)
        self._refused_outbound = 0
        self._refusals_sent = 0

    def __repr__(self) -> str:
        return (
            f"<Admission links={self.links}/{self.max_links}"
            f" negotiating={self.negotiating}/{self.max_negotiating}>"
        )

    def statistics(self) -> AdmissionStatistics:
        """A snapshot of the counters."""
        return AdmissionStatistics(
            links=self.links,
            negotiating=self.negotiating,
            offers_admitted=self._admitted,
            refused_too_large=self._refused[TOO_LARGE],
            refused_peer_rate=self._refused[PEER_RATE],
            refused_total_rate=self._refused[TOTAL_RATE],
            refused_negotiating=self._refused[NEGOTIATING],
            refused_links=self._refused[LINKS],
            refused_outbound=self._refused_outbound,
            refusals_sent=self._refusals_sent,
        )

    # ------------------------------------------------------------------ decisions

    def check_offer(
        self, peer: Hashable, size: int, now: float, *, replaces: bool | None = None
    ) -> Refusal | None:
        """Admit (None) or refuse an offer of ``size`` characters from ``peer``.

        Args:
            replaces: the link to ``peer`` the offer would take over: None (there is none),
                False (one still negotiating) or True (an open one).

        Counts the outcome; an admitted offer is expected to be followed by
        :meth:`link_started` (or nothing, if its binding fails).
        """
        refusal = self._refusal(peer, size, now, replaces)
        if refusal is None:
            self._admitted += 1
        else:
            self._refused[refusal.code] += 1
        return refusal

    def _refusal(
        self, peer: Hashable, size: int, now: float, replaces: bool | None
    ) -> Refusal | None:
        if size > self.max_payload:
            return Refusal(
                TOO_LARGE,
                f"offer of {size} characters is over max_relay_payload={self.max_payload}",
            )
        if not self._peer(peer, now).bucket.take(now):
            return Refusal(
                PEER_RATE,
                f"too many offers from this peer (offers_per_peer_rate={self.peer_rate:g}/s,"
                f" burst {self.peer_burst})",
            )
        if not self._total.take(now):
            return Refusal(
                TOTAL_RATE, f"too many offers (offers_total_rate={self._total.rate:g}/s)"
            )
        # A peer that holds a link keeps its slot: the offer takes the old link over (it
        # restarted, say), so a full node still lets its existing peers back in. Their old
        # link counts until it has closed (a few seconds), so this can exceed the caps by the
        # re-offers per-peer rates allow meanwhile. An open link frees no negotiating slot.
        negotiating = self.negotiating + (0 if replaces is False else 1)
        if negotiating > self.max_negotiating:
            return Refusal(
                NEGOTIATING,
                f"too many links being negotiated (max_negotiating_links={self.max_negotiating})",
            )
        if replaces is None and self.links + 1 > self.max_links:
            return Refusal(LINKS, f"too many links (max_links={self.max_links})")
        return None

    def check_outbound(self) -> Refusal | None:
        """Whether this node may open one more link itself (only ``max_links`` applies)."""
        if self.links >= self.max_links:
            self._refused_outbound += 1
            return Refusal(LINKS, f"this node holds max_links={self.max_links} links already")
        return None

    def refusal_due(self, peer: Hashable, refusal: Refusal, now: float) -> bool:
        """Whether to send ``peer`` ``refusal``, just decided (pacing; counts it when True).

        A peer over its own offer rate gets none: it is the one flooding (an honest peer offers
        once per link), and answering it would spend the budget the others need.
        """
        if refusal.code == PEER_RATE:
            return False
        state = self._peer(peer, now)
        if state.last_refusal is not None and now - state.last_refusal < REFUSAL_INTERVAL:
            return False
        if not self._refusals.take(now):
            return False
        state.last_refusal = now
        self._refusals_sent += 1
        return True

    def _peer(self, peer: Hashable, now: float) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = _Peer(TokenBucket(self.peer_rate, self.peer_burst, now))
            self._peers[peer] = state
            if len(self._peers) > self._max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return state

    # ------------------------------------------------------------------ link accounting

    def link_started(self) -> None:
        """A link task exists (offered, or answering an admitted offer): it negotiates."""
        self.links += 1
        self.negotiating += 1

    def link_ready(self) -> None:
        """A negotiating link opened."""
        self.negotiating -= 1

    def link_ended(self, *, was_ready: bool) -> None:
        """A link task ended (its peer connection closed); ``was_ready``: it had opened."""
        self.links -= 1
        if not was_ready:
            self.negotiating -= 1


def encode_refusal(refusal: Refusal) -> str:
    """The payload of a "refuse" relay: ``"CODE message"``, at most :data:`MAX_REFUSAL` long."""
    return f"{refusal.code} {refusal.message}"[:MAX_REFUSAL]


def decode_refusal(payload: str) -> Refusal:
    """A refusal read from the wire, whatever it holds: an unknown or malformed code becomes
    ``"unknown"`` and the message is cut to printable text of at most :data:`MAX_REFUSAL`."""
    code, _, message = payload[:MAX_REFUSAL].partition(" ")
    if not _CODE_RE.fullmatch(code) or code not in REFUSAL_CODES:
        code = UNKNOWN
    printable = "".join(c if c.isprintable() else "?" for c in message).strip()
    return Refusal(code, printable or "no reason given")
