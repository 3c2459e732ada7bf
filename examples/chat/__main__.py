"""chat: rooms over the fast path (streams), history over the state path.

``ChatServer`` keeps each room's members and history as workload state, changed only by its
routes (the state path: durable mailbox, handled one at a time, in order). ``Join`` opens a
stream ``room:<name>`` to the new member and returns the history so far; ``Post`` appends to the
history, then sends the message to every member over its stream (the fast path: no mailbox, the
member's ``ctx.streams`` callback gets it). Each member keeps one stream for as long as it is
in the room, so its messages arrive in order (chunks of one stream reach the callback in
sequence order); the stream uses the Reliable lane because chat must not drop
messages (the default LatencyFirst lane may).

The client joins, registers its stream callback, posts a few messages, receives them back in
order over the stream, then fetches the history.

Run: ``python -m examples.chat`` (WebRTC, two processes) or ``python -m examples.chat --local``.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, suppress
from typing import Final

import trio

from actr_trio import (
    ActrId,
    ActrRef,
    ActrType,
    Context,
    Lane,
    StreamChunk,
    StreamSender,
    Workload,
    route,
)
from actr_trio.errors import PeerUnavailable, StreamIncomplete

from .. import _common

ROOM: Final = "lobby"
MESSAGES: Final = ("hi all", "anyone here?", "trio + actr", "streams keep order", "bye")
# Bound on the posted messages coming back over the stream.
RECEIVE_BOUND: Final = 10.0


def _encode(value: object) -> bytes:
    return json.dumps(value).encode()


class ChatServer(Workload):
    """Rooms: members (each with an open stream) and history."""

    actr_type = ActrType("examples", "chat-server")

    def __init__(self) -> None:
        self.history: dict[str, list[dict[str, str]]] = {}
        self.members: dict[str, dict[ActrId, StreamSender]] = {}
        # Owns every member stream; closed (end-of-stream sent) when the node stops.
        self.streams = AsyncExitStack()

    async def on_stop(self, ctx: Context) -> None:
        # A member that already left cannot acknowledge the end of its stream: expected here.
        with suppress(StreamIncomplete, PeerUnavailable):
            await self.streams.aclose()

    @route("examples.Chat.Join")
    async def join(self, request: bytes, ctx: Context) -> bytes:
        """Request: the room name. Response: its history, a JSON list of messages."""
        room = request.decode()
        member = ctx.caller_id
        assert member is not None  # a route is always called by some node
        members = self.members.setdefault(room, {})
        if member not in members:
            members[member] = await self.streams.enter_async_context(
                ctx.open_stream(member, f"room:{room}", lane=Lane.RELIABLE)
            )
        return _encode(self.history.get(room, []))

    @route("examples.Chat.Post")
    async def post(self, request: bytes, ctx: Context) -> bytes:
        """Request: JSON ``{"room", "text"}``. Appends to the history, then fans it out."""
        post = json.loads(request)
        room = post["room"]
        message = {"from": str(ctx.caller_id), "text": post["text"]}
        self.history.setdefault(room, []).append(message)
        for stream in self.members.get(room, {}).values():
            await stream.send(_encode(message))
        return b""

    @route("examples.Chat.History")
    async def get_history(self, request: bytes, ctx: Context) -> bytes:
        """Request: the room name. Response: its history, a JSON list of messages."""
        return _encode(self.history.get(request.decode(), []))


class ChatMember(Workload):
    """The client node: it only receives over its stream callback."""

    actr_type = ActrType("examples", "chat-member")


async def scenario(ref: ActrRef, server: ActrId, local: bool) -> None:
    received: list[str] = []
    all_back = trio.Event()

    async def on_message(chunk: StreamChunk, ctx: Context) -> None:
        if chunk.end:
            return
        received.append(json.loads(chunk.payload)["text"])
        print(f"  [{ROOM}] {received[-1]}")
        if len(received) == len(MESSAGES):
            all_back.set()

    ref.streams.register(f"room:{ROOM}", on_message)
    history = json.loads(await ref.call(server, "examples.Chat.Join", ROOM.encode()))
    print(f"joined {ROOM!r} ({len(history)} messages in its history); posting {len(MESSAGES)}:")
    for text in MESSAGES:
        await ref.call(server, "examples.Chat.Post", _encode({"room": ROOM, "text": text}))
    with trio.fail_after(RECEIVE_BOUND):
        await all_back.wait()
    print(f"received back over the stream, in order: {received == list(MESSAGES)}")
    history = json.loads(await ref.call(server, "examples.Chat.History", ROOM.encode()))
    print(f"history of {ROOM!r}: {[m['text'] for m in history]}")


if __name__ == "__main__":
    _common.main("chat", __doc__, worker=ChatServer, client=ChatMember, scenario=scenario)
