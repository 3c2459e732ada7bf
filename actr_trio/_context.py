"""``Context``: how a workload acts on the world (calls, tells, discovery, streams, media).

The runtime creates one per handled envelope (and one for ``on_start``/``on_stop`` and for
``ActrRef``); it carries the caller's identity, request id, trace context and deadline. Nested
calls made from a handler inherit the remaining deadline and the trace (``_tracing.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, final, overload

import trio
from google.protobuf.message import DecodeError, Message

from ._envelope import REQUEST, TELL
from ._ids import ActrId, ActrType
from ._lanes import Lane, Priority, as_lane, as_priority
from ._streams import StreamRegistry, StreamSender
from ._tokens import traceparent as new_traceparent
from ._tracing import traced_send
from ._tracks import TrackRegistry
from .errors import ActrError, ConfigError, MalformedEnvelope

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from ._config import Config
    from ._metrics import NodeMetrics
    from ._outgate import OutGate
    from .transport._abc import MediaSource, SignalingSession, Transport

M = TypeVar("M", bound=Message)

# Seconds a stream whose block raised may spend queueing its end-of-stream marker.
CLOSE_ON_ERROR_BOUND: Final = 1.0


class NodeServices(Protocol):
    """What a :class:`Context` uses of its running node (``_node._NodeCore`` is one).

    A protocol, not the node's class: the node builds contexts, so naming it here would
    make the two modules import each other.
    """

    config: Config
    outgate: OutGate
    transport: Transport
    #: Records spans (``_tracing.py``); None without OpenTelemetry or a tracer provider.
    tracer: Tracer | None
    metrics: NodeMetrics | None  # Config.metrics: the per-route counters and histograms

    @property
    def actr_id(self) -> ActrId: ...

    @property
    def session(self) -> SignalingSession: ...

    @property
    def streams(self) -> StreamRegistry[Context]: ...

    @property
    def tracks(self) -> TrackRegistry[Context]: ...


def _payload(message: bytes | Message) -> bytes:
    if type(message) is bytes:
        return message
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if isinstance(message, Message):
        return message.SerializeToString()
    raise TypeError(f"a request must be bytes or a protobuf message, not {type(message).__name__}")


class Actions:
    """The calls a node makes: shared by :class:`Context` (inside handlers) and ``ActrRef``.

    Subclasses provide ``_core``, ``deadline``, ``traceparent`` and ``tracestate``.
    """

    __slots__ = ()

    _core: NodeServices
    deadline: float
    #: W3C trace context of the envelope being handled (``""`` outside a handler).
    traceparent: str
    tracestate: str

    @property
    def trace_id(self) -> str:
        """The W3C trace id (32 hex characters) of the envelope being handled; ``""`` when
        there is none (outside a handler)."""
        return self.traceparent[3:35]

    @property
    def self_id(self) -> ActrId:
        """This node's identity."""
        return self._core.actr_id

    @property
    def streams(self) -> StreamRegistry[Context]:
        """Register ``stream_id -> async callback(chunk, ctx)`` for inbound stream chunks."""
        return self._core.streams

    @property
    def tracks(self) -> TrackRegistry[Context]:
        """Register ``track_id -> async callback(frame, ctx)`` for inbound media frames."""
        return self._core.tracks

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self._core.config.default_timeout
        if not timeout > 0:
            raise ConfigError(f"timeout={timeout!r} must be > 0")
        return timeout

    async def _traced(
        self,
        tracer: Tracer,
        kind: int,
        target: ActrId,
        route_key: str,
        payload: bytes,
        lane: Lane,
        priority: Priority,
        timeout: float,
    ) -> bytes:
        """``outgate.request`` inside a span (the slow path: tracing is on)."""
        outgate, within = self._core.outgate, self.deadline

        def send(traceparent: str, tracestate: str) -> Awaitable[bytes]:
            return outgate.request(
                target,
                route_key,
                payload,
                kind,
                lane,
                priority,
                timeout,
                within,
                traceparent,
                tracestate=tracestate,
            )

        return await traced_send(
            tracer,
            call=kind == REQUEST,
            route_key=route_key,
            target=target,
            priority=priority,
            lane=lane,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
            send=send,
        )

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        """Nodes of ``actr_type`` present in this realm (this node included if it matches).

        Raises:
            SignalingError: signaling is unreachable right now.
        """
        return await self._core.session.discover(actr_type)

    @overload
    async def call(
        self,
        target: ActrId,
        route_key: str,
        request: bytes | Message,
        *,
        response: type[bytes] = ...,
        timeout: float | None = None,
        priority: Priority = Priority.NORMAL,
        lane: Lane = Lane.RELIABLE,
    ) -> bytes: ...

    @overload
    async def call(
        self,
        target: ActrId,
        route_key: str,
        request: bytes | Message,
        *,
        response: type[M],
        timeout: float | None = None,
        priority: Priority = Priority.NORMAL,
        lane: Lane = Lane.RELIABLE,
    ) -> M: ...

    async def call(
        self,
        target: ActrId,
        route_key: str,
        request: bytes | Message,
        *,
        response: type[Any] = bytes,
        timeout: float | None = None,
        priority: Priority = Priority.NORMAL,
        lane: Lane = Lane.RELIABLE,
    ) -> Any:
        """Send a request to ``target`` and wait for its response.

        Args:
            target: the node to call.
            route_key: ``package.Service.Method``.
            request: ``bytes`` or a protobuf message.
            response: ``bytes`` (default) or the protobuf class to decode the response into.
            timeout: seconds; ``None`` means ``Config.default_timeout``. Inside a handler the
                call never outlives the handler's own deadline.
            priority: the receiver's scheduling priority.
            lane: ``Lane.RELIABLE`` (default) or ``Lane.SIGNAL``.

        Returns:
            The response, decoded as ``response``.

        Raises:
            DeadlineExceeded: no response in time (the deadline travels with the request, so
                the receiver does not start it once it passed).
            RemoteError: the handler raised (its code and message travel back).
            RouteNotFound, EnvelopeTooLarge, MalformedEnvelope, Overloaded,
                RemoteShuttingDown, WrongTarget: the receiver refused it.
            PeerUnavailable: ``target`` cannot be reached.
            ShuttingDown: this node is shutting down.

        Cancellation: cancelling the caller abandons the wait; the request may still be
        handled by the receiver (its effects stay idempotent by ``request_id``).
        """
        payload, lane, priority = _payload(request), as_lane(lane), as_priority(priority)
        metrics = self._core.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        if (tracer := self._core.tracer) is not None:
            data = await self._traced(
                tracer, REQUEST, target, route_key, payload, lane, priority, self._timeout(timeout)
            )
        else:
            data = await self._core.outgate.request(
                target,
                route_key,
                payload,
                REQUEST,
                lane,
                priority,
                self._timeout(timeout),
                self.deadline,
                self.traceparent or new_traceparent(),
                tracestate=self.tracestate,
            )
        if metrics is not None:
            metrics.on_call(target.type, lane, time.perf_counter() - started)
        if response is bytes:
            return data
        try:
            return response.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            raise MalformedEnvelope(
                f"{route_key}: response is not a {response.__name__}: {exc}"
            ) from exc

    async def tell(
        self,
        target: ActrId,
        route_key: str,
        message: bytes | Message,
        *,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,
        lane: Lane = Lane.RELIABLE,
    ) -> None:
        """Send a one-way message; returns once the receiver's mailbox committed it.

        Resent until acknowledged or past the deadline (``timeout``, default
        ``Config.default_timeout``). Raises like :meth:`call`, except that handler errors are
        not reported (nobody waits for the handler).
        """
        payload, lane, priority = _payload(message), as_lane(lane), as_priority(priority)
        if (tracer := self._core.tracer) is not None:
            await self._traced(
                tracer, TELL, target, route_key, payload, lane, priority, self._timeout(timeout)
            )
            return
        await self._core.outgate.request(
            target,
            route_key,
            payload,
            TELL,
            lane,
            priority,
            self._timeout(timeout),
            self.deadline,
            self.traceparent or new_traceparent(),
            tracestate=self.tracestate,
        )

    async def tell_many(
        self,
        target: ActrId,
        route_key: str,
        messages: Iterable[bytes | Message],
        *,
        priority: Priority = Priority.NORMAL,
        timeout: float | None = None,
        lane: Lane = Lane.RELIABLE,
    ) -> None:
        """Send several one-way messages to one route of ``target`` as one batch; returns once
        the receiver's mailbox committed every one of them.

        The batch is accepted in one go: one mailbox transaction at the receiver, and one
        frame on the wire (in process, one hand-over). Each message is still its own envelope
        to the handler, with its own ``ctx.request_id``, handled in the order given (and after
        what this sender sent before at the same priority). This is the fast way to send many
        messages without giving up durability.

        Args:
            target: the node to send to.
            route_key: ``package.Service.Method``, the same for every message.
            messages: ``bytes`` or protobuf messages (an empty batch sends nothing).
            priority: the receiver's scheduling priority, for all of them.
            timeout: seconds until the whole batch must be committed; ``None`` means
                ``Config.default_timeout``.
            lane: ``Lane.RELIABLE`` (default) or ``Lane.SIGNAL``.

        Raises:
            Like :meth:`tell`. A refusal (say ``RouteNotFound``) applies to the whole batch;
            an ``Overloaded`` receiver takes what it has room for and the rest is resent until
            the deadline, so on ``Overloaded`` or ``DeadlineExceeded`` a first part of the
            batch may have been committed (and will be handled).
        """
        payloads = [_payload(message) for message in messages]
        lane_, priority_, timeout_ = as_lane(lane), as_priority(priority), self._timeout(timeout)
        outgate, within = self._core.outgate, self.deadline

        def send(traceparent: str, tracestate: str) -> Awaitable[None]:
            return outgate.tell_many(
                target,
                route_key,
                payloads,
                lane=lane_,
                priority=priority_,
                timeout=timeout_,
                within=within,
                traceparent=traceparent,
                tracestate=tracestate,
            )

        if payloads and (tracer := self._core.tracer) is not None:
            await traced_send(
                tracer,
                call=False,
                route_key=route_key,
                target=target,
                priority=priority_,
                lane=lane_,
                traceparent=self.traceparent,
                tracestate=self.tracestate,
                send=send,
                batch=len(payloads),
            )
            return
        await send(self.traceparent or new_traceparent(), self.tracestate)

    @asynccontextmanager
    async def open_stream(
        self,
        target: ActrId,
        stream_id: str,
        *,
        lane: Lane = Lane.LATENCY_FIRST,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamSender]:
        """Open a stream of chunks to ``target``'s ``stream_id`` callback.

        ``async with ctx.open_stream(target, "s1") as stream: await stream.send(b"...")``.
        Leaving the block sends the end-of-stream marker. What arrives depends on the lane
        (see :class:`StreamSender`):

        * ``Lane.LATENCY_FIRST`` (the default): best effort. Chunks may be dropped, silently;
          those that arrive are in order. Leaving the block never waits for the receiver.
        * ``Lane.RELIABLE`` (or ``Lane.SIGNAL``): chunks arrive in order, each acknowledged
          by the receiver and resent (lost packets, a broken link) until it is. Leaving the
          block waits for the acks, at most ``timeout`` seconds (``None``:
          ``Config.default_timeout``), and raises
          :class:`~actr_trio.errors.StreamIncomplete` naming how many chunks were not
          acknowledged (receiver gone, unreachable, or without a callback for ``stream_id``).
          ``timeout`` also bounds how long each chunk is resent.

        If the block itself raises, the end marker is still sent but the acks are not awaited:
        the block's exception propagates.
        """
        if timeout is None:
            timeout = self._core.config.default_timeout
        elif not timeout > 0:
            raise ConfigError(f"timeout={timeout!r} must be > 0")
        sender = StreamSender(self._core.outgate, target, stream_id, as_lane(lane), timeout=timeout)
        try:
            yield sender
        except BaseException:
            # The block's own exception is what the caller needs to see, not a failure to
            # queue the end marker (e.g. ShuttingDown) on the way out.
            with trio.move_on_after(CLOSE_ON_ERROR_BOUND, shield=True), suppress(ActrError):
                await sender._abort()
            raise
        await sender.aclose()

    async def publish_track(self, target: ActrId, track: MediaSource) -> None:
        """Send ``track``'s frames to ``target`` (its ``ctx.tracks`` callback for ``track.id``)."""
        await self._core.transport.publish_track(target, track)


@final
class Context(Actions):
    """Identity of the current request plus the calls a workload makes.

    Created by the runtime only. Attributes: ``self_id``, ``caller_id`` (None outside a
    handler), ``request_id``, ``trace_id`` and ``traceparent`` (W3C trace context of the
    envelope), ``deadline`` (``trio.current_time()`` scale, ``math.inf`` when none).
    """

    __slots__ = ("_core", "caller_id", "deadline", "request_id", "traceparent", "tracestate")

    def __init__(
        self,
        core: NodeServices,
        caller_id: ActrId | None = None,
        request_id: str = "",
        traceparent: str = "",
        deadline: float = math.inf,
        tracestate: str = "",
    ) -> None:
        self._core = core
        self.caller_id = caller_id
        self.request_id = request_id
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"<Context {self.self_id} caller={self.caller_id} request={self.request_id!r}>"
