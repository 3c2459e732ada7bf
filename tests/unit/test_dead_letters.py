"""Dead letters (issue 6): attempts counted before each run, dead-lettered after max_attempts."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actr_trio import ActrType, Context, Workload, route
from actr_trio.errors import RemoteError, Retryable
from actr_trio.testing import LocalRealm

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")


class Flaky(Workload):
    actr_type = ActrType("acme", "flaky")

    def __init__(self) -> None:
        self.attempts: dict[bytes, int] = {}
        self.healthy: list[bytes] = []
        self.fix = False
        self.fixed = trio.Event()

    @route("demo.Flaky.Poison")
    async def poison(self, request: bytes, ctx: Context) -> bytes:
        self.attempts[request] = self.attempts.get(request, 0) + 1
        if not self.fix:
            raise Retryable("database busy")
        self.fixed.set()
        return b"fixed " + request

    @route("demo.Flaky.Broken")
    async def broken(self, request: bytes, ctx: Context) -> bytes:
        self.attempts[request] = self.attempts.get(request, 0) + 1
        raise KeyError(request)

    @route("demo.Flaky.Ok")
    async def ok(self, request: bytes, ctx: Context) -> bytes:
        self.healthy.append(request)
        return request


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


@pytest.mark.parametrize("durable", [False, True])
async def test_retryable_poison_is_dead_lettered_after_exactly_max_attempts(
    durable: bool, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    flaky = Flaky()
    options = {"data_dir": tmp_path / "flaky"} if durable else {}
    async with (
        LocalRealm(max_attempts=3) as realm,
        realm.start(flaky, **options) as a,
        realm.start(Caller()) as b,
    ):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(b.tell, a.actr_id, "demo.Flaky.Ok", b"h%d" % i)
                with pytest.raises(RemoteError, match="max_attempts=3") as caught:
                    await b.call(a.actr_id, "demo.Flaky.Poison", b"p")
        assert caught.value.code == "dead_letter"
        assert flaky.attempts[b"p"] == 3
        assert sorted(flaky.healthy) == [b"h%d" % i for i in range(5)]
        letters = await a.dead_letters()
        assert len(letters) == 1
        assert letters[0].envelope.attempts == 4  # the 4th attempt was refused, not run
        assert a.statistics().mailbox.dead_letters == 1

        # Redrive: once the cause is fixed, the envelope runs again (fresh attempt count).
        flaky.fix = True
        assert await a.redrive() == 1
        with trio.fail_after(10):
            await flaky.fixed.wait()
        assert flaky.attempts[b"p"] == 4
        assert await a.dead_letters() == []


async def test_non_retryable_error_is_final_and_not_retried() -> None:
    flaky = Flaky()
    async with (
        LocalRealm(max_attempts=3) as realm,
        realm.start(flaky) as a,
        realm.start(Caller()) as b,
    ):
        with pytest.raises(RemoteError) as caught:
            await b.call(a.actr_id, "demo.Flaky.Broken", b"k")
        assert caught.value.code == "KeyError"
        assert flaky.attempts[b"k"] == 1
        assert await a.dead_letters() == []


async def test_purge_dead_letters() -> None:
    flaky = Flaky()
    async with (
        LocalRealm(max_attempts=1) as realm,
        realm.start(flaky) as a,
        realm.start(Caller()) as b,
    ):
        for i in range(3):
            with pytest.raises(RemoteError, match=r"dead|max_attempts"):
                await b.call(a.actr_id, "demo.Flaky.Poison", b"%d" % i)
        assert len(await a.dead_letters()) == 3
        assert await a.purge_dead_letters() == 3
        assert await a.dead_letters() == []


class Mixed(Workload):
    """Healthy envelopes cost 1 ms of (virtual) handler time; poison ones fail at once."""

    actr_type = ActrType("acme", "mixed")

    def __init__(self) -> None:
        self.healthy = 0
        self.poison_attempts = 0
        self.all_healthy = trio.Event()
        self.expected = 0

    @route("demo.Mixed.Ok")
    async def ok(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(0.001)
        self.healthy += 1
        if self.healthy == self.expected:
            self.all_healthy.set()
        return b""

    @route("demo.Mixed.Poison")
    async def poison(self, request: bytes, ctx: Context) -> bytes:
        self.poison_attempts += 1
        raise Retryable("always fails")


def healthy_throughput(poison_every: int | None) -> tuple[float, Mixed]:
    mixed = Mixed()
    mixed.expected = 400
    result: list[float] = []

    async def main() -> None:
        async with (
            LocalRealm(max_attempts=5) as realm,
            realm.start(mixed) as a,
            realm.start(Caller()) as b,
        ):
            start = trio.current_time()
            for i in range(mixed.expected):
                await b.tell(a.actr_id, "demo.Mixed.Ok", b"")
                if poison_every and i % poison_every == 0:
                    await b.tell(a.actr_id, "demo.Mixed.Poison", b"")
            await mixed.all_healthy.wait()
            result.append(mixed.expected / (trio.current_time() - start))

    # In-memory mailbox and loopback: virtual time makes the throughput exact, not noisy.
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0], mixed


def test_poison_messages_do_not_slow_healthy_traffic() -> None:
    clean, _ = healthy_throughput(None)
    poisoned, mixed = healthy_throughput(poison_every=10)
    assert mixed.poison_attempts == 40 * 5  # every poison envelope ran exactly max_attempts
    assert poisoned >= 0.9 * clean, (poisoned, clean)
