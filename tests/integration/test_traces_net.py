"""One trace across processes: this process calls a node process (over WebRTC or a direct
WebSocket link: both lanes), whose handler
calls a third process; and a tell handled after its node was killed and restarted still joins
the sender's trace. Each node process writes its spans to a JSON-lines file (tracenode.py);
this process records its own in memory."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from netprocs import HERE, Processes, lane_argv, lane_options, read_line_matching
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from actr_trio import ActrId, ActrSystem, ActrType, Workload
from actr_trio._tracing import set_tracer_provider
from actr_trio.testing import network_config

RELAY = "itest.Trace.Relay"
NOTE = "itest.Trace.Note"


class Here(Workload):
    actr_type = ActrType("itest", "here")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        set_tracer_provider(None)
        provider.shutdown()


def tracenode_argv(name: str, url: str, spans: Path, lane: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(HERE / "tracenode.py"),
        name,
        "--signaling",
        url,
        "--spans",
        str(spans),
        *lane_argv(lane),
        *extra,
    ]


async def discover(ref: Any, name: str) -> ActrId:
    with trio.fail_after(60):
        while True:
            found = await ref.discover(ActrType("itest", name))
            if found:
                return found[0]  # type: ignore[no-any-return]
            await trio.sleep(0.05)  # the node process is still starting


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def only(spans: list[dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and s["kind"] == kind]
    assert len(found) == 1, spans
    return found[0]


def ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def test_one_trace_from_caller_to_handler_to_its_nested_call_across_processes(
    processes: Processes,
    signaling_url: str,
    tmp_path: Path,
    spans: InMemorySpanExporter,
    lane: str,
) -> None:
    front_file, back_file = tmp_path / "front.jsonl", tmp_path / "back.jsonl"
    await processes.start(*tracenode_argv("front", signaling_url, front_file, lane))
    await processes.start(*tracenode_argv("back", signaling_url, back_file, lane))
    config = network_config(signaling_url, realm="itest", **lane_options(lane))
    with trio.fail_after(120):
        async with ActrSystem(config).attach(Here()).start() as here:
            front = await discover(here, "front")
            back = await discover(here, "back")
            assert await here.call(front, RELAY, str(back).encode()) == b"nested"
            assert here.statistics().links[front] == lane
    # Each handler span ended (and was exported) before its answer was sent.
    (caller,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    trace_id, caller_span = ids(caller)
    relay = only(read_spans(front_file), RELAY, "SERVER")
    nested = only(read_spans(front_file), "itest.Trace.Echo", "CLIENT")
    echo = only(read_spans(back_file), "itest.Trace.Echo", "SERVER")
    assert {relay["trace_id"], nested["trace_id"], echo["trace_id"]} == {trace_id}
    assert relay["parent_id"] == caller_span
    assert nested["parent_id"] == relay["span_id"]
    assert echo["parent_id"] == nested["span_id"]
    assert relay["attributes"]["actr.caller"] == str(here.actr_id)
    assert echo["attributes"]["actr.target_type"] == "itest:back"


async def test_a_tell_replayed_after_its_node_was_killed_joins_the_senders_trace(
    processes: Processes,
    signaling_url: str,
    tmp_path: Path,
    spans: InMemorySpanExporter,
    lane: str,
) -> None:
    data_dir = tmp_path / "keeper"
    first = await processes.start(
        *tracenode_argv("keeper", signaling_url, tmp_path / "first.jsonl", lane),
        "--data-dir",
        str(data_dir),
        "--hold",
    )
    config = network_config(signaling_url, realm="itest", **lane_options(lane))
    with trio.fail_after(120):
        async with ActrSystem(config).attach(Here()).start() as here:
            keeper = await discover(here, "keeper")
            await here.tell(keeper, NOTE, b"x")  # returns once the keeper's mailbox committed it
            assert here.statistics().links[keeper] == lane
            holding = await read_line_matching(first, lambda line: line.startswith("holding"))
            first.kill()  # before the handler finished: the tell stays in the mailbox
            await first.wait()
            second = await processes.start(
                *tracenode_argv("keeper", signaling_url, tmp_path / "second.jsonl", lane),
                "--data-dir",
                str(data_dir),
            )
            await read_line_matching(second, lambda line: line == f"exported {NOTE} CONSUMER")
    (producer,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    trace_id, producer_span = ids(producer)
    assert holding == f"holding {trace_id}"
    replayed = only(read_spans(tmp_path / "second.jsonl"), NOTE, "CONSUMER")
    assert replayed["trace_id"] == trace_id
    assert replayed["parent_id"] == producer_span
    assert replayed["attributes"]["actr.replayed"] is True
    assert replayed["attributes"]["actr.attempt"] == 2
