"""echo: the smallest service, generated from ``protos/examples/echo.proto``.

``_gen/`` is what ``actr-trio codegen protos/examples/echo.proto -I protos/examples -o
examples/echo/_gen`` writes (committed, never edited; a test checks it is up to date). The
service only writes the method bodies of the generated ``EchoHandler``; the client calls it
through the generated, typed ``EchoClient``. ``Ping`` carries ``(actr.lane) = SIGNAL`` and
``(actr.priority) = HIGH`` in the ``.proto``, so its client defaults come from there.

Run: ``python -m examples.echo`` (WebRTC, two processes) or ``python -m examples.echo --local``.
"""

from __future__ import annotations

from actr_trio import ActrId, ActrRef, ActrType, Context, Workload

from .. import _common
from ._gen.echo_actr import EchoClient, EchoHandler
from ._gen.echo_pb2 import EchoRequest, EchoResponse, PingRequest, PingResponse


class Echo(EchoHandler):
    """The service: generated routes, hand-written bodies."""

    actr_type = ActrType("examples", "echo")

    async def echo(self, request: EchoRequest, ctx: Context) -> EchoResponse:
        return EchoResponse(text=request.text, served_by=str(ctx.self_id))

    async def ping(self, request: PingRequest, ctx: Context) -> PingResponse:
        return PingResponse(sequence=request.sequence)


class Caller(Workload):
    """The client node: it has no routes, it only calls."""

    actr_type = ActrType("examples", "echo-caller")


async def scenario(ref: ActrRef, target: ActrId, local: bool) -> None:
    echo = EchoClient(ref, target)
    for text in ("hello", "actr", "trio"):
        response = await echo.echo(EchoRequest(text=text))
        print(f"echo({text!r}) -> {response.text!r} from {response.served_by}")
    pong = await echo.ping(PingRequest(sequence=7), timeout=5.0)
    print(f"ping(7) -> {pong.sequence}")


if __name__ == "__main__":
    _common.main("echo", __doc__, worker=Echo, client=Caller, scenario=scenario)
