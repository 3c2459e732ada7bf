"""A victim node for the link-admission tests: ``python linknode.py --signaling URL [limits]``.

Prints ``ready ACTR_ID`` once registered, then serves ``flood.Victim.Echo`` (answers the
request) and ``flood.Victim.Stats``: one JSON object with its WebRTC transport's statistics
(admission counters included), ``rss_kb`` (VmRSS now) and ``peak_kb`` (VmHWM). The limits are
``Config`` fields given as options (``--max-links 16``). WARNING lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging

import attrs
import trio

from actr_trio import ActrSystem, ActrType, Context, Workload, route
from actr_trio.testing import network_config
from actr_trio.transport._webrtc import WebRTCTransport

REALM = "flood"
LIMITS = (
    ("max_links", int),
    ("max_negotiating_links", int),
    ("offers_per_peer_rate", float),
    ("offers_per_peer_burst", int),
    ("offers_total_rate", float),
    ("max_relay_payload", int),
)


def memory_kb() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss_kb" if name == "VmRSS" else "peak_kb"] = int(value.split()[0])
    return found


class Victim(Workload):
    actr_type = ActrType("flood", "victim")

    def __init__(self, transport: WebRTCTransport) -> None:
        self.transport = transport

    @route("flood.Victim.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("flood.Victim.Stats")
    async def stats(self, request: bytes, ctx: Context) -> bytes:
        figures = attrs.asdict(self.transport.statistics())
        return json.dumps({**figures, **memory_kb()}).encode()


async def serve(args: argparse.Namespace) -> None:
    limits = {name: getattr(args, name) for name, _ in LIMITS if getattr(args, name) is not None}
    config = network_config(args.signaling, realm=REALM, **limits)
    transport = WebRTCTransport(config)
    async with ActrSystem(config, transport=transport).attach(Victim(transport)).start() as ref:
        print(f"ready {ref.actr_id}", flush=True)
        await ref.wait_for_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling", required=True)
    for name, kind in LIMITS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    trio.run(serve, args)


if __name__ == "__main__":
    main()
