"""The signaling server's budgets: what one connection, one address and the whole server may
take. Sans-IO policies fed explicit times and sizes; the server machine and its Trio shell
consult them.

Invariants:

* Rule 1: at most ``max_connections`` connections are open, and at most
  ``max_connections_per_address`` from one source address (an IPv4 address or an IPv6 /64);
  beyond that a connection is closed as soon as it is accepted, before any WebSocket work
  (:class:`ConnectionCaps`). The per-address table only holds addresses with open connections.
* Rule 2: each connection's frames are rate-limited (``message_rate``/``message_burst``);
  a frame over the rate is refused, and a connection refused ``message_burst`` frames beyond
  what the rate pays back is closed (:class:`ConnectionBudget`).
* Rule 3: discovery answers cost one token per peer they hold (at least one), from a bucket of
  its own, so a realm of thousands cannot be asked for in a loop.
* Rule 4: relays from one connection to one target are rate-limited on their own; the table of
  targets is bounded (the least recently used target is forgotten first).
* Rule 5: frames waiting to be written to a connection are bounded in count and bytes
  (:class:`OutboxBudget`). Relays from other connections may fill only a share of it and are
  refused to their sender beyond that; only the connection's own answers can overflow it, so a
  connection is disconnected for not reading only when it does not read its own answers.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Final, final

import attrs

from .._bucket import TokenBucket
from .._ids import ActrId
from ..errors import ConfigError
from ._protocol import MAX_FRAME_SIZE, MAX_RELAY_PAYLOAD

#: Relay targets whose budget one connection remembers (each is a small bucket); beyond it the
#: least recently used is forgotten (its next relay starts with a full burst, still within the
#: connection's message rate).
MAX_RELAY_TARGETS: Final = 256
#: Frames queued for one connection at most (its answers and relays to it).
OUTBOX_FRAMES: Final = 1024
#: The share of a connection's outbox (frames and bytes) that relays from others may fill.
RELAY_SHARE: Final = 4


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name}={value!r} must be > 0")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name}={value!r} must be an integer >= 1")


def _relay_payload(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _at_least_one(instance, attribute, value)
    if value > MAX_FRAME_SIZE:
        raise ConfigError(f"{attribute.name}={value!r} must be at most {MAX_FRAME_SIZE}")


def _outbox(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    _at_least_one(instance, attribute, value)
    if value < 2 * MAX_FRAME_SIZE:
        raise ConfigError(f"{attribute.name}={value!r} must be at least {2 * MAX_FRAME_SIZE}")


@final
@attrs.frozen(kw_only=True)
class SignalingLimits:
    """The signaling server's budgets (``SignalingServer(limits=...)``, ``serve(limits=...)``,
    ``actr-trio signaling --max-connections ...``). The defaults suit a server for a few
    thousand nodes; every refusal is counted in ``SignalingServer.statistics()``.

    Attributes:
        max_connections: open connections at most, in any phase (each costs ~20 KB).
        max_connections_per_address: open connections from one address (IPv6: one /64);
            nodes behind one NAT share it.
        hello_timeout: seconds a connection has, from its turn, to complete the WebSocket
            handshake and register; else it is closed (``register_timeout``).
        message_rate: frames per second one connection may send (heartbeats, discovery,
            relays...); over it a frame is refused with ``overloaded``.
        message_burst: frames one connection may send at once; a connection refused this many
            frames beyond the rate is closed.
        discovery_rate: peers per second the discovery answers to one connection may hold (a
            page of n peers costs n, at least 1).
        discovery_burst: peers one connection may be sent at once in discovery answers.
        relay_rate: relays per second from one connection to one target (a link takes an
            offer and an answer).
        relay_burst: relays from one connection to one target at once.
        max_relay_payload: bytes (UTF-8) of one relay's payload; larger ones are refused with
            ``too_large``.
        outbox_bytes: bytes of frames queued for one connection; a quarter of it (and of its
            1,024 frames) may hold relays from others, beyond which they are refused to their
            senders; a connection whose own answers overflow it is disconnected.
    """

    max_connections: int = attrs.field(default=4096, validator=_at_least_one)
    max_connections_per_address: int = attrs.field(default=256, validator=_at_least_one)
    hello_timeout: float = attrs.field(default=5.0, validator=_positive)
    message_rate: float = attrs.field(default=50.0, validator=_positive)
    message_burst: int = attrs.field(default=200, validator=_at_least_one)
    discovery_rate: float = attrs.field(default=2000.0, validator=_positive)
    discovery_burst: int = attrs.field(default=10_000, validator=_at_least_one)
    relay_rate: float = attrs.field(default=1.0, validator=_positive)
    relay_burst: int = attrs.field(default=10, validator=_at_least_one)
    max_relay_payload: int = attrs.field(default=MAX_RELAY_PAYLOAD, validator=_relay_payload)
    outbox_bytes: int = attrs.field(default=1024 * 1024, validator=_outbox)


class Verdict(enum.Enum):
    """What to do with a frame, per :meth:`ConnectionBudget.message`."""

    ALLOW = "allow"
    REFUSE = "refuse"  # answer overloaded, keep the connection
    CLOSE = "close"  # far over the rate: close the connection


@final
class ConnectionBudget:
    """One connection's buckets: frames, refusals, discovery peers, relays per target."""

    __slots__ = ("_discovery", "_limits", "_messages", "_refusals", "_targets")

    def __init__(self, limits: SignalingLimits, now: float) -> None:
        self._limits = limits
        self._messages = TokenBucket(limits.message_rate, limits.message_burst, now)
        # Refusals beyond what the rate pays back: a client that backs off never empties it.
        self._refusals = TokenBucket(limits.message_rate, limits.message_burst, now)
        self._discovery = TokenBucket(limits.discovery_rate, limits.discovery_burst, now)
        self._targets: OrderedDict[ActrId, TokenBucket] = OrderedDict()

    def message(self, now: float) -> Verdict:
        """One frame arrived at ``now``."""
        if self._messages.take(now):
            return Verdict.ALLOW
        if self._refusals.take(now):
            return Verdict.REFUSE
        return Verdict.CLOSE

    def discovery(self, now: float) -> bool:
        """Whether a discovery request may be answered now (it is charged with :meth:`charge_discovery`
        once its page is known)."""
        return self._discovery.tokens(now) >= 1

    def charge_discovery(self, now: float, peers: int) -> None:
        """A discovery page of ``peers`` peers was sent."""
        self._discovery.charge(now, max(1, peers))

    def relay(self, now: float, target: ActrId) -> bool:
        """Whether one more relay to ``target`` is within budget at ``now`` (spent if so)."""
        bucket = self._targets.get(target)
        if bucket is None:
            bucket = TokenBucket(self._limits.relay_rate, self._limits.relay_burst, now)
            self._targets[target] = bucket
            while len(self._targets) > MAX_RELAY_TARGETS:
                self._targets.popitem(last=False)
        else:
            self._targets.move_to_end(target)
        return bucket.take(now)


class Admission(enum.Enum):
    """Why :meth:`ConnectionCaps.open` turned a connection away (or that it did not)."""

    OPEN = "open"
    SERVER_FULL = "max_connections"
    ADDRESS_FULL = "max_connections_per_address"


@final
class ConnectionCaps:
    """Counts open connections, overall and per source address (Rule 1)."""

    def __init__(self, limits: SignalingLimits) -> None:
        self._max = limits.max_connections
        self._max_per_address = limits.max_connections_per_address
        self._open = 0
        self._by_address: dict[str, int] = {}

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet released."""
        return self._open

    def open(self, source: str) -> Admission:
        """A connection from ``source`` was accepted: admit it (:attr:`Admission.OPEN`, then
        :meth:`release` it when it ends) or say which cap it is over."""
        if self._open >= self._max:
            return Admission.SERVER_FULL
        count = self._by_address.get(source, 0)
        if count >= self._max_per_address:
            return Admission.ADDRESS_FULL
        self._by_address[source] = count + 1
        self._open += 1
        return Admission.OPEN

    def release(self, source: str) -> None:
        """A connection admitted from ``source`` ended."""
        count = self._by_address.get(source, 0)
        if count <= 0:
            raise ValueError(f"no open connection from {source!r} to release")
        if count == 1:
            del self._by_address[source]
        else:
            self._by_address[source] = count - 1
        self._open -= 1

    def addresses(self) -> int:
        """Addresses with open connections (the table's size)."""
        return len(self._by_address)


@final
class OutboxBudget:
    """What is queued for one connection (Rule 5): frames and bytes, and how much of it are
    relays from other connections.

    Args:
        outbox_bytes: bytes queued at most; relays may take ``outbox_bytes // RELAY_SHARE``.
        frames: frames queued at most; relays may take ``frames // RELAY_SHARE``.
    """

    __slots__ = ("_bytes", "_frames", "_max_bytes", "_max_frames", "_relay_bytes", "_relays")

    def __init__(self, outbox_bytes: int, frames: int = OUTBOX_FRAMES) -> None:
        self._max_bytes = outbox_bytes
        self._max_frames = frames
        self._bytes = 0
        self._frames = 0
        self._relay_bytes = 0
        self._relays = 0

    @property
    def queued_bytes(self) -> int:
        """Bytes queued now."""
        return self._bytes

    @property
    def queued_frames(self) -> int:
        """Frames queued now."""
        return self._frames

    def admit(self, size: int, *, relay: bool) -> bool:
        """Queue a frame of ``size`` bytes if it fits (counted until :meth:`sent`). A relay
        from another connection must also fit the relays' share."""
        if self._frames + 1 > self._max_frames or self._bytes + size > self._max_bytes:
            return False
        if relay:
            share = self._max_bytes // RELAY_SHARE
            if (
                self._relays + 1 > self._max_frames // RELAY_SHARE
                or self._relay_bytes + size > share
            ):
                return False
            self._relays += 1
            self._relay_bytes += size
        self._frames += 1
        self._bytes += size
        return True

    def sent(self, size: int, *, relay: bool) -> None:
        """A frame admitted with the same ``size`` and ``relay`` left the queue."""
        self._frames -= 1
        self._bytes -= size
        if relay:
            self._relays -= 1
            self._relay_bytes -= size
