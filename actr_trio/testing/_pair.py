"""``run_pair``: a worker node and a client node, over the network or in-process.

Networked (the default): start a signaling server on 127.0.0.1, run the worker in a separate
process (``worker_command``, which calls :func:`serve_worker`), start the client here, find the
worker by discovery and run the scenario over WebRTC. Local: both nodes on a ``LocalRealm``.
The demo and the examples are built on it.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from .._config import Config
from .._ids import ActrId, ActrType
from .._logging import NODE
from .._node import ActrRef, ActrSystem
from .._router import Workload
from ..errors import ConfigError
from ._realm import LocalRealm

log = logging.getLogger(NODE)

LOOPBACK: Final = ("127.0.0.1",)
# Bound on a worker process's graceful exit after SIGTERM before it is killed.
STOP_BOUND: Final = 15.0
# Bound on finding the worker after its process starts (imports, registration).
DISCOVERY_BOUND: Final = 30.0
# How often discovery asks while the worker process is still starting.
DISCOVERY_POLL: Final = 0.05

Scenario = Callable[[ActrRef, ActrId], Awaitable[None]]


def network_config(url: str, *, realm: str = "demo", **options: Any) -> Config:
    """A ``Config`` for a node on this host: loopback ICE only, no STUN."""
    return Config.from_mapping(
        {"realm": realm, "signaling_url": url, "ice_addresses": LOOPBACK, **options}
    )


async def find(ref: ActrRef, actr_type: ActrType, *, bound: float = DISCOVERY_BOUND) -> ActrId:
    """The first node of ``actr_type`` discovery reports, waiting for it to register.

    Raises:
        trio.TooSlowError: none registered within ``bound`` seconds.
    """
    with trio.fail_after(bound):
        while True:
            found = await ref.discover(actr_type)
            if found:
                return found[0]
            await trio.sleep(DISCOVERY_POLL)  # another process is still starting


async def serve_worker(
    workload: Workload, url: str, *, realm: str = "demo", **options: Any
) -> None:
    """Run ``workload`` on a networked node until SIGINT/SIGTERM (the worker process's main)."""
    async with (
        ActrSystem(network_config(url, realm=realm, **options)).attach(workload).start() as ref
    ):
        log.debug("worker %s registered", ref.actr_id)
        await ref.wait_for_shutdown()


async def run_pair(
    *,
    worker: type[Workload],
    client: type[Workload],
    scenario: Scenario,
    worker_command: Sequence[str],
    local: bool = False,
    realm: str = "demo",
) -> None:
    """Run ``scenario(client_ref, worker_id)`` with a worker and a client node.

    Args:
        worker: the worker's workload class (instantiated with no arguments).
        client: the client's workload class.
        scenario: what the client does.
        worker_command: argv of the worker process; ``--signaling URL`` is appended.
        local: run both nodes on a LocalRealm instead (no network, no process).
        realm: the realm both nodes register in.
    """
    if local:
        async with (
            LocalRealm(realm) as local_realm,
            local_realm.start(worker()) as w,
            local_realm.start(client()) as c,
        ):
            await scenario(c, w.actr_id)
        return
    from ..signaling import serve

    async with serve(host="127.0.0.1", port=0) as server:
        proc = await trio.lowlevel.open_process(
            [*worker_command, "--signaling", server.url],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            async with (
                ActrSystem(network_config(server.url, realm=realm)).attach(client()).start() as ref
            ):
                target = await find(ref, worker.actr_type)
                await scenario(ref, target)
        finally:
            with trio.move_on_after(2 * STOP_BOUND, shield=True):
                await _stop(proc)


async def _stop(proc: trio.Process) -> None:
    proc.terminate()
    with trio.move_on_after(STOP_BOUND):
        await proc.wait()
        return
    proc.kill()
    await proc.wait()


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line of a pair program: ``--local``, plus the hidden ``--role worker
    --signaling URL`` that :func:`run_pair` gives the worker process it starts."""
    parser.add_argument(
        "--local", action="store_true", help="run both nodes in this process on a LocalRealm"
    )
    parser.add_argument(
        "--role", choices=("main", "worker"), default="main", help=argparse.SUPPRESS
    )
    parser.add_argument("--signaling", help=argparse.SUPPRESS)


async def pair_main(
    args: argparse.Namespace,
    *,
    worker: type[Workload],
    client: type[Workload],
    scenario: Scenario,
    worker_command: Sequence[str],
    realm: str = "demo",
) -> None:
    """Run a pair program parsed by :func:`add_pair_arguments`: the worker process's side
    (:func:`serve_worker`) with ``--role worker``, else the whole pair (:func:`run_pair`).

    Raises:
        ConfigError: ``--role worker`` without ``--signaling URL``.
    """
    if args.role == "worker":
        if not args.signaling:
            raise ConfigError("--role worker needs --signaling URL")
        await serve_worker(worker(), args.signaling, realm=realm)
        return
    await run_pair(
        worker=worker,
        client=client,
        scenario=scenario,
        worker_command=worker_command,
        local=args.local,
        realm=realm,
    )
