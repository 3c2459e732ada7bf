"""The life of one WebRTC link, in Trio: negotiate, serve its lanes, close.

Part of the WebRTC transport (``_webrtc.py`` has the overview: "Links", "Containment",
"Shutdown"). :meth:`LinkTasks.run_link` is the link task: one per link, in the transport's
nursery. It drives the link's asyncio side (``_webrtc_aio.Port``) through the transport's
``AsyncioThread`` (offer or answer, then wait for the four data channels), runs one flusher per
data lane (``_webrtc_send.flush``) while the link is open, and closes the peer connection when
the link breaks. Whatever is raised on the link ends in this task: the link closes, nothing
else does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import trio

from .._ids import ActrId
from .._logging import TRANSPORT
from ..errors import PeerUnavailable, ShuttingDown
from ._abc import SignalingSession
from ._admission import Admission
from ._webrtc_link import DATA_LANES, Channel, Counters, Link
from ._webrtc_ports import Ports
from ._webrtc_recv import Receiver
from ._webrtc_relays import seal
from ._webrtc_send import flush

__all__ = ["CLOSE_GRACE", "LinkTasks"]

log = logging.getLogger(TRANSPORT)

#: Seconds ``pc.close()`` may take at link teardown (shielded).
CLOSE_GRACE: Final = 5.0


class LinkTasks:
    """Runs the link tasks of one transport (see the module docstring).

    Args:
        links: the transport's link table (a closing link leaves it).
        admission / counters / receiver / ports: the transport's.
        connect_timeout: seconds a new link may take to open its data channels.
        max_frame_size: largest data-channel message written.
        closed: whether the transport is closed (its links then fail with ``ShuttingDown``).
    """

    def __init__(
        self,
        *,
        links: dict[ActrId, Link],
        admission: Admission,
        counters: Counters,
        receiver: Receiver,
        ports: Ports,
        connect_timeout: float,
        max_frame_size: int,
        closed: Callable[[], bool],
    ) -> None:
        self._links = links
        self._admission = admission
        self._counters = counters
        self._receiver = receiver
        self._ports = ports
        self._connect_timeout = connect_timeout
        self._max_frame_size = max_frame_size
        self._closed = closed

    async def run_link(self, session: SignalingSession, link: Link, offer: str | None) -> None:
        """Open, serve and close ``link`` (``offer``: the peer's verified offer to answer, or
        None to offer ourselves)."""
        ready = False
        try:
            with trio.move_on_after(self._connect_timeout) as connecting:
                await self._negotiate(session, link, offer)
                while link.open_channels < len(Channel) and not link.broken.is_set():
                    await link.wakeup.park()
            if connecting.cancelled_caught:
                link.break_(f"did not connect within {self._connect_timeout} s")
            if not link.broken.is_set():
                self._counters.links_opened += 1
                self._admission.link_ready()
                ready = True
                link.ready.set()
                log.info(
                    "linked to %s over WebRTC (%s)",
                    link.peer,
                    "we offered" if link.offerer else "it offered",
                )
                await self._serve_link(link)
        except PeerUnavailable as exc:
            link.break_(str(exc))
        except Exception as exc:
            # aiortc's errors on a bad or unexpected SDP, a socket error, a bug: this link only.
            self._receiver.link_error(link, exc, "negotiation" if not ready else "the link")
        finally:
            # Shielded so a cancelled link still closes its peer connection; _close_link's own
            # bound is CLOSE_GRACE.
            with trio.move_on_after(CLOSE_GRACE + 1, shield=True):
                await self._close_link(link)
            self._admission.link_ended(was_ready=ready)

    async def _serve_link(self, link: Link) -> None:
        async with trio.open_nursery() as nursery:
            for lane in DATA_LANES:
                nursery.start_soon(
                    self._guarded,
                    link,
                    f"{lane.name} flusher",
                    partial(flush, max_frame_size=self._max_frame_size, counters=self._counters),
                    lane,
                )
            await link.broken.wait()
            nursery.cancel_scope.cancel(reason="link closed")

    async def _guarded(
        self, link: Link, where: str, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run one of ``link``'s tasks: an exception in it closes the link, nothing more."""
        try:
            await fn(link, *args)
        except Exception as exc:
            self._receiver.link_error(link, exc, where)

    async def _negotiate(self, session: SignalingSession, link: Link, offer: str | None) -> None:
        ports = self._ports
        # The first link of the transport starts its loop (and imports aiortc); the others
        # wait for that start.
        thread = await ports.start()
        port = link.port = ports.port(link)
        if offer is None:
            local = await thread.run(port.offer)
            await session.send_relay(link.peer, "offer", seal(session, "offer", link.peer, local))
            while not link.answered.is_set() and not link.broken.is_set():
                await link.wakeup.park()
            if link.answer is None:
                return
            await thread.run(partial(port.accept_answer, link.answer))
        else:
            local = await thread.run(partial(port.answer, offer))
            await session.send_relay(link.peer, "answer", seal(session, "answer", link.peer, local))

    async def _close_link(self, link: Link) -> None:
        """Fail the link's senders, close its peer connection (shielded, bounded)."""
        closed = self._closed()
        if link.failure is None:
            link.break_("transport closed")
        if not link.superseded and not closed:
            self._counters.links_failed += 1
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
        error: ShuttingDown | PeerUnavailable = (
            ShuttingDown("transport is closed") if closed else link.error()
        )
        for outbox in link.outboxes.values():
            outbox.fail(error)
        link.ready.set()
        port, thread = link.port, self._ports.thread
        if port is not None and thread is not None:
            with trio.move_on_after(CLOSE_GRACE, shield=True) as closing:
                try:
                    await thread.run(port.close)
                except Exception as exc:
                    log.debug("closing the connection to %s raised %r", link.peer, exc)
            if closing.cancelled_caught:
                # The close overran its bound: stop the codec threads anyway (the loop's
                # shutdown does it again for every connection left).
                thread.call(port.stop_decoders)
        # A link that closes while we run is news (the peer left or the path broke); our own
        # shutdown closing every link is not.
        quiet = closed or link.superseded or link.failure == "transport closed"
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "link to %s closed: %s",
            link.peer,
            link.failure,
        )
