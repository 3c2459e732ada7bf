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


async def test_temporary_data_dirs_give_a_durable_node_and_are_removed() -> None:
    async with LocalRealm() as realm:
        data_dir = realm.temporary_data_dir()
        assert data_dir != realm.temporary_data_dir()  # a fresh one each time
        async with realm.start(Echo(), data_dir=data_dir) as a:
            assert a.statistics().mailbox.durable
        assert (data_dir / "mailbox.sqlite3").exists()
    assert not data_dir.exists()
