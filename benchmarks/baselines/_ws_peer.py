"""Child process for the raw trio-websocket baselines: a WebSocket server on 127.0.0.1.

Prints its port on stdout and serves until stdin closes. Text messages are commands, as for
the aiortc peer: ``"echo"`` echoes every binary message back; ``"sink:N"`` counts the next N
binary messages and answers ``"done:N:BYTES"``; ``"tally"`` counts every binary message from
then on and ``"report"`` answers ``"tally:COUNT:BYTES:LAST"`` (LAST: ``time.monotonic()`` at the
last counted message).
"""

from __future__ import annotations

import sys
import time

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


class _Peer:
    def __init__(self) -> None:
        self.expected = 0
        self.tally = False
        self.count = 0
        self.bytes = 0
        self.last = 0.0

    def command(self, text: str) -> str | None:
        if text == "echo":
            self.expected, self.tally = 0, False
        elif text.startswith("sink:"):
            self.expected, self.count, self.bytes = int(text[5:]), 0, 0
        elif text == "tally":
            self.tally, self.count, self.bytes, self.last = True, 0, 0, 0.0
        elif text == "report":
            return f"tally:{self.count}:{self.bytes}:{self.last!r}"
        return None

    def data(self, message: bytes) -> bytes | str | None:
        if not (self.expected or self.tally):
            return message
        self.count += 1
        self.bytes += len(message)
        self.last = time.monotonic()
        if self.expected and self.count == self.expected:
            self.expected = 0
            return f"done:{self.count}:{self.bytes}"
        return None


async def _serve(request: WebSocketRequest) -> None:
    ws = await request.accept()
    peer = _Peer()
    try:
        while True:
            message = await ws.get_message()
            answer = peer.command(message) if isinstance(message, str) else peer.data(message)
            if answer is not None:
                await ws.send_message(answer)
    except ConnectionClosed:
        pass


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                _serve, "127.0.0.1", 0, ssl_context=None, task_status=task_status
            )
        )
        print(server.port, flush=True)
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
