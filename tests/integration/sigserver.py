"""A signaling server process whose statistics and memory the test can read.

``python sigserver.py [actr-trio signaling options]`` serves on 127.0.0.1 (``--port 0`` picks
one), realms from ``ACTR_SIGNALING_REALMS``, prints ``listening on URL`` and then, for every
line read on stdin, one line of JSON: ``SignalingServer.statistics()`` plus ``rss_kb`` (its
VmRSS now). It stops when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import attrs
import trio

from actr_trio.signaling import SignalingServer
from actr_trio.signaling._cli import add_arguments, limits_from_args, realms_from_env


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(args: argparse.Namespace) -> None:
    server = SignalingServer(
        host=args.host,
        port=args.port,
        realms=realms_from_env(os.environ) or None,
        presence_timeout=args.presence_timeout,
        limits=limits_from_args(args),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        print(f"listening on {server.url}", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        while chunk := await stdin.receive_some():
            buffer += chunk
            while b"\n" in buffer:
                _, buffer = buffer.split(b"\n", 1)
                figures = {**attrs.asdict(server.statistics()), "rss_kb": rss_kb()}
                print(json.dumps(figures), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, parser.parse_args())
