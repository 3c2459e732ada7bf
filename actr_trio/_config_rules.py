"""What a :class:`~actr_trio.Config` field accepts: its rule, converter and description.

Every field carries a :class:`Rule` (what it accepts, and how ``ACTR_*`` text becomes a value)
and a description in its attrs metadata (:func:`meta`). The same rule checks a value whether it
comes from code, from a file or from the environment (:func:`check`), so the three sources can
only differ in how the error names where the value came from.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, cast, final
from urllib.parse import urlsplit

import attrs

from ._acl import Acl
from ._identity import decode_public_key
from ._ids import NAME_RE
from ._metrics import split_address
from .errors import ConfigError

ENV_PREFIX: Final = "ACTR_"
# A payload is held whole in memory and stored as one SQLite row (whose default length limit
# is 1e9 bytes), so anything near that is a mistake rather than a configuration.
MAX_PAYLOAD_LIMIT: Final = 512 * 1024 * 1024
_ICE_SCHEMES: Final = ("stun:", "stuns:", "turn:", "turns:")
_SIGNALING_SCHEMES: Final = ("ws", "wss")
#: Shortest realm secret accepted, by node and server alike: 16 random bytes (128 bits) cannot
#: be guessed online, whatever the rate; a short human password can.
MIN_SECRET_BYTES: Final = 16

# attrs metadata keys.
RULE: Final = "actr_rule"
DOC: Final = "actr_doc"
SECRET: Final = "actr_secret"

Problem = str | None  # why a value is wrong ("is not an integer"), or None when it is right


def _text(raw: str) -> object:
    return raw


@final
@attrs.frozen
class Rule:
    """What one field accepts, checked the same way for values from code, file or env.

    ``problem`` accepts what code or TOML may legitimately pass *before* conversion too (an
    ``int`` for a float field, a ``str`` for a path, a list for a tuple), so a loader can check
    a raw value and label the error with its source before the value reaches ``Config``.
    """

    accepts: str  # for the reference page, e.g. "an integer > 0"
    problem: Callable[[Any], Problem]
    parse: Callable[[str], object] = _text  # ACTR_* text to a value; unparsable text is kept
    env: bool = True  # False: no ACTR_* variable (a structured value, such as the ACL)


def integer(minimum: int, maximum: int | None = None) -> Rule:
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
    return Rule(accepts, problem, parse)


def positive_seconds() -> Rule:
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

    return Rule("a number of seconds > 0", problem, parse)


def positive_rate(unit: str) -> Rule:
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

    return Rule(f"a number of {unit} > 0", problem, parse)


def fraction() -> Rule:
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

    return Rule("a number > 0 and <= 1", problem, parse)


def choice(*options: str) -> Rule:
    listed = " or ".join(repr(o) for o in options)

    def problem(value: Any) -> Problem:
        return None if value in options and isinstance(value, str) else f"must be {listed}"

    return Rule(listed, problem)


def optional(rule: Rule) -> Rule:
    """``rule`` or None; an empty ``ACTR_*`` variable means None."""

    def problem(value: Any) -> Problem:
        return None if value is None else rule.problem(value)

    def parse(raw: str) -> object:
        return None if raw == "" else rule.parse(raw)

    return Rule(f"None, or {rule.accepts}", problem, parse, env=rule.env)


def realm_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    # The same pattern the signaling server and ActrId apply to realm names.
    if not NAME_RE.fullmatch(value):
        return "must be 1-64 characters of A-Z a-z 0-9 . _ -"
    return None


def url_problem(value: Any) -> Problem:
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


def ca_problem(value: Any) -> Problem:
    if not isinstance(value, str | os.PathLike):
        return "is not a path"
    # Whether the file exists and holds certificates is checked when the node connects (the
    # Config may be built on another machine than the one that runs the node).
    return "is empty (None means the system trust store)" if not os.fspath(value) else None


def key_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    try:
        decode_public_key(value)
    except ConfigError:
        return "is not an Ed25519 public key (64 hex digits or 44 base64 characters)"
    return None


def path_problem(value: Any) -> Problem:
    if not isinstance(value, str | os.PathLike):
        return "is not a path"
    return "is empty (None means an in-memory mailbox)" if not os.fspath(value) else None


def parse_path(raw: str) -> object:
    return Path(raw)


def strings(item_problem: Callable[[str], Problem]) -> Callable[[Any], Problem]:
    def problem(value: Any) -> Problem:
        if isinstance(value, str):
            value = to_tuple(value)
        if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
            return "is not a list of strings"
        for item in value:
            reason = item_problem(item)
            if reason is not None:
                return f"has {item!r}, which {reason}"
        return None

    return problem


def ip_problem(item: str) -> Problem:
    try:
        ipaddress.ip_address(item)
    except ValueError:
        return "is not an IP address"
    return None


def address_problem(value: Any) -> Problem:
    if not isinstance(value, str):
        return "is not a string"
    try:
        split_address(value)
    except ValueError as exc:
        return f"is not an address to listen on ({exc})"
    return None


def listen_problem(value: Any) -> Problem:
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


def ice_server_problem(item: str) -> Problem:
    return None if item.startswith(_ICE_SCHEMES) else "is not a stun:/turn: URL"


def parse_list(raw: str) -> object:
    return to_tuple(raw)


def acl_problem(value: Any) -> Problem:
    if isinstance(value, Acl):
        return None
    if not isinstance(value, Mapping):
        return "is not an Acl (or an [acl] table in Actr.toml)"
    try:
        Acl.from_mapping(value, where="acl")
    except ConfigError as exc:
        return f"is not a valid ACL: {exc}"
    return None


def to_acl(value: Acl | Mapping[str, Any] | None) -> Acl | None:
    # An [acl] table from Actr.toml becomes an Acl; anything invalid is left for the validator.
    if isinstance(value, Mapping):
        try:
            return Acl.from_mapping(value)
        except ConfigError:
            pass
    return cast("Acl | None", value)


def meta(rule: Rule, doc: str, *, secret: bool = False) -> dict[str, object]:
    return {RULE: rule, DOC: doc, SECRET: secret}


def described(value: object, attribute: attrs.Attribute[Any], source: str) -> str:
    shown = "<hidden>" if attribute.metadata[SECRET] else repr(value)
    return f"{source}={shown}"


def check(attribute: attrs.Attribute[Any], value: object, source: str) -> None:
    """Raise ConfigError ``"{source}={value!r} {reason}"`` if ``value`` breaks the field's rule."""
    rule: Rule = attribute.metadata[RULE]
    reason = rule.problem(value)
    if reason is not None:
        raise ConfigError(f"{described(value, attribute, source)} {reason}")


def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check(attribute, value, f"Config.{attribute.name}")


# Converters only normalise values of the right kind and pass anything else through untouched,
# so that the validator (which runs next) reports it as a ConfigError naming the field. Their
# parameter types are what mypy shows as the ``Config(...)`` argument types.


def to_float(value: float) -> float:
    return float(value) if type(value) is int else value


def to_path(value: str | os.PathLike[str] | None) -> Path | None:
    if isinstance(value, str | os.PathLike) and os.fspath(value):
        return Path(value)
    # None, or a wrong value (such as "") that the validator then names.
    return cast("Path | None", value)


def to_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list):
        return tuple(value)
    return value


POSITIVE_INT: Final = integer(1)
SECONDS: Final = positive_seconds()


def env_name(field: str) -> str:
    """The ``ACTR_*`` variable of the field named ``field``."""
    return ENV_PREFIX + field.upper()
