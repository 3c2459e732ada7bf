"""A token bucket: a rate with a burst, given explicit times (sans-IO, no clock of its own).

Invariants:

* Rule 1: tokens refill at ``rate`` per second up to ``burst``; a bucket starts full.
* Rule 2: :meth:`TokenBucket.take` spends ``cost`` tokens only if that many are there, so a
  caller that keeps asking gets exactly ``burst + rate * elapsed`` over any stretch of time.
* Rule 3: :meth:`TokenBucket.charge` spends unconditionally (for work whose cost is known only
  after it was admitted); the balance may go negative, down to ``-burst``, and the debt is
  paid back by refilling before anything else is admitted.
* Rule 4: time going backwards (a caller's clock, or ``now`` values out of order) never adds
  tokens.

Used wherever a peer's requests are budgeted: the signaling server (messages, discovery,
relays per target). A bucket is two floats; callers keep them in bounded tables.
"""

from __future__ import annotations

from typing import final

from .errors import ConfigError


@final
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up, given the time at each call.

    Args:
        rate: tokens added per second (> 0).
        burst: most tokens held at once, and what the bucket starts with (>= 1).
        now: the current time on the caller's clock (any monotonic clock, in seconds).

    Raises:
        ConfigError: ``rate`` is not > 0 or ``burst`` is below 1.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0:
            raise ConfigError(f"rate={rate!r} must be > 0")
        if not burst >= 1:
            raise ConfigError(f"burst={burst!r} must be >= 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def __repr__(self) -> str:
        return f"<TokenBucket {self._tokens:.1f}/{self._burst:g} at {self._rate:g}/s>"

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Most tokens held at once."""
        return self._burst

    def tokens(self, now: float) -> float:
        """The balance at ``now`` (negative while a :meth:`charge` is being paid back)."""
        self._refill(now)
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if the bucket holds them at ``now``; False (nothing spent)
        otherwise. A ``cost`` above ``burst`` is never admitted."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def charge(self, now: float, cost: float) -> None:
        """Spend ``cost`` tokens whatever the balance (it stops at ``-burst``)."""
        self._refill(now)
        self._tokens = max(self._tokens - cost, -self._burst)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._last = now
