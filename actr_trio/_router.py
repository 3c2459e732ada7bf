"""Workloads and their routes: ``@route`` marks handler methods, ``RouteTable`` dispatches.

A route key is ``package.Service.Method``. A handler takes ``(request, ctx)`` and returns the
response; request and response are ``bytes`` (the default) or a protobuf message class, decoded
and encoded here, so a malformed payload becomes ``MalformedEnvelope`` for the caller before the
handler runs.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, KeysView, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, final

import attrs
from google.protobuf.message import DecodeError, Message

from ._acl import Acl
from ._ids import ActrType
from ._lanes import Lane, Priority
from .errors import ConfigError, MalformedEnvelope, RemoteError

if TYPE_CHECKING:
    from ._context import Context

_ROUTE_KEY_RE: Final = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_ATTR: Final = "__actr_route__"

Handler = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=Handler)


@final
@attrs.frozen
class RouteSpec:
    """What ``@route`` recorded about one handler method."""

    key: str
    method: str
    request: type[Any]
    response: type[Any]
    lane: Lane
    priority: Priority


def _check_codec_type(name: str, value: object) -> None:
    if value is bytes:
        return
    if isinstance(value, type) and issubclass(value, Message):
        return
    raise ConfigError(f"{name}={value!r} must be bytes or a protobuf message class")


def route(
    key: str,
    *,
    request: type[Any] = bytes,
    response: type[Any] = bytes,
    lane: Lane = Lane.RELIABLE,
    priority: Priority = Priority.NORMAL,
) -> Callable[[F], F]:
    """Mark an ``async def method(self, request, ctx)`` of a :class:`Workload` as a route.

    Args:
        key: ``package.Service.Method``.
        request: ``bytes`` or the protobuf class the payload decodes to.
        response: ``bytes`` or the protobuf class the handler returns.
        lane: the lane callers should use (generated clients pass it; SIGNAL or RELIABLE).
        priority: the default priority generated clients send with.

    Raises:
        ConfigError: invalid key, codec type or lane.
        TypeError: the decorated function is not an ``async def`` (raised at class definition).
    """
    if not _ROUTE_KEY_RE.match(key):
        raise ConfigError(f"route key {key!r} must look like package.Service.Method")
    _check_codec_type("request", request)
    _check_codec_type("response", response)
    if not Lane(lane).sequenced:
        raise ConfigError(f"lane={lane!r}: routes use Lane.SIGNAL or Lane.RELIABLE")

    def mark(fn: F) -> F:
        # Checked here, at class definition: a plain def would otherwise fail on every call
        # with "object bytes can't be used in 'await' expression", far from the mistake.
        is_async = inspect.iscoroutinefunction(fn)  # a variable: no TypeGuard narrowing of fn
        if not is_async:
            name = getattr(fn, "__qualname__", repr(fn))
            raise TypeError(f"@route({key!r}) needs an async def, but {name} is not one")
        setattr(
            fn,
            _ATTR,
            RouteSpec(key, fn.__name__, request, response, Lane(lane), Priority(priority)),
        )
        return fn

    return mark


class Workload:
    """Base class of what a node hosts (one workload per node).

    Subclasses set ``actr_type`` and mark handler methods with :func:`route`. ``on_start`` runs
    after registration and before the scheduler starts; ``on_stop`` after the drain and before
    the node unregisters. Both are optional.

    ``acl`` (optional, class or instance attribute): an :class:`~actr_trio.Acl` of the callers
    this workload accepts, enforced before the mailbox accepts an envelope, beside
    ``Config.acl`` (an envelope must pass both). ``None``, the default: no limit of its own.
    """

    actr_type: ClassVar[ActrType]
    acl: Acl | None = None
    __actr_routes__: ClassVar[Mapping[str, RouteSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, RouteSpec] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                spec = getattr(value, _ATTR, None)
                if isinstance(spec, RouteSpec):
                    other = routes.get(spec.key)
                    if other is not None and other.method != spec.method and klass is cls:
                        raise ConfigError(
                            f"{cls.__name__}: route {spec.key!r} is on both {other.method} and {spec.method}"
                        )
                    routes[spec.key] = spec
        cls.__actr_routes__ = routes

    async def on_start(self, ctx: Context) -> None:
        """Called once registered and the transport is open, before handlers run."""

    async def on_stop(self, ctx: Context) -> None:
        """Called after the drain at shutdown, before the transport closes."""


@attrs.frozen
class BoundRoute:
    spec: RouteSpec
    handler: Handler

    def decode(self, payload: bytes) -> object:
        """The request object for ``payload``; MalformedEnvelope when it does not parse."""
        if self.spec.request is bytes:
            return payload
        try:
            return self.spec.request.FromString(payload)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            raise MalformedEnvelope(
                f"{self.spec.key}: payload is not a {self.spec.request.__name__}: {exc}"
            ) from exc

    def encode(self, result: object) -> bytes:
        """Bytes of the handler's result; RemoteError when it is of the wrong type."""
        expected = self.spec.response
        if type(result) is bytes and expected is bytes:
            return result
        if expected is bytes and isinstance(result, bytes | bytearray | memoryview):
            return bytes(result)
        if expected is not bytes and isinstance(result, expected):
            data: bytes = result.SerializeToString()
            return data
        raise RemoteError(
            f"{self.spec.key}: handler returned {type(result).__name__}, expected {expected.__name__}",
            code="BadResponseType",
        )


class RouteTable:
    """The routes of one workload instance, by key."""

    def __init__(self, workload: Workload) -> None:
        cls = type(workload)
        if not isinstance(getattr(cls, "actr_type", None), ActrType):
            raise ConfigError(f"{cls.__name__}.actr_type must be an ActrType")
        self._routes = {
            key: BoundRoute(spec, getattr(workload, spec.method))
            for key, spec in cls.__actr_routes__.items()
        }

    def __contains__(self, key: str) -> bool:
        return key in self._routes

    def keys(self) -> KeysView[str]:
        """The route keys (a view: ``in`` on it is a plain dict lookup)."""
        return self._routes.keys()

    @property
    def by_key(self) -> Mapping[str, BoundRoute]:
        """The routes by key, read only (for lookups per envelope without a method call)."""
        return self._routes

    def get(self, key: str) -> BoundRoute | None:
        return self._routes.get(key)
