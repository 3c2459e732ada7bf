"""Failed authentications slow down per source address: a sans-IO policy the server consults.

Invariants:

* Rule 1: after ``k`` failures from an address, its connections are served at most one per
  ``delay(k) = min(base * 2**(k-1), cap)`` seconds, however many it opens at once: each
  connection reserves the next free slot (:meth:`AuthThrottle.admit`).
* Rule 2: a connection whose slot is more than ``cap`` seconds away is turned away at once, so
  a flood of parallel connections neither waits in the server nor gets a guess.
* Rule 3: the table is bounded: an address is forgotten ``forget_after`` seconds after its last
  failure, and beyond ``max_addresses`` the one that failed longest ago is forgotten first.

A correct secret does not reset an address: a member of one realm could otherwise interleave
successes with guesses at another realm's secret. Addresses are IPv4 addresses or IPv6 /64
networks (one IPv6 host usually holds a whole /64).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Final, final

import attrs

from ..errors import ConfigError

#: Delay after the first failure from an address; doubles with each further failure.
BASE_DELAY: Final = 0.1
#: Longest delay between two connections served from one address (also Rule 2's horizon).
MAX_DELAY: Final = 5.0
#: Seconds without a failure after which an address starts afresh.
FORGET_AFTER: Final = 60.0
#: Addresses remembered at once (each entry is a few dozen bytes).
MAX_ADDRESSES: Final = 4096
# 2**64 * BASE_DELAY is far beyond any cap: stop doubling there (no float overflow).
_MAX_DOUBLINGS: Final = 64
# Seconds of float rounding tolerated when a turn is exactly max_delay away.
_SLACK: Final = 1e-6


@attrs.define(slots=True)
class _Record:
    failures: int
    last_failure: float
    next_slot: float  # earliest time the next connection from this address is served


@final
@attrs.frozen
class AuthThrottleStatistics:
    """Snapshot of an :class:`AuthThrottle`.

    Attributes:
        failures: failed authentications recorded.
        delayed: connections made to wait because of earlier failures from their address.
        turned_away: connections refused at once because their address was too far behind.
        addresses: addresses currently remembered.
    """

    failures: int
    delayed: int
    turned_away: int
    addresses: int


def source_key(address: str) -> str:
    """The throttle's key for a peer address: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@final
class AuthThrottle:
    """Per-source exponential delay after failed authentications, given explicit times.

    The server calls :meth:`admit` when a connection is accepted (and waits the seconds it
    returns before serving it, or turns it away on ``None``) and :meth:`failed` when a
    connection's authentication failed.

    Args:
        base_delay: delay after the first failure.
        max_delay: the bound of the doubling, and how far ahead a connection may be scheduled.
        forget_after: seconds after an address's last failure when it is forgotten.
        max_addresses: addresses remembered at once.
    """

    def __init__(
        self,
        *,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ConfigError(f"base_delay={base_delay!r} must be > 0 and <= max_delay")
        if not forget_after > 0 or max_addresses < 1:
            raise ConfigError("forget_after and max_addresses must be > 0")
        self._base = base_delay
        self._max = max_delay
        self._forget_after = forget_after
        self._max_addresses = max_addresses
        # Least recently failed first: the end of the order is the freshest failure.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._failures = 0
        self._delayed = 0
        self._turned_away = 0

    def delay(self, failures: int) -> float:
        """Seconds between two connections served from an address with ``failures``."""
        if failures <= 0:
            return 0.0
        return min(self._base * 2.0 ** min(failures - 1, _MAX_DOUBLINGS), self._max)

    def admit(self, key: str, now: float) -> float | None:
        """A connection from ``key`` was accepted at ``now``: seconds it must wait before it is
        served (0.0 for an address with no recent failures), or ``None``: turn it away."""
        record = self._current(key, now)
        if record is None:
            return 0.0
        slot = max(now, record.next_slot)
        wait = slot - now
        if wait > self._max + _SLACK:
            self._turned_away += 1
            return None
        record.next_slot = slot + self.delay(record.failures)
        if wait > 0:
            self._delayed += 1
        return wait

    def failed(self, key: str, now: float) -> float:
        """An authentication from ``key`` failed at ``now``; returns the address's new delay."""
        record = self._current(key, now)
        if record is None:
            record = _Record(failures=0, last_failure=now, next_slot=now)
            self._records[key] = record
            while len(self._records) > self._max_addresses:
                self._records.popitem(last=False)
        record.failures += 1
        record.last_failure = now
        self._records.move_to_end(key)
        delay = self.delay(record.failures)
        record.next_slot = max(record.next_slot, now + delay)
        self._failures += 1
        return delay

    def statistics(self) -> AuthThrottleStatistics:
        """A snapshot of the counters."""
        return AuthThrottleStatistics(
            failures=self._failures,
            delayed=self._delayed,
            turned_away=self._turned_away,
            addresses=len(self._records),
        )

    def _current(self, key: str, now: float) -> _Record | None:
        """``key``'s record unless it expired (expired ones, oldest first, are dropped)."""
        while self._records:
            oldest_key, oldest = next(iter(self._records.items()))
            if now - oldest.last_failure <= self._forget_after:
                break
            del self._records[oldest_key]
        return self._records.get(key)
