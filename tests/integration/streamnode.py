"""A victim node for the stream and track abuse tests: ``python streamnode.py --signaling URL``.

Prints ``ready ACTR_ID`` once registered, then serves:

* the stream ``legit`` (records, per sending peer, the sequence numbers delivered) and the
  track ``legit-video``;
* ``abuse.Victim.Echo``, and ``abuse.Victim.Slow`` (``--slow`` seconds per envelope);
* ``abuse.Victim.Stats``: one JSON object with the streams', tracks', inbound gate's and
  mailbox's statistics, the transport's ``malformed`` count and its offer ``admission``
  figures, the sequences each peer's ``legit`` stream delivered, ``rss_kb`` (VmRSS now) and
  ``peak_kb`` (VmHWM).

``--max-streams``, ``--max-tracks``, ``--idle``, ``--capacity`` and ``--aging`` are the
``Config`` fields ``max_streams_per_peer``, ``max_tracks_per_peer``, ``stream_idle_timeout``,
``mailbox_capacity`` and ``aging``. WARNING lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging

import attrs
import trio

from actr_trio import ActrRef, ActrSystem, ActrType, Context, StreamChunk, Workload, route
from actr_trio.testing import network_config

REALM = "abuse"


def memory_kb() -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss_kb" if name == "VmRSS" else "peak_kb"] = int(value.split()[0])
    return found


class Victim(Workload):
    actr_type = ActrType("abuse", "victim")

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.slow_handled = 0
        self.ref: ActrRef | None = None
        self.legit: dict[str, list[int]] = {}
        self.frames = 0

    async def on_start(self, ctx: Context) -> None:
        ctx.streams.register("legit", self.on_chunk)
        ctx.tracks.register("legit-video", self.on_frame)

    async def on_chunk(self, chunk: StreamChunk, ctx: Context) -> None:
        if not chunk.end:
            self.legit.setdefault(str(ctx.caller_id), []).append(chunk.sequence)

    async def on_frame(self, frame: object, ctx: Context) -> None:
        self.frames += 1

    @route("abuse.Victim.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request

    @route("abuse.Victim.Slow")
    async def slow_route(self, request: bytes, ctx: Context) -> bytes:
        await trio.sleep(self.slow)
        self.slow_handled += 1
        return b""

    @route("abuse.Victim.Stats")
    async def stats(self, request: bytes, ctx: Context) -> bytes:
        assert self.ref is not None
        node = self.ref.statistics()
        transport = self.ref._core.transport
        transport = getattr(transport, "_webrtc", transport)  # the WebRTC one, if wrapped
        link_stats = transport.statistics()  # type: ignore[attr-defined]
        admission = getattr(link_stats, "admission", None)
        figures = {
            "streams": attrs.asdict(node.streams),
            "tracks": attrs.asdict(node.tracks),
            "inbound": attrs.asdict(node.inbound),
            "mailbox": attrs.asdict(node.mailbox),
            "slow_handled": self.slow_handled,
            "malformed": getattr(link_stats, "malformed", 0),
            "admission": attrs.asdict(admission) if attrs.has(type(admission)) else admission,
            "legit": self.legit,
            "frames": self.frames,
            **memory_kb(),
        }
        return json.dumps(figures, default=str).encode()


async def serve(args: argparse.Namespace) -> None:
    options: dict[str, object] = {
        "max_streams_per_peer": args.max_streams,
        "max_tracks_per_peer": args.max_tracks,
        "stream_idle_timeout": args.idle,
        "mailbox_capacity": args.capacity,
    }
    if args.aging is not None:
        options["aging"] = args.aging
    config = network_config(args.signaling, realm=args.realm, **options)
    victim = Victim(args.slow)
    async with ActrSystem(config).attach(victim).start() as ref:
        victim.ref = ref
        print(f"ready {ref.actr_id}", flush=True)
        await ref.wait_for_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signaling", required=True)
    parser.add_argument("--realm", default=REALM)
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--max-tracks", type=int, default=16)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--aging", type=int)
    parser.add_argument("--slow", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    trio.run(serve, args)


if __name__ == "__main__":
    main()
