"""The transport conformance suite against LoopbackTransport, WebRTCTransport and
WebSocketTransport (127.0.0.1).

Each check gets a fresh pair: two transports registered with an in-memory signaling service,
both running in this ``trio.run``. WebRTC links stay on loopback (``ice_addresses``) and use no
STUN server; WebSocket transports listen on 127.0.0.1 and advertise it in their registration.
"""

from __future__ import annotations

import fractions
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from actr_trio._config import Config
from actr_trio._ids import ActrId, ActrType
from actr_trio.testing import conformance
from actr_trio.testing._memory_signaling import MemorySignaling
from actr_trio.transport import LoopbackHub, MediaSource, SignalingSession, Transport
from actr_trio.transport._websocket import WebSocketTransport

pytestmark = pytest.mark.integration

TYPE_A = ActrType("conformance", "a")
TYPE_B = ActrType("conformance", "b")


class LoopbackVideo:
    """A Trio-native synthetic video source for the loopback transport."""

    kind = "video"

    def __init__(self, frames: int = 100) -> None:
        self.id = f"loopback-video-{id(self):x}"
        self._left = frames
        self._pts = 0

    async def recv(self) -> object:
        await trio.lowlevel.checkpoint()
        if self._left == 0:
            raise EOFError
        self._left -= 1
        self._pts += 3000
        return _Picture(self._pts)


class _Picture:
    width = 320
    height = 240

    def __init__(self, pts: int) -> None:
        self.pts = pts


def _webrtc_video() -> MediaSource:
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class SyntheticVideo(VideoStreamTrack):
        """30 fps grey 320x240 frames, generated (no camera, no file)."""

        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = VideoFrame(width=320, height=240, format="yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = pts
            frame.time_base = fractions.Fraction(time_base)
            return frame

    track: MediaSource = SyntheticVideo()
    return track


@asynccontextmanager
async def _pair(
    make_transport: Callable[[], Transport],
    make_track: Callable[[], MediaSource],
    *,
    reliable_may_drop: bool,
    media: bool = True,
) -> AsyncIterator[conformance.TransportPair]:
    signaling = MemorySignaling("conformance")
    async with trio.open_nursery() as nursery:
        a, b = make_transport(), make_transport()

        async def register(transport: Transport, actr_type: ActrType) -> SignalingSession:
            listen = getattr(transport, "listen", None)
            address = None if listen is None else await nursery.start(listen)
            run = partial(signaling.connector().run, listen=address)
            session: SignalingSession = await nursery.start(run, actr_type, None)
            return session

        session_a = await register(a, TYPE_A)
        session_b = await register(b, TYPE_B)
        a_done = trio.Event()
        a_scope = trio.CancelScope()

        async def run_a(task_status: trio.TaskStatus[None]) -> None:
            try:
                with a_scope:
                    await a.run(session_a, task_status=task_status)
            finally:
                a_done.set()

        async def close_a() -> None:
            a_scope.cancel(reason="check_close")
            await a_done.wait()

        await nursery.start(run_a)
        await nursery.start(b.run, session_b)
        yield conformance.TransportPair(
            a=a,
            b=b,
            a_id=session_a.actr_id,
            b_id=session_b.actr_id,
            unknown=ActrId("conformance", 999_999, TYPE_B),
            make_track=make_track,
            close_a=close_a,
            reliable_may_drop=reliable_may_drop,
            media=media,
        )
        nursery.cancel_scope.cancel(reason="pair done")


def _loopback_pair() -> conformance.MakePair:
    hub = LoopbackHub()
    return lambda: _pair(hub.transport, lambda: LoopbackVideo(), reliable_may_drop=False)


def _webrtc_pair() -> conformance.MakePair:
    from actr_trio.transport import WebRTCTransport

    config = Config(realm="conformance", ice_addresses=("127.0.0.1",))
    # RELIABLE is a maxRetransmits=8 channel: aiortc abandons frames of a burst.
    return lambda: _pair(
        lambda: WebRTCTransport(config, connect_timeout=5.0), _webrtc_video, reliable_may_drop=True
    )


def _websocket_pair() -> conformance.MakePair:
    config = Config(realm="conformance", listen="127.0.0.1:0")
    return lambda: _pair(
        lambda: WebSocketTransport(config, connect_timeout=5.0),
        lambda: LoopbackVideo(),
        reliable_may_drop=False,
        media=False,
    )


PAIRS: dict[str, Callable[[], conformance.MakePair]] = {
    "loopback": _loopback_pair,
    "webrtc": _webrtc_pair,
    "websocket": _websocket_pair,
}


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
async def test_conformance(
    kind: str, check: Callable[[conformance.TransportPair], Awaitable[None]]
) -> None:
    with trio.fail_after(60):
        async with PAIRS[kind]()() as pair:
            await check(pair)


async def test_check_transport_runs_every_check_on_loopback() -> None:
    with trio.fail_after(60):
        await conformance.check_transport(_loopback_pair())
