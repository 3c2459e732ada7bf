"""The pytest plugin users get with the package: the ``local_realm`` fixture."""

from __future__ import annotations

from actr_trio import ActrType, Context, Workload, route
from actr_trio.testing import LocalRealm


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


async def test_local_realm_fixture(local_realm: LocalRealm) -> None:
    async with local_realm.start(Echo()) as a, local_realm.start(Caller()) as b:
        assert await b.call(a.actr_id, "demo.Echo.Echo", b"via the fixture") == b"via the fixture"
