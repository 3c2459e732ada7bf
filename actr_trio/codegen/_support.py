"""What generated ``<name>_actr.py`` modules need at run time besides the public runtime API.

Kept tiny and free of grpcio-tools: generated code imports it in production.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from google.protobuf.message import Message

from .._ids import ActrId
from .._lanes import Lane, Priority

_M = TypeVar("_M", bound=Message)


class Caller(Protocol):
    """Anything generated clients can call through: a handler's ``Context`` or an ``ActrRef``.

    Mirrors ``ctx.call`` for protobuf requests and responses.
    """

    async def call(
        self,
        target: ActrId,
        route_key: str,
        request: Message,
        /,
        *,
        response: type[_M],
        timeout: float | None = None,
        priority: Priority = Priority.NORMAL,
        lane: Lane = Lane.RELIABLE,
    ) -> _M:
        """Send ``request`` to ``target``'s route ``route_key`` and return the decoded response."""
        ...
