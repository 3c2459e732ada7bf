"""Node configuration: a frozen value, validated on construction, loadable from TOML + env.

Every field carries a :class:`_Rule` (what it accepts, and how ``ACTR_*`` text becomes a value)
and a description in its attrs metadata. The same rule checks a value whether it comes from
code, from a file or from the environment, so the three sources can only differ in how the
error names where the value came from. :func:`config_reference` renders the fields as the
Markdown page ``docs/config-reference.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import textwrap
import tomllib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, cast, final
from urllib.parse import urlsplit

import attrs

from ._acl import Acl
from ._identity import decode_public_key
from ._ids import NAME_RE
from ._metrics import split_address
from .errors import ConfigError

__all__ = ["Config", "Synchronous", "config_reference"]

Synchronous = Literal["NORMAL", "FULL"]

_ENV_PREFIX: Final = "ACTR_"
# ACTR_* variables the project reads for other purposes: not typos of a Config field.
_NOT_CONFIG_ENV: Final = frozenset({"ACTR_UPDATE_GOLDEN", "ACTR_SIGNALING_REALMS"})
# A payload is held whole in memory and stored as one SQLite row (whose default length limit
# is 1e9 bytes), so anything near that is a mistake rather than a configuration.
_MAX_PAYLOAD_LIMIT: Final = 512 * 1024 * 1024
_ICE_SCHEMES: Final = ("stun:", "stuns:", "turn:", "turns:")
_SIGNALING_SCHEMES: Final = ("ws", "wss")
#: Shortest realm secret accepted, by node and server alike: 16 random bytes (128 bits) cannot
#: be guessed online, whatever the rate; a short human password can.
MIN_SECRET_BYTES: Final = 16

# attrs metadata keys.
_RULE: Final = "actr_rule"
_DOC: Final = "actr_doc"
_SECRET: Final = "actr_secret"

Problem = str | None  # why a value is wrong ("is not an integer"), or None when it is right


def _text(raw: str) -> object:
    return raw


@final
@attrs.frozen
class _Rule:
    """What one field accepts, checked the same way for values from code, file or env.

    ``problem`` accepts what code or TOML may legitimately pass *before* conversion too (an
    ``int`` for a float field, a ``str`` for a path, a list for a tuple), so a loader can check
    a raw value and label the error with its source before the value reaches ``Config``.
    """

    accepts: str  # for the reference page, e.g. "an integer > 0"
    problem: Callable[[Any], Problem]
    parse: Callable[[str], object] = _text  # ACTR_* text to a value; unparsable text is kept
    env: bool = True  # False: no ACTR_* variable (a structured value, such as the ACL)


def _integer(minimum: int, maximum: int | None = None) -> _Rule:
    def problem(value: Any) -> Problem:
        if type(value) is not int:  # bool is an int subclass; True is not a size
            return "is not an integer"
        if value < minimum:
            return f"must be >= {minimum}" if minimum != 1 else "must be > 0"
        if maximum is not None and value > maximum:
            return f"must be <= {maximum}"
        return None

    def parse(raw: str) -> object:
        try:
            return int(raw)
        except ValueError:
            return raw

    accepts = f"an integer >= {minimum}" if minimum != 1 else "an integer > 0"
    if maximum is not None:
        accepts = f"an integer from {minimum} to {maximum}"
    return _Rule(accepts, problem, parse)


def _positive_seconds() -> _Rule:
    def problem(value: Any) -> Problem:
        if type(value) not in (int, float):
            return "is not a number"
        if not math.isfinite(value) or value <= 0:
            return "must be a finite number of seconds > 0"
        return None

    def parse(raw: str) -> object:
        try:
            return float(raw)
        except ValueError:
            return raw

    return _Rule("a number of seconds > 0", problem, parse)


def _positive_rate(unit: str) -> _Rule:
    def problem(value: Any) -> Problem:
        if type(value) not in (int, float):
            return "is not a number"
        if not math.isfinite(value) or value <= 0:
            return f"must be a finite number of {unit} > 0"
        return None

    def parse(raw: str) -> object:
        try:
            return float(raw)
        except ValueError:
            return raw

    return _Rule(f"a number of {unit} > 0", problem, parse)


def _fraction() -> _Rule:
    def problem(value: Any) -> Problem:
        if type(value) not in (int, float):
            return "is not a number"
        if not math.isfinite(value) or not 0 < value <= 1:
            return "must be a fraction > 0 and <= 1"
        return None

    def parse(raw: str) -> object:
        try:
            return float(raw)
        except ValueError:
            return raw

    return _Rule("a number > 0 and <= 1", problem, parse)


def _choice(*options: str) -> _Rule:
    listed = " or ".join(repr(o) for o in options)

    def problem(value: Any) -> Problem:
        return None if value in options and isinstance(value, str) else f"must be {listed}"

    return _Rule(listed, problem)


def _optional(rule: _Rule) -> _Rule:
    """``rule`` or None; an empty ``ACTR_*`` variable means None."""

    def problem(value: Any) -> Problem:
        return None if value is None else rule.problem(value)

    def parse(raw: str) -> object:
        return None if raw == "" else rule.parse(raw)

    return _Rule(f"None, or {rule.accepts}", problem, parse, env=rule.env)


def _realm_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    # The same pattern the signaling server and ActrId apply to realm names.
    if not NAME_RE.fullmatch(value):
        return "must be 1-64 characters of A-Z a-z 0-9 . _ -"
    return None


def _url_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    if not value:
        return "is empty (None means no signaling server)"
    if "://" not in value:
        return f"has no scheme: write 'ws://{value}'"
    parts = urlsplit(value)
    if parts.scheme not in _SIGNALING_SCHEMES:
        return f"must be ws://HOST:PORT or wss://HOST:PORT, not {parts.scheme}://"
    try:
        port = parts.port
    except ValueError:  # urlsplit parses lazily: a port that is not a number fails here
        return f"has an invalid port: write {parts.scheme}://HOST:PORT"
    if not parts.hostname or port is None:
        return f"must be {parts.scheme}://HOST:PORT (host and port both required)"
    return None


def secret_problem(value: Any) -> Problem:
    """Why ``value`` is not an acceptable realm secret (None if it is); never shows it."""
    if not isinstance(value, str):
        return "is not a string"
    if not value:
        return "is empty (None means no secret)"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return (
            f"is shorter than {MIN_SECRET_BYTES} bytes: use a random secret, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return None


def _ca_problem(value: Any) -> Problem:
    if not isinstance(value, str | os.PathLike):
        return "is not a path"
    # Whether the file exists and holds certificates is checked when the node connects (the
    # Config may be built on another machine than the one that runs the node).
    return "is empty (None means the system trust store)" if not os.fspath(value) else None


def _key_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    try:
        decode_public_key(value)
    except ConfigError:
        return "is not an Ed25519 public key (64 hex digits or 44 base64 characters)"
    return None


def _path_problem(value: Any) -> Problem:
    if not isinstance(value, str | os.PathLike):
        return "is not a path"
    return "is empty (None means an in-memory mailbox)" if not os.fspath(value) else None


def _parse_path(raw: str) -> object:
    return Path(raw)


def _strings(item_problem: Callable[[str], Problem]) -> Callable[[Any], Problem]:
    def problem(value: Any) -> Problem:
        if isinstance(value, str):
            value = _to_tuple(value)
        if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
            return "is not a list of strings"
        for item in value:
            reason = item_problem(item)
            if reason is not None:
                return f"has {item!r}, which {reason}"
        return None

    return problem


def _ip_problem(item: str) -> Problem:
    try:
        ipaddress.ip_address(item)
    except ValueError:
        return "is not an IP address"
    return None


def _address_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    try:
        split_address(value)
    except ValueError as exc:
        return f"is not an address to listen on ({exc})"
    return None


def _listen_problem(value: Any) -> Problem:
    from .transport._websocket_address import parse_address

    if not isinstance(value, str):
        return "is not a string"
    try:
        host, _ = parse_address(value, allow_any_port=True)
    except ValueError as exc:
        return str(exc)
    # What is bound is advertised as is: peers cannot dial a wildcard address.
    if host in ("0.0.0.0", "::"):
        return "is a wildcard address, which peers cannot dial: name the interface's address"
    return None


def _ice_server_problem(item: str) -> Problem:
    return None if item.startswith(_ICE_SCHEMES) else "is not a stun:/turn: URL"


def _parse_list(raw: str) -> object:
    return _to_tuple(raw)


def _acl_problem(value: Any) -> Problem:
    if isinstance(value, Acl):
        return None
    if not isinstance(value, Mapping):
        return "is not an Acl (or an [acl] table in Actr.toml)"
    try:
        Acl.from_mapping(value, where="acl")
    except ConfigError as exc:
        return f"is not a valid ACL: {exc}"
    return None


def _to_acl(value: Acl | Mapping[str, Any] | None) -> Acl | None:
    # An [acl] table from Actr.toml becomes an Acl; anything invalid is left for the validator.
    if isinstance(value, Mapping):
        try:
            return Acl.from_mapping(value)
        except ConfigError:
            pass
    return cast("Acl | None", value)


def _meta(rule: _Rule, doc: str, *, secret: bool = False) -> dict[str, object]:
    return {_RULE: rule, _DOC: doc, _SECRET: secret}


def _described(value: object, attribute: attrs.Attribute[Any], source: str) -> str:
    shown = "<hidden>" if attribute.metadata[_SECRET] else repr(value)
    return f"{source}={shown}"


def _check(attribute: attrs.Attribute[Any], value: object, source: str) -> None:
    """Raise ConfigError ``"{source}={value!r} {reason}"`` if ``value`` breaks the field's rule."""
    rule: _Rule = attribute.metadata[_RULE]
    reason = rule.problem(value)
    if reason is not None:
        raise ConfigError(f"{_described(value, attribute, source)} {reason}")


def _validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check(attribute, value, f"Config.{attribute.name}")


# Converters only normalise values of the right kind and pass anything else through untouched,
# so that the validator (which runs next) reports it as a ConfigError naming the field. Their
# parameter types are what mypy shows as the ``Config(...)`` argument types.


def _to_float(value: float) -> float:
    return float(value) if type(value) is int else value


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    if isinstance(value, str | os.PathLike) and os.fspath(value):
        return Path(value)
    # None, or a wrong value (such as "") that the validator then names.
    return cast("Path | None", value)


def _to_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list):
        return tuple(value)
    return value


_POSITIVE_INT: Final = _integer(1)
_SECONDS: Final = _positive_seconds()


@final
@attrs.frozen(kw_only=True)
class Config:
    """Everything a node needs to know before it starts.

    Every value is checked here: a wrong one raises :class:`~actr_trio.errors.ConfigError`
    naming the field (``Config.max_payload='big' is not an integer``). Build one in code, or
    load ``Actr.toml`` plus ``ACTR_*`` environment variables with :meth:`from_file`. The fields
    (also listed in ``docs/config-reference.md``):
    """

    realm: str = attrs.field(
        default="default",
        validator=_validate,
        metadata=_meta(
            _Rule("1-64 characters of A-Z a-z 0-9 . _ -", _realm_problem),
            "The realm the node registers in; nodes only see their own realm.",
        ),
    )
    signaling_url: str | None = attrs.field(
        default=None,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule("ws://HOST:PORT or wss://HOST:PORT", _url_problem)),
            "The signaling server, e.g. ``wss://signaling.example.org:8765`` (TLS, the server "
            "proves itself) or ``ws://127.0.0.1:8765`` (unencrypted: only on a network you "
            "trust). None only under LocalRealm.",
        ),
    )
    signaling_ca: Path | None = attrs.field(
        default=None,
        converter=_to_path,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule("a path to a PEM file", _ca_problem, _parse_path)),
            "CA certificates (PEM) that a ``wss://`` signaling server's certificate must chain "
            "to; None means the system trust store. Only for ``wss://`` URLs.",
        ),
    )
    realm_secret: str | None = attrs.field(
        default=None,
        repr=False,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule(f"a string of at least {MIN_SECRET_BYTES} bytes", secret_problem)),
            "Proves membership of ``realm`` to a server that has realm credentials "
            "(never sent: the server checks an HMAC of its challenge). Keep it out of files "
            "others can read: ``ACTR_REALM_SECRET`` in the environment is the usual place.",
            secret=True,
        ),
    )
    data_dir: Path | None = attrs.field(
        default=None,
        converter=_to_path,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule("a directory path", _path_problem, _parse_path)),
            "Where the mailbox database and the node's identity live. None means an in-memory "
            "mailbox: fast, but **not durable** (a crash loses accepted envelopes) and a fresh "
            "ActrId at every start.",
        ),
    )
    trust_anchor: str | None = attrs.field(
        default=None,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule("an Ed25519 public key: 64 hex digits or base64", _key_problem)),
            "The signaling server's credential issuer key, as the server logs it at start "
            "(``signaling issuer key ID (...): trust_anchor = HEX``; or ``actr-trio signaling "
            "--db DB --print-issuer-key``). A server presenting another key is refused "
            "(``IssuerKeyMismatch``). None: trust the first key seen and pin it in "
            "``data_dir/issuer.pub`` (for this run only without a data_dir). Recommended: "
            "set it.",
        ),
    )
    ice_addresses: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_tuple,
        validator=_validate,
        metadata=_meta(
            _Rule("a list of IP addresses", _strings(_ip_problem), _parse_list),
            "Restrict WebRTC host candidates to these addresses (e.g. ``127.0.0.1``); "
            "empty means aioice's default interfaces.",
        ),
    )
    ice_servers: tuple[str, ...] = attrs.field(
        default=(),
        converter=_to_tuple,
        validator=_validate,
        metadata=_meta(
            _Rule("a list of stun:/turn: URLs", _strings(_ice_server_problem), _parse_list),
            "STUN/TURN URLs; empty (the default) means none, and nothing leaves the host.",
        ),
    )
    listen: str | None = attrs.field(
        default=None,
        validator=_validate,
        metadata=_meta(
            _optional(_Rule("``HOST:PORT`` (port 0: any free port)", _listen_problem)),
            "Take direct WebSocket links from peers on this address (e.g. ``127.0.0.1:0`` "
            "or ``192.168.1.10:7000``; ``[::1]:0`` for IPv6), and advertise the bound "
            "address in the signaling registration. None (the default): no listener; "
            "peers reach this node over WebRTC, and it can still dial peers that listen. "
            "Only for peers on the same host or LAN: the port must be reachable from them "
            '(docs/operations.md, "Direct WebSocket links").',
        ),
    )
    websocket_lane: str = attrs.field(
        default="prefer",
        validator=_validate,
        metadata=_meta(
            _choice("prefer", "fallback", "never"),
            "When to link to a peer that advertises a WebSocket address over a direct "
            "WebSocket instead of WebRTC: ``prefer`` (first, WebRTC if the connection "
            "fails), ``fallback`` (only when a WebRTC link fails to open) or ``never``. "
            "Peers that advertise nothing are always reached over WebRTC, and a link a "
            "peer opened is used whatever this says.",
        ),
    )
    default_timeout: float = attrs.field(
        default=30.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(_SECONDS, "Seconds a ``call`` waits when given no ``timeout``."),
    )
    shutdown_grace: float = attrs.field(
        default=10.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _SECONDS,
            "Seconds the scheduler may spend draining at shutdown; what is left stays in the "
            "mailbox and is replayed at the next start.",
        ),
    )
    max_payload: int = attrs.field(
        default=1 << 20,
        validator=_validate,
        metadata=_meta(
            _integer(1, _MAX_PAYLOAD_LIMIT),
            "Largest payload in bytes (default 1 MiB), checked before parsing on both sides.",
        ),
    )
    mailbox_synchronous: Synchronous = attrs.field(
        default="NORMAL",
        validator=_validate,
        metadata=_meta(
            _choice("NORMAL", "FULL"),
            "SQLite ``synchronous`` mode of a durable mailbox: ``NORMAL`` survives a process "
            "crash, ``FULL`` also survives an OS crash or power loss, at a cost.",
        ),
    )
    mailbox_capacity: int = attrs.field(
        default=100_000,
        validator=_validate,
        metadata=_meta(
            _POSITIVE_INT,
            "Pending envelopes per priority before new ones are refused with ``Overloaded``.",
        ),
    )
    mailbox_sender_share: float = attrs.field(
        default=0.25,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _fraction(),
            "Share of ``mailbox_capacity`` one sender (authenticated peer) may hold pending per "
            "priority (at least 1 envelope); beyond it its new envelopes are refused with "
            "``Overloaded`` (code ``sender_share``) while other senders are still accepted. "
            "0.25: one flooding peer leaves three quarters of each priority to the others. "
            "1 turns the share off. Counted from the pending envelopes, so the same after a "
            "restart.",
        ),
    )
    max_attempts: int = attrs.field(
        default=5,
        validator=_validate,
        metadata=_meta(
            _POSITIVE_INT,
            "Handler attempts (counted before each run) before an envelope is dead-lettered.",
        ),
    )
    dedupe_window: float = attrs.field(
        default=600.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(_SECONDS, "Seconds a handled request's response is kept to answer retries."),
    )
    aging: int | None = attrs.field(
        default=None,
        validator=_validate,
        metadata=_meta(
            _optional(_POSITIVE_INT),
            "After this many higher-priority envelopes in a row, serve one waiting "
            "lower-priority envelope (None: strict priority, the default).",
        ),
    )
    stream_buffer: int = attrs.field(
        default=256,
        validator=_validate,
        metadata=_meta(
            _POSITIVE_INT,
            "Chunks buffered per stream (and frames per media track) on the receiving node; "
            "LatencyFirst chunks and media frames beyond it are dropped and counted.",
        ),
    )
    max_streams_per_peer: int = attrs.field(
        default=64,
        validator=_validate,
        metadata=_meta(
            _integer(1, 65536),
            "Streams one peer may have open to this node at once (per ``(peer, stream_id)`` "
            "with a registered callback, until its end marker or ``stream_idle_timeout``). "
            "A chunk opening one more is refused (``Overloaded``, code ``streams``, on "
            "Signal/Reliable; dropped on LatencyFirst) and counted in "
            "``statistics().streams.refused``. Chunks for a stream id with no callback are "
            "refused and never remembered, whatever this is.",
        ),
    )
    max_tracks_per_peer: int = attrs.field(
        default=16,
        validator=_validate,
        metadata=_meta(
            _integer(1, 65536),
            "Media tracks one peer may have announced to this node at once (per WebRTC "
            "link) and delivering frames to registered callbacks; announcements and frames "
            "beyond it are dropped and counted.",
        ),
    )
    stream_idle_timeout: float = attrs.field(
        default=60.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _SECONDS,
            "Seconds a peer's stream (or media track) may go without a chunk (or frame) "
            "before the node forgets it (``statistics().streams.expired``); a later chunk "
            "opens it anew.",
        ),
    )
    peer_state_timeout: float = attrs.field(
        default=300.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _SECONDS,
            "Seconds after which the per-peer link state of a peer that sent nothing and was "
            "sent nothing is forgotten (inbound links; outbound lanes only when nothing to "
            "the peer is pending). It is rebuilt on the next envelope; nothing accepted or "
            "recorded in the outbox is lost.",
        ),
    )
    max_peer_states: int = attrs.field(
        default=4096,
        validator=_validate,
        metadata=_meta(
            _integer(1, 1 << 20),
            "Peers whose link state the node keeps at once (each way); beyond it the quietest "
            "are forgotten first, as after ``peer_state_timeout``.",
        ),
    )
    heartbeat_interval: float = attrs.field(
        default=5.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(_SECONDS, "Seconds between signaling heartbeats."),
    )
    max_links: int = attrs.field(
        default=128,
        validator=_validate,
        metadata=_meta(
            _integer(1, 65536),
            "WebRTC links (peer connections) the node holds at once, open, being negotiated or "
            "closing, whoever offered: an offer beyond it is refused (``links``; a peer that "
            "holds a link may always offer again) and opening one more itself raises "
            "``LinkRefused``. Each costs about half a MB; existing links are never closed for "
            "it.",
        ),
    )
    max_negotiating_links: int = attrs.field(
        default=16,
        validator=_validate,
        metadata=_meta(
            _integer(1, 65536),
            "WebRTC links being negotiated at once (offered or answered, not open yet; at most "
            "``max_links``): an offer beyond it is refused with reason ``negotiating``. It "
            "bounds the aiortc work a flood of offers can cause.",
        ),
    )
    offers_per_peer_rate: float = attrs.field(
        default=1.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _positive_rate("offers per second"),
            "Offers one peer (``ActrId``) may send this node per second, on average (a token "
            "bucket, see ``offers_per_peer_burst``); beyond it they are refused with reason "
            "``peer_rate``. An honest peer offers once per link.",
        ),
    )
    offers_per_peer_burst: int = attrs.field(
        default=4,
        validator=_validate,
        metadata=_meta(
            _integer(1, 65536),
            "Offers one peer may send at once before ``offers_per_peer_rate`` applies.",
        ),
    )
    offers_total_rate: float = attrs.field(
        default=10.0,
        converter=_to_float,
        validator=_validate,
        metadata=_meta(
            _positive_rate("offers per second"),
            "Offers per second the node reads from all peers together (its signaling "
            "connection), up to ``max_negotiating_links`` at once; beyond it offers are "
            "refused with reason ``total_rate``.",
        ),
    )
    max_relay_payload: int = attrs.field(
        default=32 * 1024,
        validator=_validate,
        metadata=_meta(
            _integer(1024, 64 * 1024),
            "Largest WebRTC offer or answer (characters of its relay payload) the node reads; "
            "a larger one is refused unread (reason ``too_large``). An offer is ~5.5 KB with "
            "one ICE candidate.",
        ),
    )
    acl: Acl | None = attrs.field(
        default=None,
        converter=_to_acl,
        validator=_validate,
        metadata=_meta(
            _optional(
                _Rule("an ``Acl``, or an ``[acl]`` table in Actr.toml", _acl_problem, env=False)
            ),
            "Which callers may send this node what (``docs/acl.md``): allow and deny rules by "
            "caller type, realm, route and highest priority; deny wins, and what no allow rule "
            "matches is refused with ``PermissionDenied``. None (the default) accepts every "
            "member of the realm. A workload's own ``acl`` applies as well.",
        ),
    )
    metrics: str | None = attrs.field(
        default=None,
        validator=_validate,
        metadata=_meta(
            _optional(
                _Rule("HOST:PORT (``[::1]:PORT`` for IPv6; port 0 picks one)", _address_problem)
            ),
            "Serve Prometheus metrics at ``http://HOST:PORT/metrics`` while the node runs "
            "(``docs/observability.md``), e.g. ``127.0.0.1:9464``; ``ref.metrics_address`` "
            "is the address bound. Needs ``pip install 'actr-trio[metrics]'``. None (the "
            "default): no metrics, nothing counted.",
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.max_negotiating_links > self.max_links:
            raise ConfigError(
                f"Config.max_negotiating_links={self.max_negotiating_links!r} must be <= "
                f"max_links={self.max_links!r}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from a mapping of field names to values, as ``Config(**values)`` would.

        Raises:
            ConfigError: an unknown name (with the closest field name), or an invalid value.
        """
        fields = attrs.fields_dict(cls)
        for key in values:
            if key not in fields:
                raise ConfigError(f"{key!r} is not a Config field{_suggest(key, fields)}")
        return cls(**values)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Load ``Actr.toml`` (keys at top level or under ``[actr]``), then apply ``ACTR_*`` env.

        ``ACTR_REALM=x`` overrides ``realm``, ``ACTR_DATA_DIR`` overrides ``data_dir``, and so on;
        tuple fields take comma-separated values, and an empty value means None for the fields
        that accept None. An ``ACTR_*`` variable that is not a field draws a ``UserWarning``
        naming the closest field's variable.

        Args:
            path: the TOML file.
            environ: the environment to read ``ACTR_*`` from (default: ``os.environ``).

        Raises:
            ConfigError: unreadable file, invalid TOML, unknown key, or invalid value; the
                message names the file or variable (``ACTR_MAX_PAYLOAD='big' is not an
                integer``, ``Actr.toml: max_payload=0 must be > 0``).
        """
        where = os.fspath(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {where!r}: {exc}") from exc
        section = data.get("actr", data)
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [actr] must be a table")
        values = _from_table(section, where)
        values.update(_from_env(os.environ if environ is None else environ))
        return cls(**values)


def _suggest(name: str, known: Mapping[str, object] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = attrs.fields_dict(Config)
    for key, value in table.items():
        field = fields.get(key)
        if field is None:
            raise ConfigError(f"{where}: {key!r} is not a Config field{_suggest(key, fields)}")
        _check(field, value, f"{where}: {key}")
    return dict(table)


def _env_name(field: str) -> str:
    return _ENV_PREFIX + field.upper()


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    by_env = {_env_name(f.name): f for f in attrs.fields(Config)}
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        field = by_env.get(name)
        if field is None:
            if name.startswith(_ENV_PREFIX) and name not in _NOT_CONFIG_ENV:
                _warn_unknown_env(name, list(by_env))
            continue
        rule: _Rule = field.metadata[_RULE]
        if not rule.env:
            raise ConfigError(
                f"{name} is set, but {field.name} cannot come from the environment: set it in "
                f"Actr.toml ([{field.name}]) or in code"
            )
        value = rule.parse(raw)
        reason = rule.problem(value)
        if reason is not None:  # show the text as written, not what it parsed to
            raise ConfigError(f"{_described(raw, field, name)} {reason}")
        values[field.name] = value
    return values


def _warn_unknown_env(name: str, known: list[str]) -> None:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}?" if close else "it is ignored"
    # stacklevel 4: _warn_unknown_env <- _from_env <- from_file <- the caller to blame.
    warnings.warn(f"{name} is not a Config field; {hint}", UserWarning, stacklevel=4)


# Rendering for docs/config-reference.md.

_TYPE_NAMES: Final = {"Synchronous": 'Literal["NORMAL", "FULL"]'}

_REFERENCE_HEAD: Final = """\
# Configuration reference

<!-- Generated from actr_trio.Config by actr_trio._config.config_reference(); do not edit.
     Regenerate: ACTR_UPDATE_GOLDEN=1 pytest tests/unit/test_config.py -k reference -->

A node's settings are one frozen `actr_trio.Config` value, built in one of two ways:

* in code: `Config(realm="prod", signaling_url="ws://127.0.0.1:8765", data_dir="state")`;
* from a file: `Config.from_file("Actr.toml")` reads the keys below from the top level of the
  TOML file or from an `[actr]` table, then lets `ACTR_<FIELD>` environment variables override
  them. Variables are text: numbers are parsed, lists are comma-separated
  (`ACTR_ICE_ADDRESSES=127.0.0.1,::1`), and an empty value means `None` for the fields that
  accept `None`.

Every value is checked when the `Config` is built. A wrong one raises
`actr_trio.errors.ConfigError` naming the field and where the value came from:

```text
Config.max_payload='big' is not an integer
Actr.toml: max_payload=0 must be > 0
ACTR_MAX_PAYLOAD='big' is not an integer
Config.signaling_url='localhost:8765' has no scheme: write 'ws://localhost:8765'
```

A key in the file that is not a field is an error; an `ACTR_*` variable that is not a field
draws a `UserWarning` that names the closest field
(`ACTR_REALMM is not a Config field; did you mean ACTR_REALM?`).

| Field | Type | Default | Environment variable | Accepts | Description |
| --- | --- | --- | --- | --- | --- |
"""


def _cell(text: str) -> str:
    # GitHub tables split cells on "|" even inside code spans, unless it is escaped.
    return text.replace("``", "`").replace("|", "\\|")


def config_reference() -> str:
    """The Markdown reference of every ``Config`` field (``docs/config-reference.md``)."""
    rows = []
    for field in attrs.fields(Config):
        rule: _Rule = field.metadata[_RULE]
        type_name = _TYPE_NAMES.get(str(field.type), str(field.type))
        cells = (
            f"`{field.name}`",
            f"`{type_name}`",
            f"`{field.default!r}`",
            f"`{_env_name(field.name)}`" if rule.env else "none (file or code only)",
            rule.accepts,
            field.metadata[_DOC],
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |\n")
    return _REFERENCE_HEAD + "".join(rows)


def _field_docs() -> str:
    lines = ["", "", "    Attributes:"]
    for field in attrs.fields(Config):
        text = f"{field.name}: {field.metadata[_DOC]}"
        lines.append(
            textwrap.fill(
                text, 96, initial_indent=" " * 8, subsequent_indent=" " * 12, break_on_hyphens=False
            )
        )
    return "\n".join(lines) + "\n"


# One source for the descriptions: help(Config) lists the same text as the reference page.
Config.__doc__ = (Config.__doc__ or "").rstrip() + _field_docs()
