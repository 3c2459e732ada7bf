"""Child process for the raw aiortc baselines: the answering peer, plain asyncio.

Protocol: reads the offer (one JSON line) on stdin, writes the answer (one JSON line) on
stdout, then serves the data channel the parent opened until stdin closes. Text messages are
commands: ``"echo"`` makes it echo every binary message back; ``"sink:N"`` makes it count the
next N binary messages and then answer ``"done:N:BYTES"``; ``"tally"`` makes it count every
binary message from then on (on any channel) and ``"report"`` answers
``"tally:COUNT:BYTES:LAST"``, LAST being ``time.monotonic()`` at the last counted message (one
clock for every process of the machine: the parent computes sender start -> receiver's last
byte, as the runtime's W7 row does).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from benchmarks.baselines._loopback_ice import assert_loopback_sdp, restrict_ice_to_loopback


class _Sink:
    """Counting a burst while ``expected`` > 0, echoing otherwise."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.bytes = 0
        self.tally = False
        self.last = 0.0


async def main() -> None:
    from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

    restrict_ice_to_loopback()
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    state = _Sink()

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        @channel.on("message")
        def on_message(message: bytes | str) -> None:
            if isinstance(message, str):
                if message == "echo":
                    state.expected, state.tally = 0, False
                elif message.startswith("sink:"):
                    state.expected, state.count, state.bytes = int(message[5:]), 0, 0
                elif message == "tally":
                    state.tally, state.count, state.bytes, state.last = True, 0, 0, 0.0
                elif message == "report":
                    channel.send(f"tally:{state.count}:{state.bytes}:{state.last!r}")
                return
            if state.tally:
                state.count += 1
                state.bytes += len(message)
                state.last = time.monotonic()
                return
            if not state.expected:
                channel.send(message)
                return
            state.count += 1
            state.bytes += len(message)
            if state.count == state.expected:
                channel.send(f"done:{state.count}:{state.bytes}")
                state.expected = 0  # back to echo

    sys.stdout.write("ready\n")  # imports done: the parent's connect time starts now
    sys.stdout.flush()
    try:
        offer = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        assert_loopback_sdp(offer["sdp"])
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        await pc.setLocalDescription(await pc.createAnswer())
        assert_loopback_sdp(pc.localDescription.sdp)
        answer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    finally:
        await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
