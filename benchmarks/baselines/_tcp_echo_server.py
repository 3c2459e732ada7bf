"""Child process for W5 raw-trio-tcp: a Trio echo server on 127.0.0.1.

Prints its port on stdout, echoes every byte it receives, exits when stdin closes.
"""

from __future__ import annotations

import sys

import trio


async def main() -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send_all(data)

    async def exit_on_stdin_eof(cancel: trio.CancelScope) -> None:
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        cancel.cancel()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exit_on_stdin_eof, nursery.cancel_scope)
        nursery.start_soon(trio.serve_listeners, echo, listeners)
        print(port, flush=True)


if __name__ == "__main__":
    trio.run(main)
