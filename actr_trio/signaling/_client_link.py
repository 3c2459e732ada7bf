"""The signaling client's registered connection and its requests waiting for their answers.

A request (a discovery page, a relay) is written, then waits until the reader resolves it with
the server's answer, or until the connection is lost (:meth:`Link.fail_pending`): requests in
flight when a connection drops fail with ``SignalingError`` at once.
"""

from __future__ import annotations

from typing import final

import attrs
import outcome
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .._ids import ActrId
from ..errors import SignalingError
from ._client_protocol import ClientProtocol
from ._protocol import Frame, encode_frame

#: A request's answer: a discovery page and its next cursor ((), 0 for a relay).
Answer = tuple[tuple[ActrId, ...], int]


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its answer (filled once, by the reader or by a disconnect)."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: outcome.Outcome[Answer] | None = None

    def resolve(self, result: outcome.Outcome[Answer]) -> None:
        if self.result is None:
            self.result = result
            self.done.set()


@final
@attrs.define(eq=False)
class Link:
    """The currently registered connection."""

    ws: WebSocketConnection
    protocol: ClientProtocol
    pending: dict[int, _Pending] = attrs.field(factory=dict)

    async def request(self, request_id: int, frame: Frame) -> Answer:
        """Send the request ``frame`` and wait for its answer.

        Raises:
            SignalingError: the connection was lost before the answer came.
        """
        pending = _Pending()
        self.pending[request_id] = pending
        try:
            try:
                await self.ws.send_message(encode_frame(frame))
            except ConnectionClosed as exc:
                raise SignalingError(f"signaling connection lost: {exc}") from exc
            await pending.done.wait()
        finally:
            self.pending.pop(request_id, None)
        assert pending.result is not None
        return pending.result.unwrap()

    def resolve(self, request_id: int, result: outcome.Outcome[Answer]) -> None:
        """The answer to ``request_id`` came (a late one, for a request given up: ignored)."""
        pending = self.pending.get(request_id)
        if pending is not None:
            pending.resolve(result)

    def fail_pending(self) -> None:
        """The connection is gone: every request still waiting fails."""
        for pending in self.pending.values():
            error = SignalingError("signaling connection lost before the answer came")
            pending.resolve(outcome.Error(error))
        self.pending.clear()
