"""A poison envelope whose handler kills the process (os._exit) is dead-lettered after exactly
``max_attempts`` restarts, because each attempt is committed before the handler runs; the
healthy envelopes queued with it are all handled (issue 6)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import trio

from actr_trio import ActrType, Context, Workload, route
from actr_trio.testing import LocalRealm

MAX_ATTEMPTS = 3

RESTART = textwrap.dedent(
    """
    import os, sys, trio
    from actr_trio import ActrType, Context, Workload, route
    from actr_trio.testing import LocalRealm

    class Node(Workload):
        actr_type = ActrType("acme", "poisoned")
        @route("demo.Poison.Put")
        async def put(self, request: bytes, ctx: Context) -> bytes:
            with open(sys.argv[2], "a") as log:
                log.write(request.decode() + "\\n")
            if request == b"poison":
                os._exit(17)
            return b""

    async def main() -> None:
        async with LocalRealm(max_attempts=int(sys.argv[3])) as realm:
            async with realm.start(Node(), data_dir=sys.argv[1]) as ref:
                with trio.fail_after(20):
                    while (await ref.mailbox.pending()):
                        await trio.sleep(0.01)
                print("DRAINED", len(await ref.dead_letters()), flush=True)

    trio.run(main)
    """
)


class Filler(Workload):
    """Accepts envelopes but never handles them (the first process only queues work)."""

    actr_type = ActrType("acme", "poisoned")

    @route("demo.Poison.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep_forever()
        return b""


class Sender(Workload):
    actr_type = ActrType("acme", "sender")


async def test_process_killing_poison_is_dead_lettered(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    log = tmp_path / "handled.log"
    async with (
        LocalRealm(shutdown_grace=0.2) as realm,
        realm.start(Filler(), data_dir=data_dir) as a,
        realm.start(Sender()) as b,
    ):
        await b.tell(a.actr_id, "demo.Poison.Put", b"blocker")
        for name in ("h1", "poison", "h2", "h3"):
            await b.tell(a.actr_id, "demo.Poison.Put", name.encode())
    # "blocker" was being handled when the node stopped; everything stays queued for replay.
    codes = []
    outputs = []
    for _ in range(MAX_ATTEMPTS + 2):
        proc = await trio.run_process(
            [sys.executable, "-c", RESTART, str(data_dir), str(log), str(MAX_ATTEMPTS)],
            capture_stdout=True,
            check=False,
        )
        codes.append(proc.returncode)
        outputs.append(proc.stdout.decode())
        if proc.returncode == 0:
            break
    assert codes == [17] * MAX_ATTEMPTS + [0]
    assert outputs[-1].strip() == "DRAINED 1"
    handled = log.read_text().split()
    assert handled.count("poison") == MAX_ATTEMPTS
    for name in ("blocker", "h1", "h2", "h3"):
        assert handled.count(name) == 1, handled
