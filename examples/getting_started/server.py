"""Getting started, process 1: an echo service.

Run it beside a signaling server (``actr-trio signaling --host 127.0.0.1 --port 8765``)::

    python server.py [SIGNALING_URL]

It registers as ``acme:echo`` in realm ``demo`` and answers ``demo.Echo.Echo`` with the bytes it
was sent, until Ctrl-C or SIGTERM shuts it down gracefully.
"""

import sys

import trio

from actr_trio import ActrSystem, ActrType, Config, Context, Workload, route


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        print(f"echoing {request!r} for {ctx.caller_id}", flush=True)
        return request


async def main(signaling_url: str) -> None:
    config = Config(
        realm="demo",
        signaling_url=signaling_url,
        data_dir="./echo-data",  # mailbox and identity: the same ActrId after a restart
        ice_addresses=("127.0.0.1",),  # keep WebRTC on this machine
    )
    async with ActrSystem(config).attach(Echo()).start() as ref:
        print(f"echo server ready as {ref.actr_id}", flush=True)
        await ref.wait_for_shutdown()  # Ctrl-C / SIGTERM -> graceful shutdown
    print("echo server stopped", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765")
