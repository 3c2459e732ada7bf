"""Last activity per key, oldest first: what per-peer state a node may forget.

A hostile peer must not make a node remember without bound, and an honest one that went away
must not keep its state for ever. :class:`IdleTable` records when each key (a peer, or a peer
and a stream id) was last active; :meth:`IdleTable.idle` yields those quiet for longer than a
timeout, oldest first, and :meth:`IdleTable.oldest` the next one to give up when a table is
over its bound. Sans-IO: the caller passes the time (the runtime's Trio clock).

An ``OrderedDict`` kept in activity order: ``touch`` is O(1), and a sweep looks only at the
keys it returns plus one (the first still active ends it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar, final

K = TypeVar("K", bound=Hashable)


@final
class IdleTable(Generic[K]):
    """Last activity per key, in activity order (see the module docstring)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: OrderedDict[K, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def touch(self, key: K, now: float) -> None:
        """``key`` was active at ``now`` (times never go back: the caller's clock is monotonic)."""
        last = self._last
        if key in last:
            last.move_to_end(key)
        last[key] = now

    def forget(self, key: K) -> None:
        self._last.pop(key, None)

    def last(self, key: K) -> float | None:
        """When ``key`` was last active, if it is known."""
        return self._last.get(key)

    def idle(self, now: float, timeout: float) -> Iterator[K]:
        """Keys not active for more than ``timeout`` seconds at ``now``, oldest first.

        A snapshot: the caller may forget (or touch) the keys it gets while iterating.
        """
        horizon = now - timeout
        quiet: list[K] = []
        for key, last in self._last.items():
            if last >= horizon:
                break
            quiet.append(key)
        return iter(quiet)

    def oldest(self) -> Iterator[K]:
        """Every key, least recently active first (a snapshot)."""
        return iter(list(self._last))
