"""durable: a sender, a receiver killed and restarted mid-stream, nothing lost.

The receiver has a ``data_dir``: its mailbox is a SQLite file there, and so is its ``ActrId``.
It handles messages slowly, so the sender's tells (each returns once the receiver's mailbox
*committed* it) run ahead and a backlog of accepted-but-unhandled messages builds up. Then the
receiver dies mid-stream:

* default (WebRTC): the receiver runs in its own process, and the example SIGKILLs it, then
  starts a new process on the same ``data_dir``. It registers with the same ``ActrId`` (the
  signaling server hands the stale session over), replays its mailbox, and the sender's
  unacknowledged tells, resent until acked within their deadline, reach it;
* ``--local``: the receiver node is stopped (with almost no shutdown grace, so most of the
  backlog stays in the mailbox) and started again on the same ``data_dir`` on a LocalRealm.

The sender keeps sending throughout. Each handled message is appended to ``handled.log`` in the
data dir. No loss means *at least once* (a handler cut off by the kill runs again after
the restart), so the handler makes its side effect idempotent with ``ctx.request_id``, which a
resend and a replay keep. At the end the example reads the log: every acked message exactly once.

Run: ``python -m examples.durable`` (WebRTC, receiver in a subprocess) or
``python -m examples.durable --local``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Final, Protocol

import trio

from actr_trio import ActrRef, ActrSystem, ActrType, Context, Workload, route
from actr_trio.errors import RemoteShuttingDown
from actr_trio.testing import LocalRealm, find, network_config, serve_worker

from .. import _common

REALM: Final = "examples-durable"
MESSAGES: Final = 200
KILL_AFTER: Final = 60  # acked messages
HANDLE_SECONDS: Final = 0.01  # slower than a tell, so a backlog builds up
# Tells are resent until acked within this deadline, so be generous: over WebRTC the sender
# only notices that the killed receiver's end of the link is gone when ICE consent checks fail
# (about 30 s with aioice), then it reconnects to the restarted receiver.
SEND_TIMEOUT: Final = 50.0
# Pause before sending again a tell the receiver refused while it was shutting down.
REFUSED_PAUSE: Final = 0.05
# Bound on the receiver process exiting after SIGTERM at the end.
STOP_BOUND: Final = 15.0
LOG_NAME: Final = "handled.log"


def _append(path: Path, line: str) -> None:
    # One write() on an O_APPEND file: a SIGKILL leaves the line whole or absent.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _read_log(data_dir: Path) -> list[tuple[str, str]]:
    """``(request_id, payload)`` per handled message, in handling order."""
    try:
        text = (data_dir / LOG_NAME).read_text()
    except FileNotFoundError:
        return []
    return [(rid, payload) for rid, payload in (line.split() for line in text.splitlines())]


class Receiver(Workload):
    """Appends every message to ``handled.log``, once per ``request_id``."""

    actr_type = ActrType("examples", "durable-receiver")

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.done: set[str] = set()
        self.skipped = 0

    async def on_start(self, ctx: Context) -> None:
        log = await trio.to_thread.run_sync(_read_log, self.data_dir)
        self.done = {request_id for request_id, _ in log}

    @route("examples.Durable.Store")
    async def store(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(HANDLE_SECONDS)
        if ctx.request_id in self.done:
            # A replay of a message whose effect happened just before a crash.
            self.skipped += 1
            return b""
        line = f"{ctx.request_id} {request.decode()}\n"
        await trio.to_thread.run_sync(_append, self.data_dir / LOG_NAME, line)
        self.done.add(ctx.request_id)
        return b""

    @route("examples.Durable.Report")
    async def report(self, request: bytes, ctx: Context) -> bytes:
        """Queued behind every tell of the caller (FIFO), so it answers once they are handled."""
        return json.dumps({"actr_id": str(ctx.self_id), "skipped": self.skipped}).encode()


class Sender(Workload):
    """The sending node (it has no routes)."""

    actr_type = ActrType("examples", "durable-sender")


class ReceiverHost(Protocol):
    """Where the receiver node runs: ``start`` it, ``kill`` it, ``start`` it again."""

    async def start(self) -> None: ...

    async def kill(self) -> None: ...

    async def stop(self) -> None: ...


class ProcessHost:
    """The receiver in a subprocess on ``data_dir``, registered at signaling ``url``."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.command = [
            *(sys.executable, "-m", "examples.durable", "--role", "worker"),
            *("--signaling", url, "--data-dir", str(data_dir)),
        ]
        self.proc: trio.Process | None = None

    async def start(self) -> None:
        self.proc = await trio.lowlevel.open_process(
            self.command, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no shutdown, no drain, nothing flushed
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL if it takes longer than ``STOP_BOUND``."""
        if self.proc is None:
            await trio.lowlevel.checkpoint()
            return
        self.proc.terminate()
        with trio.move_on_after(STOP_BOUND):
            await self.proc.wait()
            return
        self.proc.kill()
        await self.proc.wait()


class LocalHost:
    """The receiver as a node of ``realm`` in this process.

    Args:
        nursery: where the receiver node runs (it outlives each ``start`` call).
    """

    def __init__(self, realm: LocalRealm, data_dir: Path, nursery: trio.Nursery) -> None:
        self.realm = realm
        self.data_dir = data_dir
        self.nursery = nursery
        self.scope: trio.CancelScope | None = None
        self.stopped = trio.Event()

    async def start(self) -> None:
        self.scope = await self.nursery.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        self.stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                # A tiny shutdown grace: stopping it leaves most of the backlog in the mailbox.
                async with self.realm.start(
                    Receiver(self.data_dir), data_dir=self.data_dir, shutdown_grace=0.001
                ):
                    task_status.started(scope)
                    await trio.sleep_forever()
        finally:
            self.stopped.set()

    async def kill(self) -> None:
        assert self.scope is not None
        self.scope.cancel(reason="the example stops the receiver")
        await self.stopped.wait()

    async def stop(self) -> None:
        await self.kill()


async def scenario(ref: ActrRef, host: ReceiverHost, data_dir: Path, local: bool) -> None:
    """Send ``MESSAGES`` tells; kill and restart the receiver after ``KILL_AFTER`` were acked."""
    target = await find(ref, Receiver.actr_type)
    print(f"receiver {target}, data dir {data_dir}")
    acked: list[str] = []
    acked_at: list[float] = []
    refused = 0
    kill_now = trio.Event()
    killed_at = 0.0

    async def send(payload: str) -> None:
        nonlocal refused
        with trio.fail_after(SEND_TIMEOUT):
            while True:
                try:
                    await ref.tell(
                        target, "examples.Durable.Store", payload.encode(), timeout=SEND_TIMEOUT
                    )
                    return
                except RemoteShuttingDown:
                    # Refused, so never accepted: sending it again cannot duplicate it.
                    refused += 1
                    await trio.sleep(REFUSED_PAUSE)

    async def send_all() -> None:
        for i in range(MESSAGES):
            payload = f"m{i:03}"
            await send(payload)
            acked.append(payload)
            acked_at.append(trio.current_time())
            if len(acked) == KILL_AFTER:
                kill_now.set()

    async def kill_and_restart() -> None:
        nonlocal killed_at
        await kill_now.wait()
        killed_at = trio.current_time()
        at_kill = len(acked)
        await host.kill()
        print(
            f"{'stopped' if local else 'SIGKILLed'} the receiver after {at_kill} acked tells, "
            f"{len(_read_log(data_dir))} of them handled; restarting it on the same data dir"
        )
        await host.start()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all)
        nursery.start_soon(kill_and_restart)
    recovery = min(t for t in acked_at if t > killed_at) - killed_at
    print(f"the sender kept sending: the next tell was acked {recovery:.1f} s after the kill")
    report = json.loads(
        await ref.call(target, "examples.Durable.Report", b"", timeout=SEND_TIMEOUT)
    )
    print(
        f"restarted receiver: {report['actr_id']} (same ActrId: {report['actr_id'] == str(target)})"
    )
    await host.stop()

    handled = collections.Counter(payload for _, payload in _read_log(data_dir))
    lost = sum(1 for payload in acked if payload not in handled)
    duplicates = sum(count - 1 for count in handled.values())
    print(
        f"{len(acked)} acked, {sum(handled.values())} handled ({refused} refused during shutdown "
        f"and sent again, {report['skipped']} replays skipped by request_id)"
    )
    print(f"lost {lost}, duplicates {duplicates}")


async def main_networked() -> None:
    from actr_trio.signaling import serve

    with tempfile.TemporaryDirectory(prefix="actr-durable-") as tmp:
        data_dir = Path(tmp) / "receiver"
        async with serve(host="127.0.0.1", port=0) as server:
            host = ProcessHost(server.url, data_dir)
            await host.start()
            try:
                config = network_config(server.url, realm=REALM)
                async with ActrSystem(config).attach(Sender()).start() as ref:
                    await scenario(ref, host, data_dir, local=False)
            finally:
                # Never leave the receiver process behind, even when cancelled.
                with trio.move_on_after(2 * STOP_BOUND, shield=True):
                    await host.stop()


async def main_local() -> None:
    with tempfile.TemporaryDirectory(prefix="actr-durable-") as tmp:
        data_dir = Path(tmp) / "receiver"
        async with LocalRealm(REALM) as realm, trio.open_nursery() as nursery:
            host = LocalHost(realm, data_dir, nursery)
            await host.start()
            async with realm.start(Sender()) as ref:
                await scenario(ref, host, data_dir, local=True)


def main() -> None:
    parser = _common.parser("durable", __doc__)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        if not args.signaling or not args.data_dir:
            sys.exit("--role worker needs --signaling URL and --data-dir DIR")
        receiver = Receiver(args.data_dir)
        trio.run(
            functools.partial(
                serve_worker, receiver, args.signaling, realm=REALM, data_dir=args.data_dir
            )
        )
        return
    how = "LocalRealm (one process)" if args.local else "WebRTC (receiver in a subprocess)"
    print(f"durable: over {how}")
    trio.run(main_local if args.local else main_networked)


if __name__ == "__main__":
    main()
