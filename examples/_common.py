"""What every two-node example shares: its command line and how it starts its nodes.

``python -m examples.<name>`` starts a signaling server on 127.0.0.1, the example's worker in a
second process (``--role worker --signaling URL``, through :func:`actr_trio.testing.serve_worker`)
and the client node here, and runs the scenario over WebRTC (:func:`actr_trio.testing.run_pair`).
``--local`` runs both nodes in this process on a ``LocalRealm`` instead.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Awaitable, Callable

import trio

from actr_trio import ActrId, ActrRef, Workload
from actr_trio.testing import add_pair_arguments, pair_main

#: What an example does with its client node and the worker's id; ``local`` says which mode.
Scenario = Callable[[ActrRef, ActrId, bool], Awaitable[None]]


def parser(name: str, description: str | None) -> argparse.ArgumentParser:
    """The example's argument parser: ``--local``, plus the hidden worker-process options."""
    parser = argparse.ArgumentParser(
        prog=f"python -m examples.{name}",
        description=(description or "").split("\n\n")[0],
    )
    add_pair_arguments(parser)
    return parser


def mode(local: bool) -> str:
    """How the nodes talk, for the printed result."""
    return "LocalRealm (one process)" if local else "WebRTC (two processes)"


def main(
    name: str,
    description: str | None,
    *,
    worker: type[Workload],
    client: type[Workload],
    scenario: Scenario,
) -> None:
    """Run example ``name``: the worker's process if ``--role worker``, else the whole pair."""
    args = parser(name, description).parse_args()
    if args.role != "worker":
        print(f"{name}: over {mode(args.local)}")
    trio.run(
        functools.partial(
            pair_main,
            args,
            worker=worker,
            client=client,
            scenario=functools.partial(_with_mode, scenario, args.local),
            worker_command=[sys.executable, "-m", f"examples.{name}", "--role", "worker"],
            realm=_realm(name),
        )
    )


def _realm(name: str) -> str:
    return f"examples-{name}"


async def _with_mode(scenario: Scenario, local: bool, ref: ActrRef, worker: ActrId) -> None:
    await scenario(ref, worker, local)
