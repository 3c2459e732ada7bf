"""Generated handler + generated client, end to end through LocalRealm (the real runtime).

The code is generated from ``protos/examples/echo.proto`` into a temporary package, imported,
subclassed and called, both from outside (``ActrRef``) and from inside a handler (``Context``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from actr_trio import ActrId, ActrType, Context, Priority, Workload, route
from actr_trio.codegen import generate
from actr_trio.errors import RemoteError
from actr_trio.testing import LocalRealm

ECHO_PROTO = Path(__file__).resolve().parents[2] / "protos" / "examples" / "echo.proto"
PACKAGE = "roundtrip_echo_gen"


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated ``echo_actr`` module, freshly generated and importable."""
    root = tmp_path_factory.mktemp("roundtrip")
    generate([ECHO_PROTO], out_dir=root / PACKAGE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        yield importlib.import_module(f"{PACKAGE}.echo_actr")


@pytest.fixture(scope="module")
def pb2(gen: ModuleType) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.echo_pb2")


def echo_impl(gen: ModuleType, pb2: ModuleType) -> Any:
    """A workload written the way users write one: only the method bodies."""

    class EchoImpl(gen.EchoHandler):  # type: ignore[misc, name-defined]
        actr_type = ActrType("acme", "echo")

        def __init__(self) -> None:
            self.pings: list[int] = []

        async def echo(self, request: Any, ctx: Context) -> Any:
            if request.text == "boom":
                raise ValueError("no booms")
            return pb2.EchoResponse(text=request.text, served_by=str(ctx.self_id))

        async def ping(self, request: Any, ctx: Context) -> Any:
            self.pings.append(request.sequence)
            return pb2.PingResponse(sequence=request.sequence + 1)

    return EchoImpl()


class Probe(Workload):
    """Only calls out."""

    actr_type = ActrType("acme", "probe")


async def test_client_from_outside_calls_generated_handler(
    gen: ModuleType, pb2: ModuleType
) -> None:
    with trio.fail_after(10):
        async with LocalRealm() as realm:
            impl = echo_impl(gen, pb2)
            async with realm.start(impl) as a, realm.start(Probe()) as b:
                client = gen.EchoClient(b, a.actr_id)
                assert client.target == a.actr_id
                response = await client.echo(pb2.EchoRequest(text="hi"))
                assert isinstance(response, pb2.EchoResponse)
                assert (response.text, response.served_by) == ("hi", str(a.actr_id))
                pong = await client.ping(pb2.PingRequest(sequence=41))
                assert pong.sequence == 42
                pong = await client.ping(pb2.PingRequest(sequence=1), priority=Priority.LOW)
                assert pong.sequence == 2
                assert impl.pings == [41, 1]


async def test_handler_error_reaches_the_client(gen: ModuleType, pb2: ModuleType) -> None:
    with trio.fail_after(10):
        async with (
            LocalRealm() as realm,
            realm.start(echo_impl(gen, pb2)) as a,
            realm.start(Probe()) as b,
        ):
            with pytest.raises(RemoteError, match="no booms"):
                await gen.EchoClient(b, a.actr_id).echo(pb2.EchoRequest(text="boom"))


async def test_client_inside_a_handler_uses_ctx(gen: ModuleType, pb2: ModuleType) -> None:
    class Relay(Workload):
        actr_type = ActrType("acme", "relay")

        def __init__(self, target: ActrId) -> None:
            self.target = target

        @route("test.Relay.Go")
        async def go(self, request: bytes, ctx: Context) -> bytes:
            response = await gen.EchoClient(ctx, self.target).echo(
                pb2.EchoRequest(text=request.decode())
            )
            text: str = response.text
            return text.encode()

    with trio.fail_after(10):
        async with (
            LocalRealm() as realm,
            realm.start(echo_impl(gen, pb2)) as a,
            realm.start(Relay(a.actr_id)) as r,
            realm.start(Probe()) as b,
        ):
            assert await b.call(r.actr_id, "test.Relay.Go", b"via ctx") == b"via ctx"
