"""A node handed back by ``start()`` is ready: the first call and tell made at once succeed.

A durable node resends, after ``start()``, whatever a crash left in its outbox. That leftover set
must be read before the user can send anything: read later, it took the user's own first call
for a leftover, resent it under the same request id and took its response away from the caller,
who then got ``DeadlineExceeded`` although the callee had answered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actr_trio import ActrType, Context, Workload, route
from actr_trio.testing import LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")

ROUNDS = 15


class Echo(Workload):
    actr_type = ActrType("race", "echo")

    def __init__(self) -> None:
        self.told: list[bytes] = []

    @route("race.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("race.Echo.Note")
    async def note(self, request: bytes, ctx: Context) -> bytes:
        self.told.append(request)
        return b""


class Caller(Workload):
    actr_type = ActrType("race", "caller")


@pytest.mark.parametrize("durable", [True, False], ids=["data_dir", "no_data_dir"])
async def test_call_and_tell_right_after_start(tmp_path: Path, durable: bool) -> None:
    echo = Echo()
    async with LocalRealm() as realm, realm.start(echo) as server:
        for i in range(ROUNDS):
            data_dir = tmp_path / "caller" if durable else None
            async with realm.start(Caller(), data_dir=data_dir) as caller:
                # No wait of any kind between start() and the first requests.
                answer = await caller.call(server.actr_id, "race.Echo.Echo", b"%d" % i, timeout=10)
                await caller.tell(server.actr_id, "race.Echo.Note", b"%d" % i)
                assert answer == b"%d" % i
                # Nothing of this run was taken for a crash leftover and resent.
                assert caller.statistics().outbound.recovered == 0
    assert echo.told == [b"%d" % i for i in range(ROUNDS)]
