"""The signaling server's admitted connections: one session per WebSocket, and their effects.

Each session's task reads frames into the sans-IO :class:`ServerProtocol` and applies the
effects it returns; one writer task per connection is the only one that writes to its
WebSocket, fed by an outbox bounded in frames and bytes (:class:`~._limits.OutboxBudget`), so
a relay from another connection never waits on a slow receiver: relays beyond the receiver's
share are refused to their sender, and only a connection that does not read its own answers is
disconnected. Connections from an address whose authentications failed wait their turn first
(:class:`~._throttle.AuthThrottle`). The listening, the caps and the WebSocket handshake are
``_server.py``'s.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple, Unpack, final

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._logging import SIGNALING, RateLimiter
from ._limits import OUTBOX_FRAMES, OutboxBudget, SignalingLimits
from ._protocol import (
    AUTH,
    BAD_FRAME,
    BAD_REQUEST,
    IDENTITY,
    KEY,
    OVERLOADED,
    PEER_UNAVAILABLE,
    PROTOCOL,
    REGISTER_TIMEOUT,
    TOO_LARGE,
    Frame,
    encode_frame,
    error_frame,
)
from ._server_effects import (
    Close,
    Forward,
    LookupBinding,
    PersistDeparture,
    PersistRegistration,
    Send,
    ServerEffect,
)
from ._server_protocol import ServerProtocol
from ._store import SignalingStore
from ._throttle import AuthThrottle

logger = logging.getLogger(SIGNALING)

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

# Error codes that mean malformed or abusive input: logged at WARNING (rate-limited). Others
# (peer_unavailable, presence_timeout, takeover...) are part of normal life: INFO.
_WARN_CODES: Final = frozenset(
    {BAD_FRAME, PROTOCOL, BAD_REQUEST, TOO_LARGE, OVERLOADED, REGISTER_TIMEOUT}
)
#: Seconds a closing connection may take to flush its last frames (e.g. the Error frame).
CLOSE_GRACE: Final = 1.0

# An outbox entry: the encoded frame and whether it is a relay from another connection;
# ``None`` means: close now.
_Outgoing = tuple[bytes, bool] | None


@attrs.define(eq=False)
class _Peer:
    """One accepted WebSocket and its outbox."""

    id: int
    ws: WebSocketConnection
    source: str  # the throttle's and the caps' key for the remote address
    outbox_send: trio.MemorySendChannel[_Outgoing]
    outbox_receive: trio.MemoryReceiveChannel[_Outgoing]
    cancel_scope: trio.CancelScope
    budget: OutboxBudget
    closing: bool = False


@final
class ServerSessions:
    """The server's admitted WebSocket connections: their sessions, outboxes and effects.

    The server sets :attr:`protocol` and :attr:`store` when it starts (and clears ``store``
    when it stops); the counters feed :meth:`SignalingServer.statistics`.

    Args:
        limits: the server's budgets (``outbox_bytes`` here).
        throttle: delays connections from addresses whose authentications failed.
        abuse_log: the server's rate-limited log of malformed and abusive input.
    """

    def __init__(
        self, limits: SignalingLimits, throttle: AuthThrottle, abuse_log: RateLimiter
    ) -> None:
        self._limits = limits
        self._throttle = throttle
        self._abuse_log = abuse_log
        self._identity_refusals = RateLimiter(trio.current_time)
        self._refusals = RateLimiter(trio.current_time)
        self.protocol: ServerProtocol | None = None
        self.store: SignalingStore | None = None
        self._store_limiter = trio.CapacityLimiter(1)
        self._peers: dict[int, _Peer] = {}
        self._ids = itertools.count(1)
        self.accepted = 0
        self.rejected_frames = 0
        self.relays_busy = 0
        self.slow_readers = 0

    async def session(self, ws: WebSocketConnection, source: str) -> None:
        """Serve the accepted ``ws`` from ``source`` until it closes (the caller closes it)."""
        peer_id = next(self._ids)
        self.accepted += 1
        if not await self._wait_turn(ws, peer_id, source):
            return
        protocol = self.protocol
        assert protocol is not None
        # Never full: OutboxBudget admits at most OUTBOX_FRAMES; one more slot for the None.
        send, receive = trio.open_memory_channel[_Outgoing](OUTBOX_FRAMES + 1)
        try:
            async with trio.open_nursery() as nursery:
                budget = OutboxBudget(self._limits.outbox_bytes)
                peer = _Peer(peer_id, ws, source, send, receive, nursery.cancel_scope, budget)
                self._peers[peer_id] = peer
                protocol.connect(peer_id, trio.current_time())
                logger.debug("connection %d from %s", peer_id, ws.remote)
                nursery.start_soon(self._write_loop, peer)
                await self._read_loop(peer, protocol)
                # Let the writer flush the last frames (an Error frame), but not forever.
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_GRACE
        except Exception:
            logger.exception("signaling connection %d failed; closing it", peer_id)
        finally:
            self._peers.pop(peer_id, None)
            effects = protocol.disconnect(peer_id)
            with trio.move_on_after(CLOSE_GRACE, shield=True):
                try:
                    await self._apply(effects)
                except Exception:
                    logger.exception("recording the departure of connection %d failed", peer_id)
            logger.debug("connection %d closed", peer_id)

    async def _wait_turn(self, ws: WebSocketConnection, peer_id: int, source: str) -> bool:
        """Hold a connection from an address with recent auth failures until its turn (the
        node's Hello waits unread meanwhile); False if it was turned away instead."""
        wait = self._throttle.admit(source, trio.current_time())
        if wait is None:
            self._refusals.log(
                logger,
                logging.WARNING,
                ("turned away", source),
                "signaling connection %d from %s turned away: too many failed authentications",
                peer_id,
                source,
            )
            frame = error_frame(
                OVERLOADED, "too many failed authentications from this address; retry later"
            )
            with trio.move_on_after(CLOSE_GRACE), contextlib.suppress(ConnectionClosed):
                await ws.send_message(encode_frame(frame))
            return False
        if wait > 0:
            logger.debug("signaling connection %d from %s waits %.2fs", peer_id, source, wait)
            # Not synchronisation: the delay *is* the defence against guessing.
            await trio.sleep(wait)
        return True

    async def _read_loop(self, peer: _Peer, protocol: ServerProtocol) -> None:
        """Read frames until the connection is lost (cancel the writer) or is closing."""
        while not peer.closing:
            deadline = protocol.deadline(peer.id)
            if deadline is None:
                return
            with trio.move_on_at(deadline) as idle:
                try:
                    data = await peer.ws.get_message()
                except ConnectionClosed:
                    peer.cancel_scope.cancel(reason="connection closed by the client")
                    return
            if idle.cancelled_caught:
                effects = protocol.timeout(peer.id, trio.current_time())
            else:
                effects = protocol.receive(peer.id, data, trio.current_time())
            await self._apply(effects)

    async def _write_loop(self, peer: _Peer) -> None:
        """The only writer of ``peer.ws``: send the outbox in order; ``None`` means stop."""
        try:
            async for item in peer.outbox_receive:
                if item is None:
                    break
                data, relay = item
                await peer.ws.send_message(data)
                peer.budget.sent(len(data), relay=relay)
        except ConnectionClosed:
            pass
        # Ends the connection's nursery: the reader stops and trio-websocket closes the socket.
        peer.cancel_scope.cancel(reason="connection finished")

    # -- effects ----------------------------------------------------------------------------------

    async def _apply(self, effects: list[ServerEffect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                if effect.frame.WhichOneof("body") == "error":
                    self._log_error(effect.conn, effect.frame.error)
                self._enqueue(effect.conn, encode_frame(effect.frame))
            elif isinstance(effect, Forward):
                self._forward(effect)
            elif isinstance(effect, Close):
                if effect.reason.startswith(f"{AUTH}:"):
                    self._auth_failed(effect.conn, effect.reason)
                elif effect.reason.startswith((f"{IDENTITY}:", f"{KEY}:")):
                    # A node claiming an id that is not its own: worth an operator's look.
                    # Rate-limited per reason (which names the id): a claimant may repeat it.
                    self._identity_refusals.log(
                        logger,
                        logging.WARNING,
                        effect.reason,
                        "signaling connection %d refused: %s",
                        effect.conn,
                        effect.reason,
                    )
                peer = self._peers.get(effect.conn)
                if peer is not None:
                    peer.closing = True
                    self._enqueue(effect.conn, None)
            elif isinstance(effect, PersistRegistration):
                logger.info("registered %s", effect.actr_id)
                await self._persist(
                    SignalingStore.record_registration, effect.actr_id, effect.public_key
                )
            elif isinstance(effect, LookupBinding):
                bound = await self._persist(SignalingStore.binding, effect.actr_id)
                protocol = self.protocol
                assert protocol is not None
                await self._apply(
                    protocol.binding_found(effect.conn, effect.actr_id, bound, trio.current_time())
                )
            else:
                assert isinstance(effect, PersistDeparture)
                logger.info("departed %s", effect.actr_id)
                await self._persist(SignalingStore.record_departure, effect.actr_id)

    def _auth_failed(self, peer_id: int, reason: str) -> None:
        peer = self._peers.get(peer_id)
        source = peer.source if peer is not None else "unknown"
        delay = self._throttle.failed(source, trio.current_time())
        # Only the log says why a node was refused (the node is told less). One line per
        # address per interval: a guesser must not be able to flood the log either.
        self._refusals.log(
            logger,
            logging.WARNING,
            ("refused", source),
            "signaling connection %d from %s refused: %s (that address now waits %.1fs "
            "between connections)",
            peer_id,
            source,
            reason,
            delay,
        )

    def _log_error(self, peer_id: int, error: Frame.Error) -> None:
        """An Error frame the server sends: malformed or abusive input at WARNING, the rest at
        INFO; one line per code per interval (the next says how many were suppressed)."""
        if error.code == BAD_FRAME:
            self.rejected_frames += 1
        peer = self._peers.get(peer_id)
        source = peer.source if peer is not None else "?"
        level = logging.WARNING if error.code in _WARN_CODES else logging.INFO
        self._abuse_log.log(
            logger,
            level,
            ("error", error.code),
            "signaling connection %d from %s: %s: %s",
            peer_id,
            source,
            error.code,
            error.message,
        )

    def _forward(self, effect: Forward) -> None:
        """A relay to ``effect.conn``, within the share of its outbox that relays may take;
        its sender learns whether it was handed over."""
        if effect.conn not in self._peers:
            answer = error_frame(PEER_UNAVAILABLE, "the target disconnected", effect.request_id)
        elif self._enqueue(effect.conn, encode_frame(effect.frame), relay=True):
            answer = Frame(relayed=Frame.Relayed(request_id=effect.request_id))
        else:
            self.relays_busy += 1
            answer = error_frame(
                OVERLOADED,
                "the target is not reading the relays queued for it; retry later",
                effect.request_id,
            )
            self._log_error(effect.origin, answer.error)
        self._enqueue(effect.origin, encode_frame(answer))

    def _enqueue(self, peer_id: int, data: bytes | None, *, relay: bool = False) -> bool:
        """Queue ``data`` for ``peer_id`` (``None``: close after what is queued); True if
        queued. A relay that does not fit is refused; a connection whose own frames do not fit
        is not reading them, and is disconnected."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        if data is None:
            try:
                peer.outbox_send.send_nowait(None)
            except trio.WouldBlock:  # pragma: no cover - the budget keeps a slot for it
                peer.cancel_scope.cancel(reason="closing")
            return True
        if peer.budget.admit(len(data), relay=relay):
            peer.outbox_send.send_nowait((data, relay))
            return True
        if not relay and not peer.closing:
            self.slow_readers += 1
            self._abuse_log.log(
                logger,
                logging.WARNING,
                ("slow reader",),
                "signaling connection %d from %s is not reading (%d frames, %d bytes queued); "
                "disconnecting it",
                peer_id,
                peer.source,
                peer.budget.queued_frames,
                peer.budget.queued_bytes,
            )
            peer.closing = True
            peer.cancel_scope.cancel(reason="outbox overflow")
        return False

    async def _persist(
        self, method: Callable[[SignalingStore, Unpack[_Args]], _T], *args: *_Args
    ) -> _T:
        store = self.store
        assert store is not None
        # abandon_on_cancel=False: a cancelled caller never leaves a commit in an unknown state.
        return await trio.to_thread.run_sync(
            method, store, *args, limiter=self._store_limiter, abandon_on_cancel=False
        )
