"""Child process for the raw aiortc baselines: the answering peer, plain asyncio.

Protocol: reads the offer (one JSON line) on stdin, writes the answer (one JSON line) on
stdout, then serves the data channel the parent opened until stdin closes. Text messages are
commands: ``"echo"`` makes it echo every binary message back; ``"sink:N"`` makes it count the
next N binary messages and then answer ``"done:N:BYTES"``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from benchmarks.baselines._loopback_ice import assert_loopback_sdp, restrict_ice_to_loopback


class _Sink:
    """Counting a burst while ``expected`` > 0, echoing otherwise."""

    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.bytes = 0


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
                    state.expected = 0
                elif message.startswith("sink:"):
                    state.expected, state.count, state.bytes = int(message[5:]), 0, 0
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
