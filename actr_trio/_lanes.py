"""Priorities of the state path and lanes of the outer ring (docs/architecture.md).

The enum values equal the wire enum values, so conversion is ``int``.
"""

from __future__ import annotations

import enum
from typing import Final, final

from ._proto.actr import wire_pb2


@final
class Priority(enum.IntEnum):
    """State-path priority: the scheduler always serves the highest non-empty one first."""

    LOW = wire_pb2.LOW
    NORMAL = wire_pb2.NORMAL
    HIGH = wire_pb2.HIGH


@final
class Lane(enum.IntEnum):
    """Transport lane (WebRTC data channel or media track) and its reliability."""

    SIGNAL = wire_pb2.SIGNAL
    """Fully reliable, ordered."""
    RELIABLE = wire_pb2.RELIABLE
    """Ordered, maxRetransmits=8; end-to-end acked and resent so nothing acked is lost."""
    LATENCY_FIRST = wire_pb2.LATENCY_FIRST
    """Unordered, maxRetransmits=4; may drop (stream chunks)."""
    MEDIA_TRACK = wire_pb2.MEDIA_TRACK
    """Native WebRTC media track."""

    @property
    def sequenced(self) -> bool:
        """True for lanes whose envelopes are acked, resent and deduplicated."""
        return self in _SEQUENCED


_SEQUENCED: Final = frozenset({Lane.SIGNAL, Lane.RELIABLE})

#: Highest priority first: the order in which the scheduler looks at its queues.
PRIORITIES_HIGH_FIRST: tuple[Priority, ...] = tuple(sorted(Priority, reverse=True))

# Value -> member, computed once: ``Priority(x)`` goes through ``EnumMeta.__call__`` each time,
# a visible cost when done per envelope.
PRIORITY_OF: Final[dict[int, Priority]] = {int(p): p for p in Priority}
LANE_OF: Final[dict[int, Lane]] = {int(lane): lane for lane in Lane}


def as_priority(value: int) -> Priority:
    """``Priority(value)`` without the enum call for the common case (a member or its value).

    Raises:
        ValueError: not a priority.
    """
    found = PRIORITY_OF.get(value)
    if found is None:
        raise ValueError(f"{value!r} is not a valid Priority")
    return found


def as_lane(value: int) -> Lane:
    """``Lane(value)`` without the enum call (see :func:`as_priority`).

    Raises:
        ValueError: not a lane.
    """
    found = LANE_OF.get(value)
    if found is None:
        raise ValueError(f"{value!r} is not a valid Lane")
    return found
