"""FLG2: media frames on the fast path (``ctx.tracks``).

Frames of one track reach its callback in arrival order; a callback that falls behind loses
frames (media is realtime, like RTP), counted in ``statistics().dropped``. Tracks are kept per
``(peer, track_id)`` (see ``_fastlane.py``): frames of a track id nothing registered are
refused and not remembered, a peer has at most ``max_per_peer`` tracks open, and a track
without a frame for ``idle_timeout`` seconds is closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import trio

from ._fastlane import IDLE_TIMEOUT, MAX_PER_PEER, FastLane, FastLaneStatistics
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

    def __init__(
        self,
        *,
        buffer: int,
        make_context: Callable[[ActrId | None], C],
        max_per_peer: int = MAX_PER_PEER,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self._lane: FastLane[InboundFrame] = FastLane(
            "track", buffer=buffer, max_per_peer=max_per_peer, idle_timeout=idle_timeout
        )
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

    def open_tracks(self, peer: ActrId | None) -> int:
        """Tracks ``peer`` has open to this node now."""
        return self._lane.open_keys(peer)

    def expire(self, now: float) -> int:
        """Close the tracks without a frame for longer than the timeout at ``now``; how many."""
        return self._lane.expire(now)

    def deliver(self, frame: InboundFrame) -> None:
        """Route one inbound frame (never waits: a full buffer drops it)."""
        self._lane.offer((frame.peer, frame.track_id), frame)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._lane.run(task_status=task_status)
