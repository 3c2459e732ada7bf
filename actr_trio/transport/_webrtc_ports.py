"""The asyncio side of one WebRTC transport, started on first need: its loop thread, the ports
of its links, and the loop's exception handler.

Part of the WebRTC transport (``_webrtc.py`` has the overview: "Threads"). Importing aiortc
costs a few hundred milliseconds and starting its loop costs a thread, so neither happens when
a node starts: a node that only ever links over the direct WebSocket lane, or only in process,
never imports aiortc and starts no thread. The first link that needs WebRTC (a ``send`` or
``publish_track`` that opens one, or an offer received) calls :meth:`Ports.start`, which
imports ``_webrtc_aio`` (and with it aiortc) on a worker thread, so the node keeps serving
meanwhile, then starts the loop thread. Links that need it while it starts wait for that one
start: there is only ever one loop per transport.

The transport's ``run`` calls :meth:`Ports.stop` once every link task has ended (shielded):
the loop's remaining tasks are cancelled, the codec threads of any connection left are stopped,
the loop is closed and its thread joined. After that, :meth:`Ports.start` raises
``ShuttingDown``.
"""

from __future__ import annotations

import contextlib
import importlib
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from ..errors import ShuttingDown
from ._webrtc_blame import owned, suspects

if TYPE_CHECKING:
    from ._webrtc_aio import AsyncioThread, LinkEvents, Port
    from ._webrtc_link import Link

__all__ = ["ASYNCIO_SIDE", "Ports"]

#: The module that runs aiortc (it imports aiortc, aioice and asyncio).
ASYNCIO_SIDE: Final = f"{__package__}._webrtc_aio"


class Ports:
    """The asyncio side of one transport's links: the loop thread (started on first need), the
    live ports, and the loop's exception handler that attributes an error to the link it
    concerns.

    Args:
        events: the Trio side (``_webrtc_recv.Receiver``).
        media_slots: kinds of the media transceivers every link gets.
        ice_servers: STUN/TURN URLs (none: nothing leaves the host).
        ice_addresses: the host addresses gathered (empty: aioice's default).
    """

    def __init__(
        self,
        events: LinkEvents,
        media_slots: tuple[str, ...],
        ice_servers: tuple[str, ...],
        ice_addresses: tuple[str, ...],
    ) -> None:
        self.events = events
        self.media_slots = media_slots
        self.ice_servers = ice_servers
        self.ice_addresses = ice_addresses
        #: The loop thread, once started (it stays set after :meth:`stop`: calls are dropped).
        self.thread: AsyncioThread | None = None
        # Only the loop's thread changes this set.
        self.live: set[Port] = set()
        self._starting: trio.Event | None = None
        self._stopped = False
        # Holds the aioice gathering hook from start to stop.
        self._hooks = contextlib.ExitStack()

    def __repr__(self) -> str:
        return f"<Ports thread={self.thread!r} live={len(self.live)} stopped={self._stopped}>"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> AsyncioThread:
        """The loop thread, started by the first call (the others wait for that start).

        Raises:
            ShuttingDown: :meth:`stop` was called.
        """
        while self.thread is None:
            if self._stopped:
                raise ShuttingDown("transport is closed")
            if self._starting is not None:
                await self._starting.wait()
                continue  # started, or that start failed (cancelled): try ourselves
            self._starting = starting = trio.Event()
            try:
                await self._start()
            finally:
                self._starting = None
                starting.set()
        return self.thread

    async def _start(self) -> None:
        # Off the Trio thread: the node keeps serving while aiortc loads (once per process).
        await trio.to_thread.run_sync(importlib.import_module, ASYNCIO_SIDE)
        if self._stopped:  # stopped while aiortc loaded
            raise ShuttingDown("transport is closed")
        # Loaded just now: these are lookups.
        from . import _ice
        from ._webrtc_aio import AsyncioThread

        self._hooks.enter_context(_ice.hooked())
        try:
            thread = AsyncioThread(self.on_asyncio_error)
            thread.start()
        except BaseException:
            self._hooks.close()
            raise
        self.thread = thread

    async def stop(self) -> None:
        """Stop the loop thread if it was started: its tasks cancelled, the codec threads of
        the connections left stopped, the thread joined. Call shielded, once no link task
        runs any more."""
        self._stopped = True
        try:
            if self.thread is not None:
                await self.thread.stop(self.stop_all)
        finally:
            self._hooks.close()

    # ------------------------------------------------------------------ links

    def port(self, link: Link) -> Port:
        """A new port for ``link`` (no peer connection yet: see ``Port.offer``); after
        :meth:`start`."""
        from ._webrtc_aio import Port  # loaded by start(): a lookup

        assert self.thread is not None
        return Port(self, link)

    def stop_all(self) -> None:
        """On the loop, at shutdown: stop the codec threads of every connection left."""
        for port in list(self.live):
            port.stop_decoders()
        self.live.clear()

    def on_asyncio_error(self, context: dict[str, Any]) -> None:
        """The loop's exception handler (any thread): report to Trio; never raises."""
        message = str(context.get("message") or "unhandled error in the asyncio loop")
        exception = context.get("exception")
        link = self._link_of(context)
        if self.thread is not None:
            self.thread.to_trio(partial(self.events.asyncio_error, link, message, exception))

    def _link_of(self, context: dict[str, Any]) -> Link | None:
        found = {id(obj) for obj in suspects(context)}
        if not found:
            return None
        for port in list(self.live):
            if port.pc is not None:
                channels = iter(list(port.channels.values()))
                if found & {id(obj) for obj in owned(port.pc, channels)}:
                    return port.link
        return None
