"""media: a synthetic video track published to another node, its frames counted.

The client publishes about one second of generated 64x48 video (30 frames at 30 fps, a grey
level that changes every frame: no camera, no file) to the viewer with ``publish_track``. The
viewer registered a ``ctx.tracks`` callback for the track's id in ``on_start``; frames reach it
on the fast path (no mailbox, concurrent with the state path). When asked over an RPC, the viewer
reports how many frames it counted, once they stopped coming.

Over WebRTC the track is an aiortc ``VideoStreamTrack`` (frames are VP8-encoded over RTP, so a
few may be lost: media is realtime); on ``--local`` it is a Trio-native source (an object with
``id``, ``kind`` and ``async recv()`` raising ``EOFError`` at the end). Both produce the same
``av.VideoFrame`` s.

Run: ``python -m examples.media`` (WebRTC, two processes) or ``python -m examples.media --local``.
"""

from __future__ import annotations

import fractions
import json
from typing import TYPE_CHECKING, Final

import trio
from av import VideoFrame

from actr_trio import ActrId, ActrRef, ActrType, Context, MediaFrame, Workload, route

from .. import _common

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

TRACK_ID: Final = "camera"
FPS: Final = 30
FRAMES: Final = 30
WIDTH: Final = 64
HEIGHT: Final = 48
# The viewer's report waits for this much silence after the last frame (the track ended) ...
QUIET: Final = 0.5
# ... and never longer than this in all.
REPORT_BOUND: Final = 10.0


def synthetic_frame(index: int) -> VideoFrame:
    """A small grey frame whose brightness changes with ``index``."""
    frame = VideoFrame(width=WIDTH, height=HEIGHT, format="yuv420p")
    luma, *chroma = frame.planes
    luma.update(bytes([16 + (index * 7) % 220]) * luma.buffer_size)
    for plane in chroma:
        plane.update(bytes([128]) * plane.buffer_size)
    frame.pts = index
    frame.time_base = fractions.Fraction(1, FPS)
    return frame


class TrioCamera:
    """The ``--local`` source: Trio-native, ``FRAMES`` frames at ``FPS``, then ``EOFError``."""

    id = TRACK_ID
    kind = "video"

    def __init__(self) -> None:
        self._sent = 0

    async def recv(self) -> VideoFrame:
        if self._sent == FRAMES:
            raise EOFError
        await trio.sleep(1 / FPS)
        self._sent += 1
        return synthetic_frame(self._sent)


def webrtc_camera() -> MediaStreamTrack:
    """The WebRTC source: an aiortc track (it runs on aiortc's asyncio loop, not on Trio)."""
    from aiortc import VideoStreamTrack
    from aiortc.mediastreams import MediaStreamError

    class SyntheticCamera(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self._id = TRACK_ID  # the id the viewer registered its callback for
            self._sent = 0

        async def recv(self) -> VideoFrame:
            if self._sent == FRAMES:
                self.stop()
                raise MediaStreamError  # ends aiortc's sender loop
            pts, time_base = await self.next_timestamp()  # paces at 30 fps
            self._sent += 1
            frame = synthetic_frame(self._sent)
            frame.pts, frame.time_base = pts, time_base
            return frame

    return SyntheticCamera()


class Viewer(Workload):
    """Counts the frames of track ``TRACK_ID`` and reports them over an RPC."""

    actr_type = ActrType("examples", "media-viewer")

    def __init__(self) -> None:
        self.frames = 0
        self.size = (0, 0)
        self._arrived = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        ctx.tracks.register(TRACK_ID, self.on_frame)

    async def on_frame(self, frame: MediaFrame, ctx: Context) -> None:
        self.frames += 1
        self.size = (frame.width, frame.height)
        self._arrived.set()
        self._arrived = trio.Event()

    @route("examples.Media.Report")
    async def report(self, request: bytes, ctx: Context) -> bytes:
        """Request: how many frames were published. Waits for them (or for the track to go
        quiet), then answers ``{"frames", "width", "height"}``."""
        published = int(request)
        with trio.move_on_after(REPORT_BOUND):
            while self.frames < published:
                with trio.move_on_after(QUIET) as quiet:
                    await self._arrived.wait()
                if quiet.cancelled_caught and self.frames:
                    break  # the track ended; RTP lost the rest
        width, height = self.size
        return json.dumps({"frames": self.frames, "width": width, "height": height}).encode()


class Publisher(Workload):
    """The client node: it only publishes."""

    actr_type = ActrType("examples", "media-publisher")


async def scenario(ref: ActrRef, viewer: ActrId, local: bool) -> None:
    track = TrioCamera() if local else webrtc_camera()
    await ref.publish_track(viewer, track)
    print(f"publishing track {TRACK_ID!r}: {FRAMES} synthetic {WIDTH}x{HEIGHT} frames at {FPS} fps")
    report = json.loads(await ref.call(viewer, "examples.Media.Report", b"%d" % FRAMES))
    print(
        f"viewer counted {report['frames']} of {FRAMES} frames "
        f"({report['width']}x{report['height']})"
    )


if __name__ == "__main__":
    _common.main("media", __doc__, worker=Viewer, client=Publisher, scenario=scenario)
