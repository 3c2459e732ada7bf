"""A node process that records its OpenTelemetry spans: ``python tracenode.py TYPE --signaling
URL --spans FILE``.

Spans go to ``FILE``, one JSON object per line (:class:`JsonLinesExporter`), and each exported
span is announced on stdout (``exported NAME KIND``) so a test waits for it instead of polling.
Routes: ``Echo`` answers; ``Relay`` calls ``Echo`` on the node named in the request (a nested
call, to another process); ``Note`` is a tell that, under ``--hold``, is never finished (the
test kills the process and restarts it on the same ``--data-dir`` to have it replayed).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import IO

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from actr_trio import ActrId, ActrType, Context, Workload, route
from actr_trio.testing import serve_worker

ECHO = "itest.Trace.Echo"
RELAY = "itest.Trace.Relay"
NOTE = "itest.Trace.Note"


def span_record(span: ReadableSpan) -> dict[str, object]:
    """What a test checks of a span, in plain JSON."""
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON line, then says so on stdout."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self._out.write(json.dumps(span_record(span)) + "\n")
            self._out.flush()
            print("exported", span.name, span.kind.name, flush=True)
        return SpanExportResult.SUCCESS


class TraceNode(Workload):
    actr_type = ActrType("itest", "trace")  # each process runs a subclass of its own type

    def __init__(self, *, hold: bool) -> None:
        self.hold = hold

    @route(ECHO)
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route(RELAY)
    async def relay(self, request: bytes, ctx: Context) -> bytes:
        return await ctx.call(ActrId.parse(request.decode()), ECHO, b"nested")

    @route(NOTE)
    async def note(self, request: bytes, ctx: Context) -> bytes:
        if self.hold:
            print("holding", ctx.trace_id, flush=True)
            await trio.sleep_forever()
        return b""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("type", help="the node's ActrType name (manufacturer itest)")
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--spans", required=True, help="file the spans are appended to")
    parser.add_argument("--data-dir")
    parser.add_argument("--hold", action="store_true", help="never finish a Note")
    parser.add_argument("--listen", help="Config.listen: take direct WebSocket links here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    node_class = type("TraceNode", (TraceNode,), {"actr_type": ActrType("itest", args.type)})
    with open(args.spans, "a") as out:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(out)))
        trace.set_tracer_provider(provider)
        trio.run(
            lambda: serve_worker(
                node_class(hold=args.hold),
                args.signaling,
                realm="itest",
                data_dir=args.data_dir,
                shutdown_grace=0.5,
                listen=args.listen,
            )
        )
        provider.shutdown()


if __name__ == "__main__":
    main()
