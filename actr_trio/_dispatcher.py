"""The state path's last step: running one accepted envelope (what the scheduler hands over).

For each envelope, in the scheduler's order: count the attempt (a fresh envelope's first was
counted by its accept), dead-letter it past ``Config.max_attempts``, run its route's handler
with a :class:`~actr_trio.Context`, bounded by the caller's deadline for a request, and record
the outcome in the mailbox. A request's answer goes straight to the caller's waiter when the
caller runs in this process, else over the wire; ``Retryable`` queues it again. A handler
never fails the node: what it raises becomes the caller's error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import trio

from ._context import Context, NodeServices
from ._deadlines import DeadlineTimer
from ._envelope import (
    REQUEST,
    RESPONSE,
    Envelope,
    WireError,
    decode_envelope,
    encode_envelope,
    encode_response,
)
from ._ids import ActrId
from ._ingate import Work
from ._logging import NODE
from ._mailbox import Mailbox, StoredEnvelope
from ._proto.actr import wire_pb2
from ._router import BoundRoute
from ._scheduler import Scheduler
from ._tracing import handler_failed, handler_span
from .errors import CallError, DeadlineExceeded, RemoteError, Retryable, RouteNotFound

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(NODE)


class _Retry:
    """The handler raised Retryable: run the envelope again later."""


_RETRY: Final = _Retry()


class Dispatcher:
    """Runs accepted envelopes one at a time; owns the :class:`Scheduler` that orders them.

    Args:
        core: the node (its identity, config, outgate; handlers get contexts of it).
        mailbox: the node's mailbox.
        routes: the workload's routes by key.
        deadlines: the node's DeadlineTimer (cancels a handler at its caller's deadline).
    """

    def __init__(
        self,
        core: NodeServices,
        *,
        mailbox: Mailbox,
        routes: Mapping[str, BoundRoute],
        deadlines: DeadlineTimer,
    ) -> None:
        self._core = core
        self._config = core.config
        self._mailbox = mailbox
        self._routes = routes
        self._metrics = core.metrics  # None unless Config.metrics
        self.scheduler: Scheduler[Work] = Scheduler(
            self.handle,
            capacity=core.config.mailbox_capacity,
            aging=core.config.aging,
            expired=self.expired,
            deadlines=deadlines,
        )
        # Dead letters an in-memory mailbox keeps without their encoding (they came in
        # process): their envelopes, for a redrive, by (caller, request_id), oldest first.
        self._dead_envelopes: dict[tuple[str, str], Envelope] = {}

    def __repr__(self) -> str:
        return f"<Dispatcher {self.scheduler!r}>"

    def _enqueue(self, work: Work) -> None:
        self.scheduler.enqueue(work.envelope.priority, work)

    def dead_envelope(self, caller: str, request_id: str) -> Envelope | None:
        """The envelope of a dead letter an in-memory mailbox keeps without its encoding."""
        return self._dead_envelopes.get((caller, request_id))

    def forget_dead_letters(self) -> None:
        """The dead letters were purged: their kept envelopes go too."""
        self._dead_envelopes.clear()

    def enqueue_stored(self, stored: StoredEnvelope, *, replay: bool = False) -> None:
        """Queue a mailbox row again: left by a previous run (``replay``), or redriven."""
        kept = self._dead_envelopes.pop((stored.caller, stored.request_id), None)
        try:
            if kept is not None and not stored.data:
                env = kept
            else:
                env = decode_envelope(stored.data, max_payload=self._config.max_payload)
        except CallError as exc:
            log.error("dropping undecodable mailbox row %d: %s", stored.id, exc)
            self._mailbox.complete(stored.id, None)
            return
        if replay and self._metrics is not None:
            self._metrics.on_replayed(env.route_key, env.priority)
        # The caller is the link peer stored beside the envelope when it was accepted, never
        # the envelope's own field (the sender wrote that): replays and redrives show the truth.
        self._enqueue(Work(stored, env, ActrId.parse(stored.caller), replayed=True))

    async def handle(self, work: Work) -> None:
        env, stored = work.envelope, work.stored
        # Counted (committed) before the handler runs: a handler that kills the process counts.
        # A fresh envelope's first attempt was committed with its accept.
        if work.counted:
            work.counted = False
            attempts = stored.attempts
        else:
            attempts = await self._mailbox.begin_attempt(stored.id)
        if attempts > self._config.max_attempts:
            await self._dead_letter(
                work, f"failed {attempts - 1} attempts (max_attempts={self._config.max_attempts})"
            )
            return
        metrics = self._metrics
        started = time.perf_counter() if metrics is not None else 0.0
        tracer = self._core.tracer
        if tracer is None:
            response = await self._run_handler(work)
        else:
            response = await self._run_traced(tracer, work, attempts)
        if metrics is not None:
            finished = not isinstance(response, _Retry)
            metrics.on_handled(env.route_key, env.priority, time.perf_counter() - started, finished)
        if isinstance(response, _Retry):
            self._enqueue(work)  # to the back of its priority; the next attempt is counted too
            return
        if env.kind == REQUEST:
            self._answer(work, response)
        else:
            self._mailbox.complete(stored.id, None)

    def expired(self, work: Work) -> None:
        """The caller's deadline cancelled the handler of ``work`` (a request)."""
        late = DeadlineExceeded(f"{work.envelope.route_key}: handler passed the caller's deadline")
        self._answer(work, WireError.of(late))

    def _answer(self, work: Work, result: bytes | WireError) -> None:
        """Record ``result`` as the answer (for retries) and send it to the caller: straight
        to its waiter when the caller runs in this process, else over the wire."""
        env = work.envelope
        reply = self._core.outgate.local_reply(work.peer, work.reply)
        if reply is None:
            data = self._response(work, result)
            self._mailbox.complete(work.stored.id, data)
            self._core.outgate.respond(work.peer, env.lane, data, env.deadline_ms)
            return
        payload, error = (result, None) if isinstance(result, bytes) else (b"", result)
        self._mailbox.complete(work.stored.id, encode_response(env.request_id, payload, error))
        reply.respond(self._core.actr_id, env.request_id, payload, error)

    def _response(self, work: Work, result: bytes | WireError) -> bytes:
        env = work.envelope
        reply = Envelope(
            kind=RESPONSE,
            route_key=env.route_key,
            payload=result if isinstance(result, bytes) else b"",
            request_id=env.request_id,
            traceparent="",  # the caller has its span: an answer needs no trace context
            caller=self._core.actr_id,
            target=work.peer,
            priority=env.priority,
            lane=env.lane,
            deadline_ms=env.deadline_ms,
            error=result if isinstance(result, WireError) else None,
        )
        return encode_envelope(reply)

    async def _dead_letter(self, work: Work, reason: str) -> None:
        env = work.envelope
        log.warning(
            "%s: dead-lettering %s from %s: %s",
            self._core.actr_id,
            env.route_key,
            work.peer,
            reason,
        )
        await self._mailbox.dead_letter(work.stored.id, reason)
        if self._metrics is not None:
            self._metrics.on_dead_lettered(env.route_key, env.priority)
        if not work.stored.data:
            self._keep_dead_envelope(work)
        if env.kind == REQUEST:
            error = WireError(wire_pb2.DEAD_LETTER, "dead_letter", f"{env.route_key}: {reason}")
            reply = self._core.outgate.local_reply(work.peer, work.reply)
            if reply is not None:
                reply.respond(self._core.actr_id, env.request_id, b"", error)
            else:
                data = self._response(work, error)
                self._core.outgate.respond(work.peer, env.lane, data, env.deadline_ms)

    def _keep_dead_envelope(self, work: Work) -> None:
        """Keep a dead letter's envelope that its (in-memory) mailbox row does not encode, as
        many as the mailbox keeps dead letters (it drops the oldest first, as we do)."""
        stored = work.stored
        self._dead_envelopes[(stored.caller, stored.request_id)] = work.envelope
        kept = self._mailbox.statistics().dead_letters
        while len(self._dead_envelopes) > kept:
            del self._dead_envelopes[next(iter(self._dead_envelopes))]

    async def redrive(self, envelope_id: int | None = None) -> int:
        """Move dead letters back to the queue and schedule them; returns how many."""
        moved = await self._mailbox.redrive(envelope_id)
        for stored in moved:
            self.enqueue_stored(stored)
        return len(moved)

    async def _run_traced(
        self, tracer: Tracer, work: Work, attempt: int
    ) -> bytes | WireError | _Retry:
        """:meth:`_run_handler` inside a handler span (tracing is on)."""
        env = work.envelope
        with handler_span(
            tracer,
            env,
            self_id=self._core.actr_id,
            caller=work.peer,
            call=env.kind == REQUEST,
            replayed=work.replayed,
            attempt=attempt,
        ) as span:
            result = await self._run_handler(work)
            if isinstance(result, WireError):
                handler_failed(span, result.code, result.message)
            elif isinstance(result, _Retry):
                span.set_attribute("actr.retry", True)
            return result

    async def _run_handler(self, work: Work) -> bytes | WireError | _Retry:
        env = work.envelope
        # A caller's deadline bounds a request's handler. A tell has no waiting caller once it was
        # acknowledged, so its delivery deadline never skips or cuts short its handler.
        bounded = env.kind == REQUEST and env.deadline_ms != 0
        deadline = math.inf
        if bounded:
            left = env.deadline_ms / 1000 - time.time()
            if left <= 0:
                return WireError.of(
                    DeadlineExceeded(f"{env.route_key}: deadline passed before it was started")
                )
            deadline = trio.current_time() + left
        bound = self._routes.get(env.route_key)
        if bound is None:
            return WireError.of(
                RouteNotFound(f"{self._core.actr_id} has no route {env.route_key!r}")
            )
        ctx = Context(
            self._core, work.peer, env.request_id, env.traceparent, deadline, env.tracestate
        )
        try:
            request = bound.decode(env.payload)
            if not bounded:
                return bound.encode(await bound.handler(request, ctx))
            # The scheduler's scope carries the deadline (no scope of our own per envelope);
            # past it the handler is cancelled and _expired answers instead.
            self.scheduler.bound(deadline)
            try:
                result = await bound.handler(request, ctx)
            finally:
                self.scheduler.unbound()
            return bound.encode(result)
        except Retryable as exc:
            log.info("%s: %s asked to be retried: %s", self._core.actr_id, env.route_key, exc)
            return _RETRY
        except CallError as exc:
            if not isinstance(exc, RemoteError):
                log.info("%s: %s raised %r", self._core.actr_id, env.route_key, exc)
            return (
                WireError.of(exc)
                if exc.code or not isinstance(exc, RemoteError)
                else WireError(exc.wire_kind, type(exc).__name__, exc.message)
            )
        except Exception as exc:
            log.exception("%s: handler %s failed", self._core.actr_id, env.route_key)
            return WireError(
                RemoteError.wire_kind, type(exc).__name__, str(exc) or type(exc).__name__
            )
