"""What signaling relays to a WebRTC transport: offers admitted or refused, answers, refusals.

Part of the WebRTC transport (``_webrtc.py`` has the overview: "Links", "Admission",
"Binding"). :class:`RelayHandler` reads the session's relays in Trio and never waits on anything
but the next relay, so a flood of relays is refused at the rate it arrives. An admitted and
verified offer becomes a new link (the transport's ``start_link``); a refused one gets a
"refuse" relay back, paced by the admission policy and sent by :meth:`RelayHandler.send_refusals`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

import trio

from .._config import Config
from .._ids import ActrId
from .._logging import TRANSPORT, RateLimiter
from ..errors import PeerNotAuthenticated, TransportError
from . import _binding
from ._abc import Relay, SignalingSession
from ._admission import Admission, Refusal, decode_refusal, encode_refusal
from ._webrtc_link import Counters, Link

__all__ = ["REFUSAL_QUEUE", "RelayHandler"]

log = logging.getLogger(TRANSPORT)

#: Refusals waiting to be relayed; beyond it a refusal is not sent (the offerer times out).
REFUSAL_QUEUE: Final = 16


class RelayHandler:
    """Offers, answers and refusals relayed to one transport (see the module docstring).

    Args:
        config: ``max_relay_payload`` is used.
        links: the transport's link table (peer -> its current link).
        admission: the transport's admission policy.
        counters: the transport's counters (``bindings_refused``).
        rate: the transport's log rate limiter.
        new_link: a new answering link for a peer, registered in ``links`` and counted
            (``Admission.link_started``), its task started with the verified offer.
    """

    def __init__(
        self,
        config: Config,
        *,
        links: dict[ActrId, Link],
        admission: Admission,
        counters: Counters,
        rate: RateLimiter,
        new_link: Callable[[ActrId, str], None],
    ) -> None:
        self._config = config
        self._links = links
        self._admission = admission
        self._counters = counters
        self._rate = rate
        self._new_link = new_link
        self._refusal_send, self.refusal_recv = trio.open_memory_channel[tuple[ActrId, str]](
            REFUSAL_QUEUE
        )

    async def serve(self, session: SignalingSession) -> None:
        """Handle what signaling relays to us until cancelled or the relays end."""
        async for relay in session.relays:
            if relay.kind == "offer":
                self._on_offer(session, relay)
            elif relay.kind == "answer":
                self._on_answer(session, relay)
            elif relay.kind == "refuse":
                self._on_refusal(relay)
            # "ice": candidates travel inside the SDP (non-trickle), nothing to do.
            await trio.lowlevel.checkpoint()

    def _on_offer(self, session: SignalingSession, relay: Relay) -> None:
        peer = relay.source
        current = self._links.get(peer)
        if current is not None and current.offerer and not current.ready.is_set():
            if session.actr_id < peer:
                log.debug("glare with %s: we stay the offerer", peer)
                return
            log.debug("glare with %s: dropping our offer, answering theirs", peer)
        replaces = None if current is None else current.ready.is_set()
        now = time.monotonic()
        refusal = self._admission.check_offer(peer, len(relay.payload), now, replaces=replaces)
        if refusal is not None:
            self._refuse_offer(peer, refusal, now)
            return
        try:
            offer = self._open(session, relay, "offer")
        except PeerNotAuthenticated as exc:
            # Not answered, and no link is replaced: a forged offer cannot even cut the link we
            # have with the node it names.
            self._refused(relay, exc)
            return
        if current is not None:
            current.superseded = True
            current.break_("superseded by a new offer from the peer")
        self._new_link(peer, offer)

    def _on_answer(self, session: SignalingSession, relay: Relay) -> None:
        link = self._links.get(relay.source)
        if link is None or not link.offerer or link.answered.is_set():
            log.debug("stale answer from %s ignored", relay.source)
            return
        try:
            link.answer = self._open(session, relay, "answer")
        except PeerNotAuthenticated as exc:
            self._refused(relay, exc)
            link.refuse(f"answer refused: {exc}")
            return
        link.answered.set()
        link.wakeup.unpark_all()

    def _on_refusal(self, relay: Relay) -> None:
        """The peer refused our offer: its senders fail now, with the peer's reason."""
        link = self._links.get(relay.source)
        if link is None or not link.offerer or link.answered.is_set() or link.ready.is_set():
            log.debug("stale refusal from %s ignored", relay.source)
            return
        refusal = decode_refusal(relay.payload)
        self._rate.log(
            log,
            logging.INFO,
            (relay.source, "refused us"),
            "%s refused our offer (%s): %s",
            relay.source,
            refusal.code,
            refusal.message,
        )
        link.refused_by_peer(refusal)

    def _refuse_offer(self, peer: ActrId, refusal: Refusal, now: float) -> None:
        self._rate.log(
            log,
            logging.WARNING,
            ("offer refused", refusal.code),
            "refused an offer from %s: %s",
            peer,
            refusal.message,
        )
        if self._admission.refusal_due(peer, refusal, now):
            # A full queue: the offerer times out instead of failing fast.
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                self._refusal_send.send_nowait((peer, encode_refusal(refusal)))

    async def send_refusals(self, session: SignalingSession) -> None:
        """Relay the refusals decided (paced) until cancelled."""
        async for peer, payload in self.refusal_recv:
            try:
                await session.send_relay(peer, "refuse", payload)
            except TransportError as exc:  # gone, or signaling busy or away: it times out
                log.debug("refusal to %s not relayed: %s", peer, exc)

    def _open(self, session: SignalingSession, relay: Relay, kind: _binding.Kind) -> str:
        """The relayed SDP once its binding verified (see ``_binding.open_description``)."""
        verified = _binding.open_description(
            relay.payload,
            kind=kind,
            source=relay.source,
            local=session.actr_id,
            issuer_key=session.issuer_key,
            now=time.time(),
            max_size=self._config.max_relay_payload,
        )
        return verified.sdp

    def _refused(self, relay: Relay, error: PeerNotAuthenticated) -> None:
        self._counters.bindings_refused += 1
        self._rate.log(
            log,
            logging.WARNING,
            (relay.source, "binding"),
            "refused the %s relayed as from %s: %s; no link",
            relay.kind,
            relay.source,
            error,
        )


def seal(session: SignalingSession, kind: _binding.Kind, peer: ActrId, sdp: str) -> str:
    """Our SDP for ``peer`` as a relay payload: with our credential and binding signature."""
    return _binding.seal_description(
        kind,
        sdp,
        signer=session.actr_id,
        peer=peer,
        credential=session.credential,
        sign=session.node_key.sign,
    )
