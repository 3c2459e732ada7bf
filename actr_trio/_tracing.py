"""OpenTelemetry spans for calls, tells and handler runs, and the W3C trace context they carry.

Every envelope carries a W3C ``traceparent`` (and, if there is one, a ``tracestate``): the
trace it belongs to and the span that sent it. With ``opentelemetry-api`` installed and a
tracer provider configured, a call is a CLIENT span, a tell (or a batch of tells) a PRODUCER
span, and the handler run it leads to a SERVER span (request) or CONSUMER span (tell) whose
parent is the sender's span, in whichever process the handler runs and also when the envelope
is handled after a restart (the mailbox keeps the envelope whole). While a handler runs its
span is the current one, so nested calls, and the workload's own spans, are its children.

A node asks :func:`tracer` once, when it is built: the tracer provider must be configured by
then. Without OpenTelemetry nothing of it is imported (:data:`AVAILABLE` is a probe made once
at import that looks the package up without importing it), and without a configured provider
nothing records either: then the node's tracer is ``None`` and the hot path tests only that.
Such a node still gives each call a trace (a fresh ``traceparent``) and passes a handler's on
to its nested calls unchanged, so the trace id reaches nodes that do record spans.

What a peer sends is checked here (:func:`checked_traceparent`, :func:`checked_tracestate`):
a malformed or oversized value is dropped, never an error.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, TypeVar

import trio

if TYPE_CHECKING:
    from types import ModuleType

    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ._envelope import Envelope
    from ._ids import ActrId
    from ._lanes import Lane, Priority

T = TypeVar("T")

__all__ = [
    "AVAILABLE",
    "TRACEPARENT_MAX",
    "TRACESTATE_MAX",
    "checked_traceparent",
    "checked_tracestate",
    "handler_span",
    "load",
    "set_tracer_provider",
    "traced_send",
    "tracer",
]


def _probe() -> bool:
    # find_spec of a top-level name imports nothing; a finder that refuses it raises ImportError.
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


#: ``opentelemetry`` can be imported. False: nothing here ever imports it.
AVAILABLE: Final = _probe()

#: The instrumentation scope name of actr_trio's spans.
SCOPE: Final = "actr_trio"

#: Characters of a traceparent a receiver looks at: version 00 has 55; a later version may
#: append fields, which are ignored, but not without bound.
TRACEPARENT_MAX: Final = 256
#: Characters of a tracestate passed on: the W3C recommendation's minimum (32 list members).
TRACESTATE_MAX: Final = 512

# version "-" trace-id "-" parent-id "-" flags, lowercase hex; a later version may go on after
# another "-". Version ff is invalid; all-zero ids are invalid (checked below).
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
# A tracestate list: printable ASCII (keys and values are narrower still; OpenTelemetry checks
# each member when it parses it).
_TRACESTATE: Final = re.compile(r"[\x20-\x7e]*")


def checked_traceparent(value: str) -> str:
    """``value`` if it is a valid W3C traceparent, else ``""`` (a peer's bad value is ignored)."""
    if len(value) > TRACEPARENT_MAX:
        return ""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return ""
    version, trace_id, span_id, _flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return ""
    if version == "00" and rest is not None:
        return ""  # version 00 is exactly 55 characters
    return value


def checked_tracestate(value: str) -> str:
    """``value`` if it may be passed on as a tracestate, else ``""``."""
    if len(value) > TRACESTATE_MAX or _TRACESTATE.fullmatch(value) is None:
        return ""
    return value


class _State:
    """What was loaded of OpenTelemetry, and the tracer for the provider in use."""

    __slots__ = ("api", "context", "failed", "override", "provider", "tracer")

    def __init__(self) -> None:
        self.api: ModuleType | None = None  # opentelemetry.trace, once loaded
        self.context: ModuleType | None = None  # opentelemetry.context
        self.failed = False  # the probe found the package but its import failed
        self.override: TracerProvider | None = None
        self.provider: object = None  # the provider ``tracer`` came from
        self.tracer: Tracer | None = None


_state: Final = _State()


def load() -> bool:
    """Import OpenTelemetry's API once; returns whether it is there."""
    if _state.api is not None:
        return True
    if not AVAILABLE or _state.failed:
        return False
    try:
        import opentelemetry.context as otel_context  # optional: loaded on demand only
        import opentelemetry.trace as otel_trace
    except ImportError:
        _state.failed = True
        return False
    _state.context = otel_context
    _state.api = otel_trace
    return True


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Nodes built from now on record spans with ``provider`` instead of OpenTelemetry's global
    one (``None``: the global one again). For tests: the global provider can be set only once
    per process."""
    _state.override = provider


def tracer() -> Tracer | None:
    """The tracer to record spans with, or ``None`` when no tracer provider is configured (then
    spans would be no-ops: the node passes trace context on as without OpenTelemetry).

    Not for the hot path (asking OpenTelemetry for its provider reads the environment): a node
    asks once, when it is built.
    """
    api = _state.api
    if api is None:
        if _state.override is None and not _provider_possible():
            return None  # and OpenTelemetry stays unloaded (~10 ms of node start)
        if not load():
            return None
        api = _state.api
        assert api is not None
    provider = _state.override or api.get_tracer_provider()
    if provider is not _state.provider:
        _state.provider = provider
        noop = isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider)
        _state.tracer = None if noop else provider.get_tracer(SCOPE)
    return _state.tracer


def _provider_possible() -> bool:
    """Whether a tracer provider may be configured: OpenTelemetry's is set either through
    ``opentelemetry.trace`` (then someone imported it) or named by this environment variable."""
    return "opentelemetry.trace" in sys.modules or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _remote(traceparent: str, tracestate: str) -> OtelContext:
    """A context whose span is the (remote) sender's, from a checked traceparent."""
    api, context = _state.api, _state.context
    assert api is not None
    assert context is not None
    parent = api.SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=api.TraceFlags(int(traceparent[53:55], 16)),
        trace_state=api.TraceState.from_header([tracestate]) if tracestate else None,
    )
    return api.set_span_in_context(api.NonRecordingSpan(parent), context.Context())  # type: ignore[no-any-return]


def _carried(span: Span) -> tuple[str, str]:
    """The traceparent and tracestate that make ``span`` the parent of what they travel to."""
    sc = span.get_span_context()
    traceparent = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    return traceparent, sc.trace_state.to_header() if sc.trace_state else ""


def _attributes(
    route_key: str, actr_id: ActrId, priority: Priority, lane: Lane
) -> dict[str, str | bool | int]:
    service, _, method = route_key.rpartition(".")
    return {
        "rpc.system": "actr",
        "rpc.service": service,
        "rpc.method": method,
        "actr.route": route_key,
        "actr.target": str(actr_id),
        "actr.target_type": str(actr_id.type),
        "actr.priority": priority.name,
        "actr.lane": lane.name,
    }


def _fail(span: Span, exc: BaseException) -> None:
    api = _state.api
    assert api is not None
    if isinstance(exc, trio.Cancelled):
        span.set_status(api.Status(api.StatusCode.ERROR, "cancelled"))
        return
    span.record_exception(exc)
    span.set_status(api.Status(api.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


async def traced_send(
    tracer: Tracer,
    *,
    call: bool,
    route_key: str,
    target: ActrId,
    priority: Priority,
    lane: Lane,
    traceparent: str,
    tracestate: str,
    send: Callable[[str, str], Awaitable[T]],
    batch: int = 0,
) -> T:
    """Run ``send(traceparent, tracestate)`` inside a CLIENT span (``call``) or a PRODUCER
    span (a tell; ``batch``: how many of them), giving it the span's trace context.

    The parent is the current span (a handler's, or the workload's own), else the trace
    context of the handler the send comes from (``traceparent``), else none: a new trace.
    """
    api = _state.api
    assert api is not None
    parent = None  # the current context
    if not api.get_current_span().get_span_context().is_valid and traceparent:
        parent = _remote(traceparent, tracestate)
    attributes = _attributes(route_key, target, priority, lane)
    if batch:
        attributes["actr.batch"] = batch
    span = tracer.start_span(
        route_key,
        context=parent,
        kind=api.SpanKind.CLIENT if call else api.SpanKind.PRODUCER,
        attributes=attributes,
    )
    try:
        return await send(*_carried(span))
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        span.end()


@contextmanager
def handler_span(
    tracer: Tracer,
    env: Envelope,
    *,
    self_id: ActrId,
    caller: ActrId,
    call: bool,
    replayed: bool,
    attempt: int,
) -> Iterator[Span]:
    """A SERVER (``call``) or CONSUMER span around a handler run, child of the span that sent
    ``env``, and the current span while the handler runs."""
    api, context = _state.api, _state.context
    assert api is not None
    assert context is not None
    parent = _remote(env.traceparent, env.tracestate) if env.traceparent else context.Context()
    attributes = _attributes(env.route_key, self_id, env.priority, env.lane)
    attributes["actr.caller"] = str(caller)
    attributes["actr.request_id"] = env.request_id
    attributes["actr.replayed"] = replayed
    attributes["actr.attempt"] = attempt
    span = tracer.start_span(
        env.route_key,
        context=parent,
        kind=api.SpanKind.SERVER if call else api.SpanKind.CONSUMER,
        attributes=attributes,
    )
    token = context.attach(api.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        context.detach(token)
        span.end()


def handler_failed(span: Span, code: str, message: str) -> None:
    """The handler's outcome is an error its caller receives (the handler did not raise out of
    the dispatcher: it raised and was answered, or it was refused)."""
    api = _state.api
    assert api is not None
    span.set_status(api.Status(api.StatusCode.ERROR, f"{code}: {message}"))
