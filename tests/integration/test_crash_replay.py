"""No loss: a node SIGKILLed with accepted-but-unhandled envelopes handles every one
of them, exactly once, when a new node starts on the same data dir."""

# Not run per network lane: its nodes are in-process (LocalRealm); the crash is the mailbox's.

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from actr_trio import ActrType, Context, Workload, route
from actr_trio.testing import LocalRealm

# The first process: a receiver whose handler never finishes (so everything it accepts stays
# unhandled) and a sender that prints each tell once it returned, i.e. once it was committed.
FIRST = textwrap.dedent(
    """
    import sys, trio
    from actr_trio import ActrType, Context, Priority, Workload, route
    from actr_trio.testing import LocalRealm

    class Stuck(Workload):
        actr_type = ActrType("acme", "durable")
        @route("demo.Durable.Put")
        async def put(self, request: bytes, ctx: Context) -> bytes:
            await trio.sleep_forever()
            return b""

    class Sender(Workload):
        actr_type = ActrType("acme", "sender")

    async def main() -> None:
        async with LocalRealm() as realm, realm.start(Stuck(), data_dir=sys.argv[1]) as a:
            async with realm.start(Sender()) as b:
                for i in range(int(sys.argv[2])):
                    priority = Priority.HIGH if i % 3 == 0 else Priority.NORMAL
                    await b.tell(a.actr_id, "demo.Durable.Put", b"%d" % i, priority=priority)
                    print("acked", i, flush=True)
                await trio.sleep_forever()

    trio.run(main)
    """
)


class Recorder(Workload):
    actr_type = ActrType("acme", "durable")

    def __init__(self, expected: int) -> None:
        self.handled: list[int] = []
        self.expected = expected
        self.all_done = trio.Event()

    @route("demo.Durable.Put")
    async def put(self, request: bytes, ctx: Context) -> bytes:
        self.handled.append(int(request))
        if len(self.handled) >= self.expected:
            self.all_done.set()
        return b""


async def test_sigkill_then_replay_handles_every_acked_envelope_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    total = 60
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", FIRST, str(data_dir), str(total)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while len(acked) < total:
                data = await proc.stdout.receive_some()
                assert data, "the first process exited early"
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                acked += [int(line.split()[1]) for line in lines if line.startswith(b"acked")]
    finally:
        proc.send_signal(signal.SIGKILL)
        with trio.move_on_after(10):
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert acked == list(range(total))

    recorder = Recorder(total)
    with trio.fail_after(60):
        async with LocalRealm() as realm, realm.start(recorder, data_dir=data_dir) as ref:
            await recorder.all_done.wait()
            # Every acked envelope handled exactly once, high priority first, FIFO within each.
            assert sorted(recorder.handled) == acked
            high = [i for i in acked if i % 3 == 0]
            normal = [i for i in acked if i % 3 != 0]
            assert recorder.handled == high + normal
            assert ref.statistics().mailbox.replayed == total
    # A third start finds nothing left to replay.
    async with LocalRealm() as realm, realm.start(Recorder(0), data_dir=data_dir) as ref:
        assert await ref.mailbox.pending() == []
