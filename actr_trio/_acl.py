"""Access control lists (sans-IO): which callers a node accepts envelopes from.

An :class:`Acl` holds *allow* and *deny* rules. A rule matches a caller by its ``ActrType``
(``"manufacturer:name"``, either part may use ``*``) and its realm, and optionally only some
route keys; an allow rule may also cap the priority the caller may use. The decision:

1. **Deny wins**: any matching deny rule refuses the envelope, whatever allows it.
2. **No allow, no entry**: an ACL refuses what no allow rule matches (``Acl()`` refuses all).
3. **No ACL, no limits**: a node without an ACL accepts every member of its realm.

A node may have two ACLs (its ``Config.acl`` and its workload's ``acl``): an envelope must pass
both. The caller is always the authenticated peer the envelope came from (never a field the
sender wrote), so a rule cannot be dodged by naming another caller. Stream chunks and media
frames carry no route key and no priority: only rules without ``routes`` decide about them.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, final

import attrs

from ._ids import ActrId, ActrType
from ._lanes import Priority
from .errors import ConfigError

__all__ = [
    "Acl",
    "AclGuard",
    "AclRule",
    "Visibility",
    "discovery_visibility",
    "guard",
    "type_pattern_matches",
]

# One part of a caller pattern (manufacturer, name or realm): a name, where "*" matches any run
# of characters. Nothing else is special, so a pattern reads as what it matches.
_NAME_PATTERN_RE: Final = re.compile(r"[A-Za-z0-9_.*-]{1,64}")
# A route key pattern: package.Service.Method, where "*" matches any run (dots included).
_ROUTE_PATTERN_RE: Final = re.compile(r"[A-Za-z0-9_.*]{1,256}")
# Decisions remembered by an AclGuard: callers x routes x priorities seen lately. Cleared when
# full: a peer churning through routes costs a recomputation, never memory.
DECISION_CACHE: Final = 4096
# Bounds on what a node may announce for discovery (the signaling server checks them too).
MAX_VISIBILITY_PATTERNS: Final = 64
MAX_PATTERN_LENGTH: Final = 129  # "manufacturer:name", 64 characters each


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(fnmatch.translate(pattern)).match


def _name_pattern(kind: str, pattern: object) -> str:
    if not isinstance(pattern, str) or not _NAME_PATTERN_RE.fullmatch(pattern):
        raise ConfigError(
            f"{kind}={pattern!r} must be 1-64 characters of [A-Za-z0-9_.-], '*' matching any run"
        )
    return pattern


def _split_type_pattern(pattern: object) -> tuple[str, str]:
    """``"acme:*"`` -> ``("acme", "*")``; ``"*"`` means any type."""
    if pattern == "*":
        return "*", "*"
    if not isinstance(pattern, str) or pattern.count(":") != 1:
        raise ConfigError(
            f"caller={pattern!r} must be 'manufacturer:name' (either part may be '*') or '*'"
        )
    manufacturer, name = pattern.split(":")
    return _name_pattern("caller manufacturer", manufacturer), _name_pattern("caller name", name)


def type_pattern_matches(pattern: str, actr_type: ActrType) -> bool:
    """Whether ``actr_type`` matches a caller pattern (``"acme:*"``, ``"*"``, ``"acme:echo"``).

    Raises:
        ConfigError: ``pattern`` is not a valid caller pattern.
    """
    manufacturer, name = _split_type_pattern(pattern)
    return bool(_compile(manufacturer)(actr_type.manufacturer) and _compile(name)(actr_type.name))


def _to_routes(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list | tuple) else value  # type: ignore[return-value]


def _to_priority(value: Priority | str | int | None) -> Priority | None:
    if value is None or isinstance(value, Priority):
        return value
    if isinstance(value, str) and value.upper() in Priority.__members__:
        return Priority[value.upper()]
    if type(value) is int and value in set(Priority):
        return Priority(value)
    raise ConfigError(f"max_priority={value!r} must be a Priority (LOW, NORMAL or HIGH)")


def _check_routes(instance: object, attribute: object, value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(f"routes={value!r} must be a list of route key patterns")
    for route in value:
        if not isinstance(route, str) or not _ROUTE_PATTERN_RE.fullmatch(route):
            raise ConfigError(
                f"routes has {route!r}: a route key (package.Service.Method) or a pattern "
                "such as 'demo.Admin.*'"
            )


@final
@attrs.frozen
class AclRule:
    """Which callers (and optionally which routes) one allow or deny rule is about.

    Args:
        caller: the caller's ``ActrType`` as ``"manufacturer:name"``; ``*`` in either part
            matches any run of characters (``"acme:*"``), and ``"*"`` alone matches every type.
        realm: the caller's realm, same pattern syntax; ``"*"`` (the default) matches any.
        routes: route keys the rule is about (``"demo.Echo.Echo"``, or patterns such as
            ``"demo.Admin.*"``); empty (the default) means every route, and stream chunks and
            media frames too.
        max_priority: allow rules only: the highest ``Priority`` the caller may send with
            (a request above it is not allowed by this rule). ``None``: any priority.

    Raises:
        ConfigError: a malformed pattern or priority.
    """

    caller: str = attrs.field()
    realm: str = attrs.field(default="*")
    routes: tuple[str, ...] = attrs.field(default=(), converter=_to_routes, validator=_check_routes)
    max_priority: Priority | None = attrs.field(default=None, converter=_to_priority)

    @caller.validator
    def _check_caller(self, attribute: object, value: object) -> None:
        _split_type_pattern(value)

    @realm.validator
    def _check_realm(self, attribute: object, value: object) -> None:
        _name_pattern("realm", value)

    def matches(self, caller: ActrId, route_key: str | None) -> bool:
        """Whether the rule is about ``caller`` sending to ``route_key`` (``None``: a stream
        chunk or media frame, which only rules without ``routes`` are about)."""
        if not (
            type_pattern_matches(self.caller, caller.type) and _compile(self.realm)(caller.realm)
        ):
            return False
        if not self.routes:
            return True
        return route_key is not None and any(_compile(r)(route_key) for r in self.routes)

    def allows_priority(self, priority: Priority | None) -> bool:
        """Whether ``priority`` is within ``max_priority`` (``None`` passes: no priority)."""
        return priority is None or self.max_priority is None or priority <= self.max_priority

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "rule") -> AclRule:
        """Build from a TOML table: ``{caller = "acme:*", realm = "prod", routes = [...],
        max_priority = "NORMAL"}``.

        Raises:
            ConfigError: an unknown key (with the closest one) or an invalid value.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a table with a 'caller' key")
        known = [a.name for a in attrs.fields(cls)]
        for key in values:
            if key not in known:
                import difflib  # only for errors (it is not loaded at node start)

                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: {key!r} is not an ACL rule key{hint}")
        if "caller" not in values:
            raise ConfigError(f"{where} has no 'caller' (use \"*\" for every caller type)")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except TypeError as exc:  # e.g. routes = 3
            raise ConfigError(f"{where}: {exc}") from None


def _to_rules(value: Iterable[AclRule]) -> tuple[AclRule, ...]:
    return tuple(value) if isinstance(value, list | tuple) else value  # type: ignore[return-value]


def _check_rules(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(r, AclRule) for r in value):
        raise ConfigError(f"Acl.{attribute.name} must be a list of AclRule")


@final
@attrs.frozen
class Acl:
    """Allow and deny rules about callers (see the module docstring for the decision).

    ``Acl(allow=[AclRule("acme:*")], deny=[AclRule("acme:intruder")])`` accepts every
    ``acme`` type but ``acme:intruder``; ``Acl()`` accepts nobody. Set it per workload
    (``class W(Workload): acl = Acl(...)``) or per node (``Config(acl=...)``, or an ``[acl]``
    table in ``Actr.toml``); with both, an envelope must pass both.

    Raises:
        ConfigError: a rule is not an :class:`AclRule`, or a deny rule has ``max_priority``
            (a deny rule refuses every priority).
    """

    allow: tuple[AclRule, ...] = attrs.field(
        default=(), converter=_to_rules, validator=_check_rules
    )
    deny: tuple[AclRule, ...] = attrs.field(default=(), converter=_to_rules, validator=_check_rules)

    def __attrs_post_init__(self) -> None:
        for rule in self.deny:
            if rule.max_priority is not None:
                raise ConfigError(
                    f"deny rule for {rule.caller!r} has max_priority: only allow rules cap "
                    "the priority (a deny rule refuses every priority)"
                )

    def permits(
        self, caller: ActrId, route_key: str | None = None, priority: Priority | None = None
    ) -> bool:
        """Whether this ACL accepts ``route_key`` at ``priority`` from ``caller``.

        ``route_key`` and ``priority`` are ``None`` for stream chunks and media frames.
        """
        return self.refusal(caller, route_key, priority) is None

    def refusal(
        self, caller: ActrId, route_key: str | None, priority: Priority | None
    ) -> str | None:
        """Why this ACL refuses it (for the receiver's log), or ``None`` if it accepts it."""
        for rule in self.deny:
            if rule.matches(caller, route_key):
                return f"denied by the deny rule for {rule.caller!r}"
        capped: AclRule | None = None
        for rule in self.allow:
            if rule.matches(caller, route_key):
                if rule.allows_priority(priority):
                    return None
                capped = rule
        if capped is not None and capped.max_priority is not None and priority is not None:
            return (
                f"priority {priority.name} is above {capped.max_priority.name}, the highest the "
                f"allow rule for {capped.caller!r} permits"
            )
        return "no allow rule matches"

    def visibility(self, realm: str) -> Visibility:
        """What this ACL tells the signaling server about who may discover this node.

        Discovery answers only nodes of this node's own ``realm``. Allow rules whose realm
        pattern covers it name the types that may see the node (even if only some routes are
        allowed: they may call those); deny rules without ``routes`` hide the node from the
        types they name.
        """
        allow = [r.caller for r in self.allow if _compile(r.realm)(realm)]
        deny = [r.caller for r in self.deny if not r.routes and _compile(r.realm)(realm)]
        return Visibility(tuple(dict.fromkeys(allow)), tuple(dict.fromkeys(deny)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "acl") -> Acl:
        """Build from the ``[acl]`` TOML table: arrays of tables ``[[acl.allow]]`` and
        ``[[acl.deny]]``, each read by :meth:`AclRule.from_mapping`.

        Raises:
            ConfigError: an unknown key or an invalid rule, naming where it is.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must be a table with 'allow' and/or 'deny' rule lists")
        for key in values:
            if key not in ("allow", "deny"):
                import difflib  # as above

                close = difflib.get_close_matches(str(key), ["allow", "deny"], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: {key!r} is not 'allow' or 'deny'{hint}")
        rules: dict[str, list[AclRule]] = {}
        for kind in ("allow", "deny"):
            items = values.get(kind, [])
            if not isinstance(items, list):
                raise ConfigError(f"{where}.{kind} must be a list of rules ([[{where}.{kind}]])")
            rules[kind] = [
                AclRule.from_mapping(item, where=f"{where}.{kind}[{i}]")
                for i, item in enumerate(items)
            ]
        return cls(allow=rules["allow"], deny=rules["deny"])


@final
@attrs.frozen
class Visibility:
    """One ACL's say on discovery: the node is visible to a type that matches an ``allow``
    pattern and no ``deny`` pattern."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]

    def admits(self, actr_type: ActrType) -> bool:
        """Whether a node of ``actr_type`` may see the node in discovery answers."""
        if any(type_pattern_matches(p, actr_type) for p in self.deny):
            return False
        return any(type_pattern_matches(p, actr_type) for p in self.allow)


def check_visibility_pattern(pattern: str) -> None:
    """Validate one pattern received from the wire (the signaling server calls it).

    Raises:
        ConfigError: too long or malformed.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ConfigError(f"caller pattern of {len(pattern)} characters is too long")
    _split_type_pattern(pattern)


class AclGuard:
    """The ACLs one node enforces (its ``Config.acl`` and its workload's ``acl``), with a
    bounded cache of decisions: an envelope must pass each ACL.

    Args:
        acls: at least one ACL (a node without any has no guard at all).
    """

    def __init__(self, acls: Sequence[Acl]) -> None:
        if not acls:
            raise ValueError("an AclGuard needs at least one Acl")
        self._acls = tuple(acls)
        self._cache: dict[tuple[ActrId, str | None, Priority | None], str | None] = {}

    def refusal(
        self, caller: ActrId, route_key: str | None, priority: Priority | None
    ) -> str | None:
        """Why the envelope is refused (for the log), or ``None`` when every ACL accepts it."""
        key = (caller, route_key, priority)
        try:
            return self._cache[key]
        except KeyError:
            pass
        reason = None
        for acl in self._acls:
            reason = acl.refusal(caller, route_key, priority)
            if reason is not None:
                break
        if len(self._cache) >= DECISION_CACHE:
            self._cache.clear()
        self._cache[key] = reason
        return reason

    def visibility(self, realm: str) -> tuple[Visibility, ...]:
        """Each ACL's discovery visibility (a node must be admitted by all of them)."""
        return tuple(acl.visibility(realm) for acl in self._acls)


def guard(*acls: Acl | None, owner: str) -> AclGuard | None:
    """The guard enforcing every ACL given (``None`` entries skipped); ``None`` if there is none.

    Raises:
        ConfigError: an entry is neither an :class:`Acl` nor ``None`` (``owner`` names where
            it came from, e.g. a workload's ``acl`` attribute).
    """
    found: list[Acl] = []
    for acl in acls:
        if acl is None:
            continue
        if not isinstance(acl, Acl):
            raise ConfigError(f"{owner}.acl={acl!r} must be an Acl or None")
        found.append(acl)
    return AclGuard(found) if found else None


def discovery_visibility(*acls: Acl | None, realm: str, owner: str) -> tuple[Visibility, ...]:
    """What a node registers about who may discover it: one :class:`Visibility` per ACL
    (``None`` entries skipped); empty when it has none (everyone may).

    Raises:
        ConfigError: as :func:`guard`.
    """
    found = guard(*acls, owner=owner)
    return () if found is None else found.visibility(realm)
