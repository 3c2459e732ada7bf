"""Node configuration: a frozen value, validated on construction, loadable from TOML + env."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, final

import attrs

from .errors import ConfigError

Synchronous = Literal["NORMAL", "FULL"]

_ENV_PREFIX: Final = "ACTR_"


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name}={value!r} must be > 0")


def _optional_positive_int(
    instance: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name}={value!r} must be a positive integer or None")


def _synchronous(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in ("NORMAL", "FULL"):
        raise ConfigError(f"mailbox_synchronous={value!r} must be 'NORMAL' or 'FULL'")


def _realm(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or len(value) > 64:
        raise ConfigError(f"realm={value!r} must be 1-64 characters")


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _to_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@final
@attrs.frozen(kw_only=True)
class Config:
    """Everything a node needs to know before it starts.

    Attributes:
        realm: the realm the node registers in; nodes only see their own realm.
        signaling_url: ``ws://host:port`` of the signaling server (None only under LocalRealm).
        realm_secret: proves membership of ``realm`` to a server that has realm credentials.
        data_dir: where the mailbox database and the node's identity live. ``None`` means an
            in-memory mailbox: fast, but **not durable** (a crash loses accepted envelopes) and
            a fresh ``ActrId`` at every start.
        ice_addresses: restrict WebRTC host candidates to these addresses (e.g.
            ``("127.0.0.1",)``); empty means aioice's default interfaces.
        ice_servers: STUN/TURN URLs; empty (the default) means none, nothing leaves the host.
        default_timeout: seconds a ``call`` waits when given no ``timeout``.
        shutdown_grace: seconds the scheduler may spend draining at shutdown; what is left
            stays in the mailbox and is replayed at the next start.
        max_payload: largest payload in bytes, checked before parsing on both sides.
        mailbox_synchronous: SQLite ``synchronous`` mode: ``"NORMAL"`` survives a process crash,
            ``"FULL"`` also survives an OS crash or power loss, at a cost.
        mailbox_capacity: pending envelopes per priority before new ones are refused with
            :class:`~actr_trio.errors.Overloaded`.
        max_attempts: handler attempts (counted before each run) before an envelope is
            dead-lettered.
        dedupe_window: seconds a handled request's response is kept to answer retries.
        aging: after this many higher-priority envelopes in a row, serve one waiting
            lower-priority envelope (None: strict priority, the default).
        stream_buffer: chunks buffered per stream before LatencyFirst chunks are dropped.
        heartbeat_interval: seconds between signaling heartbeats.
    """

    realm: str = attrs.field(default="default", validator=_realm)
    signaling_url: str | None = None
    realm_secret: str | None = attrs.field(default=None, repr=False)
    data_dir: Path | None = attrs.field(default=None, converter=_to_path)
    ice_addresses: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    ice_servers: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    default_timeout: float = attrs.field(default=30.0, converter=float, validator=_positive)
    shutdown_grace: float = attrs.field(default=10.0, converter=float, validator=_positive)
    max_payload: int = attrs.field(default=1 << 20, converter=int, validator=_positive)
    mailbox_synchronous: Synchronous = attrs.field(default="NORMAL", validator=_synchronous)
    mailbox_capacity: int = attrs.field(default=100_000, converter=int, validator=_positive)
    max_attempts: int = attrs.field(default=5, converter=int, validator=_positive)
    dedupe_window: float = attrs.field(default=600.0, converter=float, validator=_positive)
    aging: int | None = attrs.field(default=None, validator=_optional_positive_int)
    stream_buffer: int = attrs.field(default=256, converter=int, validator=_positive)
    heartbeat_interval: float = attrs.field(default=5.0, converter=float, validator=_positive)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from a mapping of field names (unknown names raise ConfigError)."""
        names = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        try:
            return cls(**dict(values))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Load ``Actr.toml`` (keys at top level or under ``[actr]``), then apply ``ACTR_*`` env.

        ``ACTR_REALM=x`` overrides ``realm``, ``ACTR_DATA_DIR`` overrides ``data_dir``, and so on;
        tuple fields take comma-separated values.

        Raises:
            ConfigError: unreadable file, invalid TOML, unknown key, or invalid value.
        """
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc}") from exc
        section = data.get("actr", data)
        if not isinstance(section, dict):
            raise ConfigError(f"{os.fspath(path)!r}: [actr] must be a table")
        return cls.from_mapping(_with_env(section, os.environ if environ is None else environ))


def _with_env(values: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    merged = dict(values)
    for field in attrs.fields(Config):
        raw = environ.get(_ENV_PREFIX + field.name.upper())
        if raw is not None:
            merged[field.name] = None if raw == "" and field.default is None else raw
    if isinstance(merged.get("aging"), str):
        merged["aging"] = int(merged["aging"])
    return merged
