"""Supervisor strategies and the restart intensity limit."""

from __future__ import annotations

import pytest
import trio

from actr_trio import (
    ActrType,
    Context,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    Workload,
    route,
)
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import Transport

# Every test here runs on both envelope paths (in process, and over the loopback wire).
pytestmark = pytest.mark.usefixtures("envelope_path")


class Crashable(TransportWrapper):
    """A transport whose run() raises when ``crash`` is set: a node component dying."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.crash = trio.Event()

    async def run(self, session, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.inner.run, session)
            task_status.started()
            await self.crash.wait()
            raise OSError("component died")


class Counter(Workload):
    actr_type = ActrType("acme", "counter")

    def __init__(self, name: str, starts: dict[str, int]) -> None:
        self.name = name
        self.starts = starts

    async def on_start(self, ctx: Context) -> None:
        self.starts[self.name] = self.starts.get(self.name, 0) + 1

    @route("demo.Counter.Get")
    async def get(self, request: bytes, ctx: Context) -> bytes:
        return self.name.encode()


async def run_scenario(strategy: Strategy, crash: str) -> dict[str, int]:
    starts: dict[str, int] = {}
    transports: dict[str, list[Crashable]] = {}
    async with LocalRealm() as realm:
        supervisor = Supervisor(strategy, max_restarts=5, within=10)

        def factory(name: str):  # type: ignore[no-untyped-def]
            def build():  # type: ignore[no-untyped-def]
                def wrap(inner: Transport) -> Transport:
                    transports.setdefault(name, []).append(Crashable(inner))
                    return transports[name][-1]  # type: ignore[return-value]

                return realm.node(Counter(name, starts), wrap_transport=wrap)

            return build

        for name in ("a", "b", "c"):
            supervisor.add(name, factory(name))
        async with supervisor.start():
            assert starts == {"a": 1, "b": 1, "c": 1}
            generation = len(transports[crash])
            transports[crash][-1].crash.set()
            with trio.fail_after(10):
                while (
                    len(transports[crash]) == generation or supervisor.statistics().restarts == ()
                ):
                    await trio.testing.wait_all_tasks_blocked()
                    if len(transports[crash]) > generation:
                        break
                # The restarted node serves again.
                await trio.testing.wait_all_tasks_blocked()
                ref = supervisor.ref(crash)
                other = supervisor.ref("a" if crash != "a" else "b")
                assert await other.call(ref.actr_id, "demo.Counter.Get", b"") == crash.encode()
    return starts


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, {"a": 1, "b": 2, "c": 1}),
        (Strategy.ONE_FOR_ALL, {"a": 2, "b": 2, "c": 2}),
        (Strategy.REST_FOR_ONE, {"a": 1, "b": 2, "c": 2}),
    ],
)
async def test_strategies(strategy: Strategy, expected: dict[str, int]) -> None:
    assert await run_scenario(strategy, "b") == expected


async def test_intensity_limit_gives_up() -> None:
    async with LocalRealm() as realm:
        crashers: list[Crashable] = []

        def build():  # type: ignore[no-untyped-def]
            def wrap(inner: Transport) -> Transport:
                crashers.append(Crashable(inner))
                crashers[-1].crash.set()  # dies right after starting, every time
                return crashers[-1]  # type: ignore[return-value]

            return realm.node(Counter("x", {}), wrap_transport=wrap)

        supervisor = Supervisor(Strategy.ONE_FOR_ONE, max_restarts=2, within=60)
        supervisor.add("x", build)
        with trio.fail_after(10), pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True):
            async with supervisor.start():
                await trio.sleep_forever()
        assert len(crashers) == 3  # the first start and two restarts


def test_arguments_are_checked() -> None:
    from actr_trio.errors import ConfigError

    with pytest.raises(ConfigError, match="max_restarts"):
        Supervisor(max_restarts=-1)
    supervisor = Supervisor()
    supervisor.add("a", lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="exists already"):
        supervisor.add("a", lambda: None)  # type: ignore[arg-type,return-value]
