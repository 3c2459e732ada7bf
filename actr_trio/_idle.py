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


@final
class PeerActivity(Generic[K]):
    """An :class:`IdleTable` of peers bounded in time (``timeout``) and size (``bound``), as
    the gates keep them: a peer's activity is noted at most every ``grain`` seconds (the hot
    path pays one comparison for the peer it saw last), and :meth:`note` says when a sweep is
    due: half a timeout after the last one, or at once over the bound."""

    __slots__ = ("_next_sweep", "_noted", "_noted_until", "bound", "grain", "table", "timeout")

    def __init__(self, timeout: float, bound: int, now: float, grain: float) -> None:
        self.table: IdleTable[K] = IdleTable()
        self.timeout = timeout
        self.bound = bound
        self.grain = grain
        self._next_sweep = now + timeout / 2
        self._noted: K | None = None  # the key noted last, and until when its time will do
        self._noted_until = 0.0

    def __len__(self) -> int:
        return len(self.table)

    def note(self, key: K, now: float) -> bool:
        """``key`` was active at ``now``; whether a sweep (:meth:`sweep`) is due."""
        if key is self._noted and now < self._noted_until:
            return False  # noted moments ago: the table needs no finer time than the grain
        self.table.touch(key, now)
        self._noted, self._noted_until = key, now + self.grain
        return now >= self._next_sweep or len(self.table) > self.bound

    def sweep(self, now: float) -> list[K]:
        """The keys to give up at ``now``, quietest first: those quiet for longer than the
        timeout, then as many of the others as the table is over its bound. The caller
        :meth:`forget`\\ s those it gives up (it may keep some)."""
        self._next_sweep = now + self.timeout / 2
        quiet = list(self.table.idle(now, self.timeout))
        excess = len(self.table) - len(quiet) - self.bound
        if excess > 0:
            seen = set(quiet)
            quiet += [key for key in self.table.oldest() if key not in seen][:excess]
        return quiet

    def forget(self, key: K) -> None:
        self.table.forget(key)
        self._noted = None
