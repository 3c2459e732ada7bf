"""Getting started, process 2: find the echo service and call it.

Run it while ``server.py`` is running::

    python caller.py [SIGNALING_URL]

It registers as ``acme:caller``, discovers the ``acme:echo`` node in realm ``demo``, makes three
calls over WebRTC, prints the answers and shuts down.
"""

import sys

import trio

from actr_trio import ActrId, ActrRef, ActrSystem, ActrType, Config, Workload

ECHO = ActrType("acme", "echo")


class Caller(Workload):
    """A node that only makes calls: it needs an ``actr_type``, no routes."""

    actr_type = ActrType("acme", "caller")


async def find_echo(ref: ActrRef) -> ActrId:
    """The first ``acme:echo`` node of the realm, waiting up to 30 s for one to register."""
    with trio.fail_after(30):
        while True:
            found = await ref.discover(ECHO)
            if found:
                return found[0]
            await trio.sleep(0.2)  # the server is still starting: ask again


async def main(signaling_url: str) -> None:
    config = Config(
        realm="demo",
        signaling_url=signaling_url,
        ice_addresses=("127.0.0.1",),
    )
    async with ActrSystem(config).attach(Caller()).start() as ref:
        server = await find_echo(ref)
        print(f"found the echo server: {server}", flush=True)
        for text in ("hello", "actr", "trio"):
            reply = await ref.call(server, "demo.Echo.Echo", text.encode(), timeout=10)
            print(f"{text!r} -> {reply.decode()!r}", flush=True)
    print("caller done", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765")
