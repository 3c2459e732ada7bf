"""The asyncio side of the WebRTC transport: a native asyncio loop on its own thread, and
everything aiortc does on it.

Part of the WebRTC transport (``_webrtc.py`` has the overview). This is the only module of
actr_trio that runs asyncio code (``_ice`` only patches aioice): the rest of the transport is
plain Trio and reaches aiortc through the two classes here.

:class:`AsyncioThread` runs one ``asyncio`` event loop on a thread of its own (one per
transport, so one per node), started when the transport's first link needs it and stopped when
the transport's ``run`` ends (``_webrtc_ports.Ports``, which imports this module only then:
importing it imports aiortc). The two sides exchange *batches* of callables:

* Trio to asyncio: :meth:`AsyncioThread.call` queues a callable; the first one queued since the
  loop last drained wakes it (one ``loop.call_soon_threadsafe``), and the loop then runs every
  callable waiting, in order;
* asyncio to Trio: :meth:`AsyncioThread.to_trio` does the same the other way
  (one ``TrioToken.run_sync_soon`` per batch), so the data-channel messages aiortc delivers in
  one loop iteration reach Trio together.

A crossing costs a wakeup of the other thread and a GIL handoff (~tens of µs): one per frame
would cost more than trio-asyncio's per-callback cancel scope. Batching makes it one per burst.

:class:`Port` is the asyncio side of one link: its ``RTCPeerConnection`` (media slots, then four
negotiated data channels), callbacks that report to the Trio side (:class:`LinkEvents`) and do
nothing else, the readers of received tracks, writes of frames. Any exception on the asyncio
side of a link, in our code or in one of aiortc's tasks (the loop's exception handler
attributes it to the link whose aiortc object the failing task belongs to, see
``_webrtc_ports.Ports``), is reported to the Trio side, which closes that link; nothing raises into
the loop, the thread or the node's nursery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import trio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy

from .._logging import TRANSPORT
from ..errors import ShuttingDown, TransportError
from . import _ice
from ._webrtc_link import CHANNEL_RELIABILITY, LOW_WATER, TRACK_KINDS, Channel

if TYPE_CHECKING:
    from ._webrtc_link import Link
    from ._webrtc_ports import Ports

__all__ = ["AsyncioThread", "LinkEvents", "Port", "is_media_track"]

log = logging.getLogger(TRANSPORT)
T = TypeVar("T")

#: The loop thread's name (tests look for it among ``threading.enumerate()``).
THREAD_NAME: Final = "actr-webrtc-asyncio"
#: Seconds the loop's remaining tasks get to finish once the transport stops.
STOP_GRACE: Final = 2.0
#: Decoded media frames of one link handed to Trio and not yet taken there; more are dropped.
MEDIA_BACKLOG: Final = 32


class AsyncioThread:
    """A native asyncio loop on a thread of its own; batched calls both ways (module docstring).

    Created in Trio (it keeps the current Trio token); :meth:`call` and :meth:`run` are for
    Trio, :meth:`to_trio` for the loop's thread (or any thread, e.g. a garbage collection).
    """

    def __init__(self, exception_handler: Callable[[dict[str, Any]], None]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._handler = exception_handler
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._on_exception)
        self._to_loop: deque[Callable[[], object]] = deque()
        self._to_trio: deque[Callable[[], object]] = deque()
        # True while a drain is scheduled on the other side and has not yet started.
        self._loop_wake = False
        self._trio_wake = False
        self._stopping = False
        self._exited = trio.Event()
        self._thread = threading.Thread(target=self._main, name=THREAD_NAME)

    def __repr__(self) -> str:
        return f"<AsyncioThread alive={self._thread.is_alive()} stopping={self._stopping}>"

    # ------------------------------------------------------------------ Trio to asyncio

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on the loop, after everything queued before it (from Trio, never blocks).

        Dropped once the loop is stopping. An exception in ``fn`` goes to the loop's exception
        handler.
        """
        if self._stopping:
            return
        self._to_loop.append(fn)
        # The drain clears the flag *before* taking the queue: an item appended while the flag
        # still reads True is taken by that drain, one appended after it schedules the next.
        if not self._loop_wake:
            self._loop_wake = True
            self.loop.call_soon_threadsafe(self._drain_loop)

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine ``fn()`` as an asyncio task; return (or raise) what it does.

        Cancelling the caller cancels the task (and does not wait for it).

        Raises:
            ShuttingDown: the loop is stopping.
        """
        if self._stopping:
            raise ShuttingDown("transport is closed")
        done = trio.Event()
        results: list[asyncio.Task[T]] = []

        def finished(task: asyncio.Task[T]) -> None:  # on the loop
            if not task.cancelled():
                task.exception()  # retrieved: asyncio does not report it as never retrieved
            results.append(task)
            self.to_trio(done.set)

        def start() -> None:  # on the loop
            task = self.loop.create_task(_awaited(fn))
            task.add_done_callback(finished)
            tasks.append(task)

        tasks: list[asyncio.Task[T]] = []
        self.call(start)
        try:
            await done.wait()
        except trio.Cancelled:
            self.call(lambda: [task.cancel() for task in tasks])
            raise
        if not results or results[0].cancelled():  # the loop stopped before it finished
            raise ShuttingDown("transport is closed")
        # A done task's result() returns its value or raises its exception, from any thread.
        return results[0].result()

    def _drain_loop(self) -> None:
        self._loop_wake = False
        queue = self._to_loop
        for _ in range(len(queue)):
            fn = queue.popleft()
            try:
                fn()
            except Exception as exc:
                self.loop.call_exception_handler(
                    {"message": f"{_name(fn)} raised on the asyncio loop", "exception": exc}
                )

    # ------------------------------------------------------------------ asyncio to Trio

    def to_trio(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in Trio (as a system callback, after everything queued before it).

        From any thread. ``fn`` may only use Trio's synchronous calls (set an event, unpark,
        ``send_nowait``). Dropped once Trio has finished.
        """
        self._to_trio.append(fn)
        if not self._trio_wake:
            self._trio_wake = True
            try:
                self._token.run_sync_soon(self._drain_trio)
            except trio.RunFinishedError:
                self._to_trio.clear()

    def _drain_trio(self) -> None:
        self._trio_wake = False
        queue = self._to_trio
        for _ in range(len(queue)):
            fn = queue.popleft()
            try:
                fn()
            except Exception:  # a bug of ours: never into Trio's run loop (TrioInternalError)
                log.warning("%s raised in a WebRTC callback", _name(fn), exc_info=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    async def stop(self, on_stop: Callable[[], None]) -> None:
        """Stop the loop: cancel what still runs (``STOP_GRACE``), call ``on_stop`` on the loop,
        close it, join the thread. Call shielded; returns once the thread ended (or logs)."""
        self.call(partial(self._begin_stop, on_stop))
        self._stopping = True
        with trio.move_on_after(STOP_GRACE + 5.0):
            await self._exited.wait()
        # The thread's last act was to report it exited: the join is immediate.
        self._thread.join(timeout=0.5 if self._exited.is_set() else 0.0)
        if self._thread.is_alive():
            log.warning("the WebRTC asyncio thread did not stop; leaving it behind")

    def _begin_stop(self, on_stop: Callable[[], None]) -> None:
        self._on_stop = on_stop
        self.loop.stop()

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            self._shutdown(loop)
        finally:
            loop.close()
            self.to_trio(self._exited.set)

    def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=STOP_GRACE))
        on_stop = getattr(self, "_on_stop", None)
        if on_stop is not None:
            try:
                on_stop()
            except Exception as exc:
                log.warning("stopping the WebRTC asyncio side raised %r", exc)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            self._handler(context)
        except Exception:  # a report must never become an error of its own
            log.debug("could not report an asyncio error", exc_info=True)


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def _name(fn: Callable[..., object]) -> str:
    inner = fn.func if isinstance(fn, partial) else fn
    return getattr(inner, "__qualname__", repr(inner))


# ---------------------------------------------------------------------------- links


class LinkEvents(Protocol):
    """What the asyncio side of a link reports; the Trio side handles it (``_webrtc_recv``).

    Every method is called in Trio, in the order the asyncio side saw the events.
    """

    def channel_open(self, link: Link, channel: Channel) -> None: ...

    def channel_closed(self, link: Link, channel: Channel) -> None: ...

    def message(self, link: Link, channel: Channel, message: bytes | str) -> None: ...

    def drained(self, link: Link, channel: Channel) -> None: ...

    def connection_state(self, link: Link, state: str) -> None: ...

    def frame(self, port: Port, mid: str, frame: Any) -> None: ...

    def media_dropped(self, frames: int) -> None: ...

    def failed(self, link: Link, where: str, exc: BaseException) -> None: ...

    def asyncio_error(self, link: Link | None, message: str, exc: BaseException | None) -> None: ...


def is_media_track(obj: object) -> bool:
    """Whether ``obj`` is an aiortc ``MediaStreamTrack`` (what ``publish_track`` accepts)."""
    return isinstance(obj, MediaStreamTrack)


class Port:
    """The asyncio side of one link (see the module docstring). Methods named ``*_soon`` are
    called from Trio and queue their work on the loop; the rest run on the loop."""

    def __init__(self, ports: Ports, link: Link) -> None:
        assert ports.thread is not None
        self._ports = ports
        self._thread = ports.thread
        self._events = ports.events
        self.link = link
        self.pc: RTCPeerConnection | None = None
        self.channels: dict[Channel, RTCDataChannel] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self.closed = False
        # Media frames handed to Trio (written on the loop) and taken there (written in Trio).
        self.frames_posted = 0
        self.frames_taken = 0

    def __repr__(self) -> str:
        return f"<Port {self.link.peer} closed={self.closed}>"

    def _report(self, fn: Callable[..., None], *args: Any) -> None:
        self._thread.to_trio(partial(fn, self.link, *args))

    def _failed(self, where: str, exc: BaseException) -> None:
        self._report(self._events.failed, where, exc)

    # ------------------------------------------------------------------ called from Trio

    def write_soon(self, channel: Channel, frames: list[bytes]) -> None:
        """Write ``frames`` on ``channel`` in order (one crossing for all of them)."""
        self._thread.call(partial(self._write, channel, frames))

    def buffered(self, channel: Channel) -> int:
        """Bytes aiortc buffers on ``channel`` (read across threads: a moment's value)."""
        found = self.channels.get(channel)
        return 0 if found is None else found.bufferedAmount

    # ------------------------------------------------------------------ on the loop

    def _write(self, which: Channel, frames: list[bytes]) -> None:
        channel = self.channels.get(which)
        if self.closed or channel is None or channel.readyState != "open":
            return
        try:
            for frame in frames:
                channel.send(frame)
        except Exception as exc:  # aiortc's, on a channel closing under us
            self._failed(f"writing on {which.name}", exc)

    async def offer(self) -> str:
        """Our offer (ICE gathered: no trickle)."""
        with _ice.host_addresses(self._ports.ice_addresses):
            pc = self._setup()
            await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def accept_answer(self, answer: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def answer(self, offer: str) -> str:
        """Our answer to the peer's (verified) ``offer``."""
        with _ice.host_addresses(self._ports.ice_addresses):
            pc = self._setup()
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def publish(self, track: object) -> None:
        """Announce ``track`` on CONTROL for a free media slot, then send it there.

        Raises:
            TypeError: ``track`` is not an aiortc ``MediaStreamTrack``.
            TransportError: no free slot of the track's kind.
        """
        if not isinstance(track, MediaStreamTrack):
            raise TypeError(f"{track!r} is not an aiortc MediaStreamTrack")
        slot = self._free_slot(track.kind)
        control = self.channels.get(Channel.CONTROL)
        if slot is None or slot.mid is None or control is None:
            raise TransportError(
                f"no free {track.kind} slot to {self.link.peer}"
                f" (media_slots={self._ports.media_slots})"
            )
        kind = bytes([TRACK_KINDS[track.kind]])
        control.send(b"T" + kind + f"{slot.mid}\0{track.id}".encode())
        slot.sender.replaceTrack(track)

    async def close(self) -> None:
        """Stop the track readers and the codec threads, close the peer connection."""
        self.closed = True
        for reader in list(self._readers):
            reader.cancel()
        pc = self.pc
        if pc is not None:
            try:
                self.stop_decoders()
                await pc.close()
            finally:
                # Also after a close that raised: setRemoteDescription may have started a
                # receiver after the first stop.
                self.stop_decoders()
        self._ports.live.discard(self)

    def stop_decoders(self) -> None:
        """Stop the codec threads of every receiver of the connection now (idempotent).

        aiortc starts a non-daemon "audio-decoder"/"video-decoder" thread per receiving
        transceiver and joins it only in ``RTCRtpReceiver.stop()``, which ``pc.close()`` reaches
        after every sender has stopped. A sender whose RTP task never started (a link torn down
        before DTLS connected) makes ``close()`` wait until its bound runs out, and the thread
        then outlives the node and keeps the interpreter from exiting. ``_handle_disconnect``
        (aiortc 1.16, pinned) is the receiver's own "stop the decoder" step: it queues the end
        marker and joins the thread.
        """
        if self.pc is None:
            return
        for transceiver in self.pc.getTransceivers():
            try:
                transceiver.receiver._handle_disconnect()
            except Exception as exc:
                log.debug("stopping a codec thread of %s raised %r", self.link.peer, exc)

    def _free_slot(self, kind: str) -> RTCRtpTransceiver | None:
        assert self.pc is not None
        for transceiver in self.pc.getTransceivers():
            # aiortc annotates sender.track as never None, but a slot without a track has None.
            current: MediaStreamTrack | None = transceiver.sender.track
            if (
                transceiver.kind == kind
                and current is None
                and transceiver.currentDirection in ("sendrecv", "sendonly")
            ):
                return transceiver
        return None

    def _setup(self) -> RTCPeerConnection:
        servers = [RTCIceServer(url) for url in self._ports.ice_servers]
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pc = pc
        self._ports.live.add(self)
        # Transceivers before the data channels: with MAX_BUNDLE aiortc then bundles the SCTP
        # transport onto the first transceiver's from the start. The other order makes
        # setRemoteDescription "unbundle" the SCTP transport by stopping the shared transport.
        for kind in self._ports.media_slots:
            pc.addTransceiver(kind, direction="sendrecv")
        for which in Channel:
            ordered, max_retransmits = CHANNEL_RELIABILITY[which]
            channel = pc.createDataChannel(
                which.name.lower(),
                ordered=ordered,
                maxRetransmits=max_retransmits,
                negotiated=True,
                id=int(which),
            )
            channel.bufferedAmountLowThreshold = LOW_WATER
            self.channels[which] = channel
            self._watch(which, channel)
        pc.on("connectionstatechange", self._contained("connectionstatechange", self._on_state))
        pc.on("track", self._contained("track", self._on_track))
        return pc

    def _contained(self, where: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` as an aiortc callback: an exception in it fails this link instead of
        propagating into aiortc (whose event emitter would re-raise it inside its tasks)."""

        def callback(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                self._failed(where, exc)

        return callback

    def _watch(self, which: Channel, channel: RTCDataChannel) -> None:
        events = self._events
        where = f"data channel {which.name}"
        report = self._report
        channel.on("open", self._contained(where, lambda: report(events.channel_open, which)))
        channel.on("close", self._contained(where, lambda: report(events.channel_closed, which)))
        channel.on(
            "bufferedamountlow", self._contained(where, partial(report, events.drained, which))
        )
        channel.on("message", self._contained(where, partial(self.on_message, which)))

    def on_message(self, which: Channel, message: bytes | str) -> None:
        """A data-channel message: handed to Trio with whatever else arrived meanwhile."""
        self._report(self._events.message, which, message)

    def _on_state(self) -> None:
        assert self.pc is not None
        self._report(self._events.connection_state, self.pc.connectionState)

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and transceiver.mid is not None:
                reader = asyncio.get_running_loop().create_task(
                    self._read_track(transceiver.mid, track)
                )
                self._readers.add(reader)
                reader.add_done_callback(self._readers.discard)

    async def _read_track(self, mid: str, track: MediaStreamTrack) -> None:
        try:
            while not self.closed:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if self.frames_posted - self.frames_taken >= MEDIA_BACKLOG:
                    self._thread.to_trio(partial(self._events.media_dropped, 1))
                    continue
                self.frames_posted += 1
                self._thread.to_trio(partial(self._events.frame, self, mid, frame))
        except Exception as exc:
            self._failed("track reader", exc)
