"""OpenTelemetry spans of calls, tells and handler runs, and the W3C trace context they carry.

Spans go to an in-memory exporter (opentelemetry-sdk). Every node test runs on both paths of
one process (handed over as Python objects, and encoded through the loopback transport).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actr_trio import ActrType, Context, Priority, Workload, route
from actr_trio._envelope import TELL, Envelope, decode_envelope, encode_envelope
from actr_trio._lanes import Lane
from actr_trio._proto.actr import wire_pb2
from actr_trio._tracing import (
    TRACESTATE_MAX,
    checked_traceparent,
    checked_tracestate,
    set_tracer_provider,
)
from actr_trio.errors import RemoteError
from actr_trio.testing import LocalRealm

BOUND = 10  # seconds; generous for a loaded machine, never reached when things work
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

FRONT = ActrType("acme", "front")
BACK = ActrType("acme", "back")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded by this test (a provider of its own: the global one is set only once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        set_tracer_provider(None)
        provider.shutdown()


class Back(Workload):
    actr_type = BACK

    def __init__(self) -> None:
        self.trace_ids: list[str] = []
        self.told = trio.Event()
        self.told_count = 0
        self.want = 1

    @route("demo.Back.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        self.trace_ids.append(ctx.trace_id)
        return request

    @route("demo.Back.Fail")
    async def fail(self, request: bytes, ctx: Context) -> bytes:
        raise ValueError("no")

    @route("demo.Back.Note")
    async def note(self, request: bytes, ctx: Context) -> bytes:
        self.trace_ids.append(ctx.trace_id)
        self.told_count += 1
        if self.told_count >= self.want:
            self.told.set()
        return b""


class Front(Workload):
    """Calls Back from inside its handler (a nested call)."""

    actr_type = FRONT

    def __init__(self) -> None:
        self.back = None
        self.trace_ids: list[str] = []

    @route("demo.Front.Relay")
    async def relay(self, request: bytes, ctx: Context) -> bytes:
        assert self.back is not None
        self.trace_ids.append(ctx.trace_id)
        return await ctx.call(self.back, "demo.Back.Echo", request)


class Client(Workload):
    actr_type = ActrType("acme", "client")


def _one(spans: InMemorySpanExporter, name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name and s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans.get_finished_spans()]
    return found[0]


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None
    assert child.context is not None
    assert parent.context is not None
    return (
        child.context.trace_id == parent.context.trace_id
        and child.parent.span_id == parent.context.span_id
    )


@pytest.mark.usefixtures("envelope_path")
async def test_a_call_is_a_client_span_and_its_handler_a_server_span_child(
    spans: InMemorySpanExporter,
) -> None:
    back = Back()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(back) as b,
            realm.start(Client()) as client,
        ):
            await client.call(b.actr_id, "demo.Back.Echo", b"hi", priority=Priority.HIGH)
    caller = _one(spans, "demo.Back.Echo", SpanKind.CLIENT)
    handler = _one(spans, "demo.Back.Echo", SpanKind.SERVER)
    assert caller.parent is None  # ActrRef outside any span: a new trace
    assert _child_of(handler, caller)
    assert caller.context is not None
    assert back.trace_ids == [f"{caller.context.trace_id:032x}"]  # ctx.trace_id is the trace's
    expected = {
        "rpc.system": "actr",
        "rpc.service": "demo.Back",
        "rpc.method": "Echo",
        "actr.route": "demo.Back.Echo",
        "actr.target": str(b.actr_id),
        "actr.target_type": "acme:back",
        "actr.priority": "HIGH",
        "actr.lane": "RELIABLE",
    }
    assert expected.items() <= dict(caller.attributes or {}).items()
    attributes = dict(handler.attributes or {})
    assert expected.items() <= attributes.items()
    assert attributes["actr.replayed"] is False
    assert attributes["actr.attempt"] == 1
    assert attributes["actr.caller"] == str(client.actr_id)


@pytest.mark.usefixtures("envelope_path")
async def test_a_tell_is_a_producer_span_and_its_handler_a_consumer_span_child(
    spans: InMemorySpanExporter,
) -> None:
    back = Back()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(back) as b,
            realm.start(Client()) as client,
        ):
            await client.tell(b.actr_id, "demo.Back.Note", b"x", priority=Priority.LOW)
            await back.told.wait()
    producer = _one(spans, "demo.Back.Note", SpanKind.PRODUCER)
    consumer = _one(spans, "demo.Back.Note", SpanKind.CONSUMER)
    assert _child_of(consumer, producer)
    assert dict(consumer.attributes or {})["actr.priority"] == "LOW"


@pytest.mark.usefixtures("envelope_path")
async def test_a_batch_of_tells_is_one_producer_span_parent_of_each_handler_run(
    spans: InMemorySpanExporter,
) -> None:
    back = Back()
    back.want = 3
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(back) as b,
            realm.start(Client()) as client,
        ):
            await client.tell_many(b.actr_id, "demo.Back.Note", [b"1", b"2", b"3"])
            await back.told.wait()
    producer = _one(spans, "demo.Back.Note", SpanKind.PRODUCER)
    assert dict(producer.attributes or {})["actr.batch"] == 3
    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(consumers) == 3
    assert all(_child_of(c, producer) for c in consumers)


@pytest.mark.usefixtures("envelope_path")
async def test_a_nested_call_from_a_handler_is_a_child_of_the_handler_span(
    spans: InMemorySpanExporter,
) -> None:
    back, front = Back(), Front()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(back) as b,
            realm.start(front) as f,
            realm.start(Client()) as client,
        ):
            front.back = b.actr_id
            assert await client.call(f.actr_id, "demo.Front.Relay", b"x") == b"x"
    outer = _one(spans, "demo.Front.Relay", SpanKind.CLIENT)
    relay = _one(spans, "demo.Front.Relay", SpanKind.SERVER)
    nested = _one(spans, "demo.Back.Echo", SpanKind.CLIENT)
    echo = _one(spans, "demo.Back.Echo", SpanKind.SERVER)
    assert _child_of(relay, outer)
    assert _child_of(nested, relay)
    assert _child_of(echo, nested)
    assert front.trace_ids == back.trace_ids  # one trace id seen by both handlers


async def test_a_send_inside_the_workloads_own_span_is_its_child(
    spans: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(Back()) as b,
            realm.start(Client()) as client,
        ):
            with provider.get_tracer("app").start_as_current_span("batch job"):
                await client.call(b.actr_id, "demo.Back.Echo", b"x")
    provider.shutdown()
    job = next(s for s in spans.get_finished_spans() if s.name == "batch job")
    assert _child_of(_one(spans, "demo.Back.Echo", SpanKind.CLIENT), job)


@pytest.mark.usefixtures("envelope_path")
async def test_a_failing_handler_marks_both_spans_as_errors(spans: InMemorySpanExporter) -> None:
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(Back()) as b,
            realm.start(Client()) as client,
        ):
            with pytest.raises(RemoteError):
                await client.call(b.actr_id, "demo.Back.Fail", b"")
    handler = _one(spans, "demo.Back.Fail", SpanKind.SERVER)
    caller = _one(spans, "demo.Back.Fail", SpanKind.CLIENT)
    assert handler.status.status_code is StatusCode.ERROR
    assert "ValueError" in (handler.status.description or "")
    assert caller.status.status_code is StatusCode.ERROR
    assert [e.name for e in caller.events] == ["exception"]


class Held(Workload):
    """Its first run of a tell never finishes (the node stops around it); later runs do."""

    actr_type = BACK

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.done = trio.Event()
        self.hold = True

    @route("demo.Back.Note")
    async def note(self, request: bytes, ctx: Context) -> bytes:
        self.entered.set()
        if self.hold:
            await trio.sleep_forever()
        self.done.set()
        return b""


async def test_a_tell_handled_after_a_restart_still_joins_its_trace(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    held = Held()
    data_dir = tmp_path / "back"
    with trio.fail_after(BOUND * 3):
        async with LocalRealm() as realm, realm.start(Client()) as client:
            async with realm.start(held, data_dir=data_dir, shutdown_grace=0.1) as b:
                await client.tell(b.actr_id, "demo.Back.Note", b"x")
                await held.entered.wait()
            # Stopped mid-handler: the tell stays in the mailbox, its traceparent with it.
            held.hold = False
            async with realm.start(held, data_dir=data_dir) as b:
                await held.done.wait()
                assert b.statistics().mailbox.replayed == 1
    producer = _one(spans, "demo.Back.Note", SpanKind.PRODUCER)
    runs = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(runs) == 2
    cut, replayed = runs
    assert cut.status.status_code is StatusCode.ERROR  # the run the shutdown cancelled
    assert dict(cut.attributes or {})["actr.replayed"] is False
    assert dict(replayed.attributes or {})["actr.replayed"] is True
    assert dict(replayed.attributes or {})["actr.attempt"] == 2
    assert _child_of(cut, producer)
    assert _child_of(replayed, producer)


async def test_without_a_tracer_provider_the_trace_context_is_passed_on_unchanged() -> None:
    # OpenTelemetry is installed but nothing records: no spans, and a handler's nested call
    # carries the trace id it received (as on a node without OpenTelemetry).
    back, front = Back(), Front()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm() as realm,
            realm.start(back) as b,
            realm.start(front) as f,
            realm.start(Client()) as client,
        ):
            front.back = b.actr_id
            await client.call(f.actr_id, "demo.Front.Relay", b"x")
            await client.call(f.actr_id, "demo.Front.Relay", b"y")
    assert len(front.trace_ids) == 2
    assert front.trace_ids == back.trace_ids
    assert front.trace_ids[0] != front.trace_ids[1]  # each call from outside: a new trace
    assert all(len(t) == 32 and int(t, 16) for t in front.trace_ids)


# A process where ``opentelemetry`` cannot be imported: nodes serve calls, tells and nested
# calls on both paths, the trace id still reaches the nested call, and nothing of OpenTelemetry
# was imported.
WITHOUT_OTEL = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"{name} is blocked")
            return None

    sys.meta_path.insert(0, Blocker())
    import trio
    from actr_trio import ActrType, Context, Workload, route, _tracing
    from actr_trio.testing import LocalRealm

    class Back(Workload):
        actr_type = ActrType("acme", "back")
        def __init__(self):
            self.seen = []
            self.told = trio.Event()
        @route("demo.Back.Echo")
        async def echo(self, request: bytes, ctx: Context) -> bytes:
            self.seen.append(ctx.trace_id)
            return request
        @route("demo.Back.Note")
        async def note(self, request: bytes, ctx: Context) -> bytes:
            self.told.set()
            return b""

    class Front(Workload):
        actr_type = ActrType("acme", "front")
        back = None
        @route("demo.Front.Relay")
        async def relay(self, request: bytes, ctx: Context) -> bytes:
            self.seen = ctx.trace_id
            return await ctx.call(self.back, "demo.Back.Echo", request)

    class Client(Workload):
        actr_type = ActrType("acme", "client")

    async def main(direct):
        back, front = Back(), Front()
        with trio.fail_after(20):
            async with LocalRealm(direct=direct) as realm, realm.start(back) as b, \\
                    realm.start(front) as f, realm.start(Client()) as c:
                front.back = b.actr_id
                assert await c.call(f.actr_id, "demo.Front.Relay", b"x") == b"x"
                await c.tell(b.actr_id, "demo.Back.Note", b"")
                await back.told.wait()
        assert back.seen == [front.seen] and len(front.seen) == 32, (back.seen, front.seen)

    trio.run(main, True)
    trio.run(main, False)
    assert not _tracing.AVAILABLE
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    assert not loaded, loaded
    print("served without opentelemetry")
    """
)


async def test_without_opentelemetry_nodes_serve_and_import_nothing_of_it() -> None:
    with trio.fail_after(120):
        done = await trio.run_process(
            [sys.executable, "-c", WITHOUT_OTEL], capture_stdout=True, capture_stderr=True
        )
    assert done.stdout.decode().strip() == "served without opentelemetry", done.stderr.decode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0af7651916cd43dd",  # a bare trace id (what the field held before)
        TP.upper(),
        TP[:-1],
        TP + "-",  # version 00 has no more fields
        "ff" + TP[2:],  # version ff is invalid
        "00-" + "0" * 32 + TP[35:],  # all-zero trace id
        TP[:36] + "0" * 16 + TP[52:],  # all-zero parent id
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        "01-" + TP[3:] + "-" + "x" * 300,  # a later version, but too long
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert checked_traceparent(value) == ""
    env = _decoded(traceparent=value, tracestate="vendor=1")
    assert env.traceparent == ""
    assert env.tracestate == ""  # without a traceparent a tracestate means nothing


@pytest.mark.parametrize("value", [TP, "00-" + TP[3:-2] + "00", "01-" + TP[3:] + "-later-field"])
def test_a_valid_traceparent_travels_unchanged(value: str) -> None:
    assert checked_traceparent(value) == value
    env = _decoded(traceparent=value, tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert env.traceparent == value
    assert env.tracestate == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_a_tracestate_over_its_bound_or_not_printable_is_dropped() -> None:
    assert checked_tracestate("a=" + "b" * (TRACESTATE_MAX - 2)) != ""
    assert checked_tracestate("a=" + "b" * (TRACESTATE_MAX - 1)) == ""
    assert checked_tracestate("a=\n") == ""
    assert _decoded(traceparent=TP, tracestate="a=\x00").tracestate == ""


def test_an_envelope_stored_before_traceparent_still_decodes() -> None:
    # A mailbox row written when field 5 held a bare 16-hex trace id: handled as a new trace.
    old = wire_pb2.RpcEnvelope(kind=TELL, route_key="demo.Back.Note", request_id="r1")
    data = old.SerializeToString() + b"\x2a\x10" + b"0af7651916cd43dd"  # field 5, 16 bytes
    env = decode_envelope(data, max_payload=1024)
    assert (env.route_key, env.request_id, env.traceparent) == ("demo.Back.Note", "r1", "")


def _decoded(*, traceparent: str, tracestate: str) -> Envelope:
    env = Envelope(
        TELL,
        "demo.Back.Note",
        b"",
        "r1",
        traceparent,
        None,
        None,
        Priority.NORMAL,
        Lane.RELIABLE,
        0,
    )
    env.tracestate = tracestate
    return decode_envelope(encode_envelope(env), max_payload=1024)
