"""Logger names and rate-limited logging.

actr_trio logs under a few public names, whatever module the line comes from; configure these
(``logging.getLogger("actr_trio.link").setLevel(logging.DEBUG)``), not module paths:

* ``actr_trio.node``: a node's lifecycle (started, draining, stopped), handler failures,
  dead letters, supervisor restarts.
* ``actr_trio.link``: delivery between peers: resends, refusals, expiries, peers that said
  goodbye.
* ``actr_trio.transport``: WebRTC and loopback links (linked to a peer, link closed or failed).
* ``actr_trio.signaling``: the signaling client (registered as ...) and server.
* ``actr_trio.mailbox``: the mailbox database and the dead-letter table.
* ``actr_trio.streams``: stream and track callbacks (the fast path).

``actr_trio`` is their common parent. At INFO a node logs its lifecycle and what happens to its
peers; per-envelope detail is DEBUG. Lines that could repeat while a peer is unreachable
(resends, expiries) are rate-limited by :class:`RateLimiter`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final

import attrs

__all__ = [
    "LINK",
    "LOGGER_NAMES",
    "MAILBOX",
    "NODE",
    "SIGNALING",
    "STREAMS",
    "TRANSPORT",
    "RateLimiter",
]

NODE: Final = "actr_trio.node"
LINK: Final = "actr_trio.link"
TRANSPORT: Final = "actr_trio.transport"
SIGNALING: Final = "actr_trio.signaling"
MAILBOX: Final = "actr_trio.mailbox"
STREAMS: Final = "actr_trio.streams"
#: Every logger actr_trio writes to.
LOGGER_NAMES: Final = (NODE, LINK, TRANSPORT, SIGNALING, MAILBOX, STREAMS)

#: Default seconds between two lines of one rate-limited key.
RATE_INTERVAL: Final = 10.0
#: Keys a limiter remembers; the oldest is forgotten beyond this (a churn of peers stays bounded).
RATE_KEYS: Final = 1024


@attrs.define(slots=True)
class _Slot:
    last: float
    suppressed: int = 0


class RateLimiter:
    """At most one log line per key every ``interval`` seconds.

    The first line of a key is written at once; lines within ``interval`` after it are counted,
    not written; the next line written for that key says how many were suppressed. ``clock``
    returns seconds (the runtime passes ``trio.current_time``, so virtual-clock tests see it).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        interval: float = RATE_INTERVAL,
        max_keys: int = RATE_KEYS,
    ) -> None:
        if interval <= 0 or max_keys <= 0:
            raise ValueError("interval and max_keys must be > 0")
        self._clock = clock
        self.interval = interval
        self._max_keys = max_keys
        self._slots: OrderedDict[Hashable, _Slot] = OrderedDict()

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: Hashable,
        msg: str,
        *args: object,
    ) -> bool:
        """Log ``msg % args`` unless ``key`` logged within ``interval``; True if written."""
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        slot = self._slots.get(key)
        if slot is not None and now - slot.last < self.interval:
            slot.suppressed += 1
            return False
        self._slots[key] = _Slot(now)
        self._slots.move_to_end(key)
        while len(self._slots) > self._max_keys:
            self._slots.popitem(last=False)
        if slot is not None and slot.suppressed:
            msg += " (%d similar lines suppressed in the last %.0f s)"
            args = (*args, slot.suppressed, now - slot.last)
        logger.log(level, msg, *args)
        return True
