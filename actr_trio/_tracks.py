"""FLG2: media frames on the fast path (``ctx.tracks``).

Frames of one track reach its callback in arrival order; a callback that falls behind loses
frames (media is realtime, like RTP), counted in ``statistics().dropped``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import trio

from ._fastlane import FastLane, FastLaneStatistics
from ._ids import ActrId
from .transport._abc import InboundFrame

#: The context a callback gets (``Context``; generic here, so this module needs not import it).
C = TypeVar("C")

#: ``async def callback(frame, ctx)``.
TrackCallback = Callable[[InboundFrame, C], Awaitable[None]]

#: The public name of a received frame: ``track_id``, ``sequence``, ``kind``, ``pts``,
#: ``width``, ``height``, ``frame`` (the transport's frame object) and ``peer``.
MediaFrame = InboundFrame


@final
class TrackRegistry(Generic[C]):
    """``track_id -> callback`` for inbound media frames (``ctx.tracks``, a
    ``TrackRegistry[Context]``)."""

    def __init__(self, *, buffer: int, make_context: Callable[[ActrId | None], C]) -> None:
        self._lane: FastLane[str, InboundFrame] = FastLane("track", buffer=buffer)
        self._make_context = make_context

    def register(self, track_id: str, callback: TrackCallback[C]) -> None:
        """Deliver frames of ``track_id`` to ``async def callback(frame, ctx)``.

        Raises:
            KeyError: the track already has a callback.
        """

        async def deliver(frame: InboundFrame) -> None:
            await callback(frame, self._make_context(frame.peer))

        self._lane.register(track_id, deliver)

    def unregister(self, track_id: str) -> None:
        """Stop delivering ``track_id``."""
        self._lane.unregister(track_id)

    def statistics(self) -> FastLaneStatistics:
        return self._lane.statistics()

    def deliver(self, frame: InboundFrame) -> None:
        """Route one inbound frame (never waits: a full buffer drops it)."""
        self._lane.offer(frame.track_id, frame)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._lane.run(task_status=task_status)
