"""Issue 9: a RELIABLE stream to a receiver SIGKILLed mid-stream, over real WebRTC and over a
direct WebSocket link. The sender
does not report a clean close: leaving the block raises ``StreamIncomplete`` naming exactly the
chunks sent after the receiver died (those before it were acknowledged)."""

from __future__ import annotations

import signal

import pytest
import trio
from netprocs import Processes, lane_argv, lane_options, netnode_argv

from actr_trio import ActrId, ActrRef, ActrSystem, ActrType, Lane, StreamSender, Workload
from actr_trio.errors import StreamIncomplete
from actr_trio.testing import find, network_config

NODE = ActrType("itest", "node")
CHUNKS = 200
BEFORE_KILL = 78
# How long leaving the block waits for acks (and each chunk is resent): short, the receiver is dead.
CLOSE_TIMEOUT = 3.0


class Streamer(Workload):
    actr_type = ActrType("itest", "streamer")


async def send_and_kill(
    here: ActrRef, target: ActrId, stream: StreamSender, receiver: trio.Process, lane: str
) -> None:
    """Send 78 chunks and see them acknowledged, SIGKILL the receiver, send the other 122."""
    for i in range(BEFORE_KILL):
        await stream.send(b"%d" % i)
    # A tell on the same lane returns once acknowledged, and acks are cumulative on the link:
    # every chunk before it is acknowledged too.
    await here.tell(target, "itest.Node.Echo", b"")
    assert stream.acknowledged == BEFORE_KILL
    assert here.statistics().links[target] == lane
    receiver.send_signal(signal.SIGKILL)
    await receiver.wait()
    for i in range(BEFORE_KILL, CHUNKS):
        await stream.send(b"%d" % i)


async def test_reliable_stream_to_a_killed_receiver_reports_the_unacknowledged_chunks(
    processes: Processes, signaling_url: str, lane: str
) -> None:
    receiver = await processes.start(*netnode_argv("receiver", signaling_url, *lane_argv(lane)))
    config = network_config(signaling_url, realm="itest", **lane_options(lane))
    with trio.fail_after(60):
        async with ActrSystem(config).attach(Streamer()).start() as here:
            target = await find(here, NODE)
            with pytest.raises(StreamIncomplete) as caught:
                async with here.open_stream(
                    target, "itest-stream", lane=Lane.RELIABLE, timeout=CLOSE_TIMEOUT
                ) as stream:
                    await send_and_kill(here, target, stream, receiver, lane)
    error = caught.value
    assert (error.sent, error.unacknowledged, error.end_acknowledged) == (CHUNKS, 122, False)
    assert "122 of 200 chunks were not acknowledged" in str(error)
