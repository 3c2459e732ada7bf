"""Node configuration: a frozen value, validated on construction, loadable from TOML + env.

Every field carries a rule (what it accepts, and how ``ACTR_*`` text becomes a value; see
``_config_rules.py``) and a description in its attrs metadata. The same rule checks a value
whether it comes from code, from a file or from the environment, so the three sources can only
differ in how the error names where the value came from. :func:`config_reference` renders the
fields as the Markdown page ``docs/config-reference.md`` (``_config_reference.py``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, final

import attrs

from ._acl import Acl
from ._config_reference import field_docs, render_reference
from ._config_rules import (
    ENV_PREFIX,
    MAX_PAYLOAD_LIMIT,
    MIN_SECRET_BYTES,
    POSITIVE_INT,
    RULE,
    SECONDS,
    Rule,
    acl_problem,
    address_problem,
    ca_problem,
    check,
    choice,
    described,
    env_name,
    fraction,
    ice_server_problem,
    integer,
    ip_problem,
    key_problem,
    listen_problem,
    meta,
    optional,
    parse_list,
    parse_path,
    path_problem,
    positive_rate,
    realm_problem,
    secret_problem,
    strings,
    to_acl,
    to_float,
    to_path,
    to_tuple,
    url_problem,
    validate,
)
from .errors import ConfigError

__all__ = ["MIN_SECRET_BYTES", "Config", "Synchronous", "config_reference", "secret_problem"]

Synchronous = Literal["NORMAL", "FULL"]

# ACTR_* variables the project reads for other purposes: not typos of a Config field.
_NOT_CONFIG_ENV: Final = frozenset({"ACTR_UPDATE_GOLDEN", "ACTR_SIGNALING_REALMS"})


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
        validator=validate,
        metadata=meta(
            Rule("1-64 characters of A-Z a-z 0-9 . _ -", realm_problem),
            "The realm the node registers in; nodes only see their own realm.",
        ),
    )
    signaling_url: str | None = attrs.field(
        default=None,
        validator=validate,
        metadata=meta(
            optional(Rule("ws://HOST:PORT or wss://HOST:PORT", url_problem)),
            "The signaling server, e.g. ``wss://signaling.example.org:8765`` (TLS, the server "
            "proves itself) or ``ws://127.0.0.1:8765`` (unencrypted: only on a network you "
            "trust). None only under LocalRealm.",
        ),
    )
    signaling_ca: Path | None = attrs.field(
        default=None,
        converter=to_path,
        validator=validate,
        metadata=meta(
            optional(Rule("a path to a PEM file", ca_problem, parse_path)),
            "CA certificates (PEM) that a ``wss://`` signaling server's certificate must chain "
            "to; None means the system trust store. Only for ``wss://`` URLs.",
        ),
    )
    realm_secret: str | None = attrs.field(
        default=None,
        repr=False,
        validator=validate,
        metadata=meta(
            optional(Rule(f"a string of at least {MIN_SECRET_BYTES} bytes", secret_problem)),
            "Proves membership of ``realm`` to a server that has realm credentials "
            "(never sent: the server checks an HMAC of its challenge). Keep it out of files "
            "others can read: ``ACTR_REALM_SECRET`` in the environment is the usual place.",
            secret=True,
        ),
    )
    data_dir: Path | None = attrs.field(
        default=None,
        converter=to_path,
        validator=validate,
        metadata=meta(
            optional(Rule("a directory path", path_problem, parse_path)),
            "Where the mailbox database and the node's identity live. None means an in-memory "
            "mailbox: fast, but **not durable** (a crash loses accepted envelopes) and a fresh "
            "ActrId at every start.",
        ),
    )
    trust_anchor: str | None = attrs.field(
        default=None,
        validator=validate,
        metadata=meta(
            optional(Rule("an Ed25519 public key: 64 hex digits or base64", key_problem)),
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
        converter=to_tuple,
        validator=validate,
        metadata=meta(
            Rule("a list of IP addresses", strings(ip_problem), parse_list),
            "Restrict WebRTC host candidates to these addresses (e.g. ``127.0.0.1``); "
            "empty means aioice's default interfaces.",
        ),
    )
    ice_servers: tuple[str, ...] = attrs.field(
        default=(),
        converter=to_tuple,
        validator=validate,
        metadata=meta(
            Rule("a list of stun:/turn: URLs", strings(ice_server_problem), parse_list),
            "STUN/TURN URLs; empty (the default) means none, and nothing leaves the host.",
        ),
    )
    listen: str | None = attrs.field(
        default=None,
        validator=validate,
        metadata=meta(
            optional(Rule("``HOST:PORT`` (port 0: any free port)", listen_problem)),
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
        validator=validate,
        metadata=meta(
            choice("prefer", "fallback", "never"),
            "When to link to a peer that advertises a WebSocket address over a direct "
            "WebSocket instead of WebRTC: ``prefer`` (first, WebRTC if the connection "
            "fails), ``fallback`` (only when a WebRTC link fails to open) or ``never``. "
            "Peers that advertise nothing are always reached over WebRTC, and a link a "
            "peer opened is used whatever this says.",
        ),
    )
    default_timeout: float = attrs.field(
        default=30.0,
        converter=to_float,
        validator=validate,
        metadata=meta(SECONDS, "Seconds a ``call`` waits when given no ``timeout``."),
    )
    shutdown_grace: float = attrs.field(
        default=10.0,
        converter=to_float,
        validator=validate,
        metadata=meta(
            SECONDS,
            "Seconds the scheduler may spend draining at shutdown; what is left stays in the "
            "mailbox and is replayed at the next start.",
        ),
    )
    max_payload: int = attrs.field(
        default=1 << 20,
        validator=validate,
        metadata=meta(
            integer(1, MAX_PAYLOAD_LIMIT),
            "Largest payload in bytes (default 1 MiB), checked before parsing on both sides.",
        ),
    )
    mailbox_synchronous: Synchronous = attrs.field(
        default="NORMAL",
        validator=validate,
        metadata=meta(
            choice("NORMAL", "FULL"),
            "SQLite ``synchronous`` mode of a durable mailbox: ``NORMAL`` survives a process "
            "crash, ``FULL`` also survives an OS crash or power loss, at a cost.",
        ),
    )
    mailbox_capacity: int = attrs.field(
        default=100_000,
        validator=validate,
        metadata=meta(
            POSITIVE_INT,
            "Pending envelopes per priority before new ones are refused with ``Overloaded``.",
        ),
    )
    mailbox_sender_share: float = attrs.field(
        default=0.25,
        converter=to_float,
        validator=validate,
        metadata=meta(
            fraction(),
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
        validator=validate,
        metadata=meta(
            POSITIVE_INT,
            "Handler attempts (counted before each run) before an envelope is dead-lettered.",
        ),
    )
    dedupe_window: float = attrs.field(
        default=600.0,
        converter=to_float,
        validator=validate,
        metadata=meta(SECONDS, "Seconds a handled request's response is kept to answer retries."),
    )
    aging: int | None = attrs.field(
        default=None,
        validator=validate,
        metadata=meta(
            optional(POSITIVE_INT),
            "After this many higher-priority envelopes in a row, serve one waiting "
            "lower-priority envelope (None: strict priority, the default).",
        ),
    )
    stream_buffer: int = attrs.field(
        default=256,
        validator=validate,
        metadata=meta(
            POSITIVE_INT,
            "Chunks buffered per stream (and frames per media track) on the receiving node; "
            "LatencyFirst chunks and media frames beyond it are dropped and counted.",
        ),
    )
    max_streams_per_peer: int = attrs.field(
        default=64,
        validator=validate,
        metadata=meta(
            integer(1, 65536),
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
        validator=validate,
        metadata=meta(
            integer(1, 65536),
            "Media tracks one peer may have announced to this node at once (per WebRTC "
            "link) and delivering frames to registered callbacks; announcements and frames "
            "beyond it are dropped and counted.",
        ),
    )
    stream_idle_timeout: float = attrs.field(
        default=60.0,
        converter=to_float,
        validator=validate,
        metadata=meta(
            SECONDS,
            "Seconds a peer's stream (or media track) may go without a chunk (or frame) "
            "before the node forgets it (``statistics().streams.expired``); a later chunk "
            "opens it anew.",
        ),
    )
    peer_state_timeout: float = attrs.field(
        default=300.0,
        converter=to_float,
        validator=validate,
        metadata=meta(
            SECONDS,
            "Seconds after which the per-peer link state of a peer that sent nothing and was "
            "sent nothing is forgotten (inbound links; outbound lanes only when nothing to "
            "the peer is pending). It is rebuilt on the next envelope; nothing accepted or "
            "recorded in the outbox is lost.",
        ),
    )
    max_peer_states: int = attrs.field(
        default=4096,
        validator=validate,
        metadata=meta(
            integer(1, 1 << 20),
            "Peers whose link state the node keeps at once (each way); beyond it the quietest "
            "are forgotten first, as after ``peer_state_timeout``.",
        ),
    )
    heartbeat_interval: float = attrs.field(
        default=5.0,
        converter=to_float,
        validator=validate,
        metadata=meta(SECONDS, "Seconds between signaling heartbeats."),
    )
    max_links: int = attrs.field(
        default=128,
        validator=validate,
        metadata=meta(
            integer(1, 65536),
            "WebRTC links (peer connections) the node holds at once, open, being negotiated or "
            "closing, whoever offered: an offer beyond it is refused (``links``; a peer that "
            "holds a link may always offer again) and opening one more itself raises "
            "``LinkRefused``. Each costs about half a MB; existing links are never closed for "
            "it.",
        ),
    )
    max_negotiating_links: int = attrs.field(
        default=16,
        validator=validate,
        metadata=meta(
            integer(1, 65536),
            "WebRTC links being negotiated at once (offered or answered, not open yet; at most "
            "``max_links``): an offer beyond it is refused with reason ``negotiating``. It "
            "bounds the aiortc work a flood of offers can cause.",
        ),
    )
    offers_per_peer_rate: float = attrs.field(
        default=1.0,
        converter=to_float,
        validator=validate,
        metadata=meta(
            positive_rate("offers per second"),
            "Offers one peer (``ActrId``) may send this node per second, on average (a token "
            "bucket, see ``offers_per_peer_burst``); beyond it they are refused with reason "
            "``peer_rate``. An honest peer offers once per link.",
        ),
    )
    offers_per_peer_burst: int = attrs.field(
        default=4,
        validator=validate,
        metadata=meta(
            integer(1, 65536),
            "Offers one peer may send at once before ``offers_per_peer_rate`` applies.",
        ),
    )
    offers_total_rate: float = attrs.field(
        default=10.0,
        converter=to_float,
        validator=validate,
        metadata=meta(
            positive_rate("offers per second"),
            "Offers per second the node reads from all peers together (its signaling "
            "connection), up to ``max_negotiating_links`` at once; beyond it offers are "
            "refused with reason ``total_rate``.",
        ),
    )
    max_relay_payload: int = attrs.field(
        default=32 * 1024,
        validator=validate,
        metadata=meta(
            integer(1024, 64 * 1024),
            "Largest WebRTC offer or answer (characters of its relay payload) the node reads; "
            "a larger one is refused unread (reason ``too_large``). An offer is ~5.5 KB with "
            "one ICE candidate.",
        ),
    )
    acl: Acl | None = attrs.field(
        default=None,
        converter=to_acl,
        validator=validate,
        metadata=meta(
            optional(
                Rule("an ``Acl``, or an ``[acl]`` table in Actr.toml", acl_problem, env=False)
            ),
            "Which callers may send this node what (``docs/acl.md``): allow and deny rules by "
            "caller type, realm, route and highest priority; deny wins, and what no allow rule "
            "matches is refused with ``PermissionDenied``. None (the default) accepts every "
            "member of the realm. A workload's own ``acl`` applies as well.",
        ),
    )
    metrics: str | None = attrs.field(
        default=None,
        validator=validate,
        metadata=meta(
            optional(
                Rule("HOST:PORT (``[::1]:PORT`` for IPv6; port 0 picks one)", address_problem)
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
        import tomllib  # only for config files (~2 ms of node start)

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
    import difflib  # only for errors

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = attrs.fields_dict(Config)
    for key, value in table.items():
        field = fields.get(key)
        if field is None:
            raise ConfigError(f"{where}: {key!r} is not a Config field{_suggest(key, fields)}")
        check(field, value, f"{where}: {key}")
    return dict(table)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    by_env = {env_name(f.name): f for f in attrs.fields(Config)}
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        field = by_env.get(name)
        if field is None:
            if name.startswith(ENV_PREFIX) and name not in _NOT_CONFIG_ENV:
                _warn_unknown_env(name, list(by_env))
            continue
        rule: Rule = field.metadata[RULE]
        if not rule.env:
            raise ConfigError(
                f"{name} is set, but {field.name} cannot come from the environment: set it in "
                f"Actr.toml ([{field.name}]) or in code"
            )
        value = rule.parse(raw)
        reason = rule.problem(value)
        if reason is not None:  # show the text as written, not what it parsed to
            raise ConfigError(f"{described(raw, field, name)} {reason}")
        values[field.name] = value
    return values


def _warn_unknown_env(name: str, known: list[str]) -> None:
    import difflib  # as in _suggest

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}?" if close else "it is ignored"
    # stacklevel 4: _warn_unknown_env <- _from_env <- from_file <- the caller to blame.
    warnings.warn(f"{name} is not a Config field; {hint}", UserWarning, stacklevel=4)


def config_reference() -> str:
    """The Markdown reference of every ``Config`` field (``docs/config-reference.md``)."""
    return render_reference(attrs.fields(Config))


# One source for the descriptions: help(Config) lists the same text as the reference page.
Config.__doc__ = (Config.__doc__ or "").rstrip() + field_docs(attrs.fields(Config))
