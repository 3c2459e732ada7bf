"""Sans-IO frame codec: many packets per data-channel message, big packets across several.

aiortc moves only ~2,300 small data-channel messages per second (measured on loopback), so the WebRTC
transport coalesces packets into *frames* of up to ``max_frame_size`` bytes (at most
:data:`MAX_FRAME_SIZE`, the message size every SCTP peer accepts), and splits a packet that does
not fit one frame across consecutive frames. No I/O here: the transport feeds bytes in and gets
bytes out, so the codec is tested synchronously and bad input becomes a :class:`FrameError`
before anything async sees it.

Wire format (big-endian)::

    frame   := version:u8 (=1)  sequence:u32  record+
    record  := kind:u8  length:u32  [total:u32 if kind == FIRST]  data[length]
    kind    := 0 WHOLE | 1 FIRST | 2 MIDDLE | 3 LAST

Invariants:

* Every frame carries a per-channel ``sequence`` (wrapping at 2**32). A gap means frames were
  lost (partially reliable lanes drop) or reordered (LatencyFirst): the decoder then
  abandons the packet it was reassembling and counts it in :attr:`FrameDecoder.lost`; whole
  packets in later frames are still delivered. Loss is not an error; inconsistency is.
* A declared packet ``total`` above the decoder's ``max_packet_size`` (``Config.max_payload`` +
  :data:`PACKET_OVERHEAD`) is rejected before any byte of it is buffered, so a peer cannot make
  us reassemble without bound.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from ..errors import MalformedEnvelope

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_FRAME_SIZE",
    "PACKET_OVERHEAD",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
]

#: aiortc accepts 262144-byte messages itself but assumes a peer that announces no
#: ``max-message-size`` takes 65536 (``aiortc.rtcsctptransport.REMOTE_DEFAULT_MAX_MESSAGE_SIZE``,
#: RFC 8841 §6.1): no frame is ever larger, whoever the peer is.
MAX_FRAME_SIZE: Final = 65536
#: Default frame size: large enough that per-message cost is amortised over ~150 small
#: packets, small enough not to hold one lane's head of line for long.
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024
#: Bytes a packet may carry beyond ``Config.max_payload`` (envelope header: ids, route key,
#: trace id, error text). The reassembly cap is ``max_payload + PACKET_OVERHEAD``.
PACKET_OVERHEAD: Final = 16 * 1024

VERSION: Final = 1
WHOLE: Final = 0
FIRST: Final = 1
MIDDLE: Final = 2
LAST: Final = 3

_FRAME_HEADER: Final = struct.Struct(">BI")
_RECORD_HEADER: Final = struct.Struct(">BI")
_TOTAL: Final = struct.Struct(">I")
_MIN_FRAME_SIZE: Final = 64
_SEQUENCE_MOD: Final = 1 << 32


class FrameError(MalformedEnvelope):
    """A peer sent a frame that is truncated, inconsistent, or over the size limits."""


class FrameEncoder:
    """Packs packets into frames for one data channel (keeps that channel's frame sequence)."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not _MIN_FRAME_SIZE <= max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size={max_frame_size!r} must be in [{_MIN_FRAME_SIZE}, {MAX_FRAME_SIZE}]"
            )
        self.max_frame_size = max_frame_size
        self._sequence = 0

    def __repr__(self) -> str:
        return f"<FrameEncoder max_frame_size={self.max_frame_size} next={self._sequence}>"

    @property
    def next_sequence(self) -> int:
        """The sequence number the next frame will carry."""
        return self._sequence

    def encode(self, packets: Iterable[bytes]) -> list[bytes]:
        """Frames carrying ``packets`` in order; consecutive calls continue the sequence.

        Small packets share frames; a packet that does not fit in the rest of the current frame
        starts a new one if it fits a whole frame, else it is fragmented (FIRST/MIDDLE/LAST).
        """
        frames: list[bytes] = []
        limit = self.max_frame_size
        buf = self._new_frame()
        for packet in packets:
            size = len(packet)
            if len(buf) + _RECORD_HEADER.size + size <= limit:
                buf += _RECORD_HEADER.pack(WHOLE, size)
                buf += packet
                continue
            if _FRAME_HEADER.size + _RECORD_HEADER.size + size <= limit:
                frames.append(bytes(buf))
                buf = self._new_frame()
                buf += _RECORD_HEADER.pack(WHOLE, size)
                buf += packet
                continue
            # Fragment. Start in the current frame when a useful chunk still fits.
            if limit - len(buf) < _RECORD_HEADER.size + _TOTAL.size + 16:
                frames.append(bytes(buf))
                buf = self._new_frame()
            view = memoryview(packet)
            room = limit - len(buf) - _RECORD_HEADER.size - _TOTAL.size
            buf += _RECORD_HEADER.pack(FIRST, room)
            buf += _TOTAL.pack(size)
            buf += view[:room]
            pos = room
            while pos < size:
                frames.append(bytes(buf))
                buf = self._new_frame()
                room = limit - len(buf) - _RECORD_HEADER.size
                chunk = view[pos : pos + room]
                pos += len(chunk)
                buf += _RECORD_HEADER.pack(LAST if pos >= size else MIDDLE, len(chunk))
                buf += chunk
        if len(buf) > _FRAME_HEADER.size:
            frames.append(bytes(buf))
        else:
            self._sequence = (self._sequence - 1) % _SEQUENCE_MOD  # unused header: give it back
        return frames

    def _new_frame(self) -> bytearray:
        buf = bytearray(_FRAME_HEADER.pack(VERSION, self._sequence))
        self._sequence = (self._sequence + 1) % _SEQUENCE_MOD
        return buf


class FrameDecoder:
    """Unpacks the frames of one data channel back into packets (see the module docstring).

    Attributes:
        lost: packets abandoned half-reassembled because frames went missing or came out of
            order (never raised: loss is the lane's business, not malformed input).
        skipped_frames: frames the sequence jumped over (lost, on an ordered lane).
    """

    def __init__(self, max_packet_size: int) -> None:
        if max_packet_size <= 0:
            raise ValueError(f"max_packet_size={max_packet_size!r} must be > 0")
        self.max_packet_size = max_packet_size
        self.lost = 0
        self.skipped_frames = 0
        # Encoders start at 0, so frames lost before the first arrival count as skipped too.
        self._expected = 0
        self._partial: bytearray | None = None
        self._total = 0
        self._skipping = False

    def __repr__(self) -> str:
        return f"<FrameDecoder expected={self._expected} lost={self.lost}>"

    def feed(self, frame: bytes) -> list[bytes]:
        """The complete packets ``frame`` yields, in order.

        Raises:
            FrameError: ``frame`` is truncated, has an unknown version or record kind,
                contradicts the fragment state, or declares a packet over ``max_packet_size``.
                The decoder's state is then undefined: drop the channel.
        """
        size = len(frame)
        if size < _FRAME_HEADER.size + _RECORD_HEADER.size:
            raise FrameError(f"frame of {size} bytes is shorter than its headers")
        version, sequence = _FRAME_HEADER.unpack_from(frame, 0)
        if version != VERSION:
            raise FrameError(f"unknown frame version {version}")
        if sequence != self._expected:
            distance = (sequence - self._expected) % _SEQUENCE_MOD
            if distance < _SEQUENCE_MOD // 2:
                self.skipped_frames += distance
            self._gap()
        self._expected = (sequence + 1) % _SEQUENCE_MOD

        packets: list[bytes] = []
        view = memoryview(frame)
        pos = _FRAME_HEADER.size
        while pos < size:
            if size - pos < _RECORD_HEADER.size:
                raise FrameError(f"truncated record header at offset {pos}")
            kind, length = _RECORD_HEADER.unpack_from(frame, pos)
            pos += _RECORD_HEADER.size
            total = 0
            if kind == FIRST:
                if size - pos < _TOTAL.size:
                    raise FrameError(f"truncated fragment total at offset {pos}")
                (total,) = _TOTAL.unpack_from(frame, pos)
                pos += _TOTAL.size
            elif kind not in (WHOLE, MIDDLE, LAST):
                raise FrameError(
                    f"unknown record kind {kind} at offset {pos - _RECORD_HEADER.size}"
                )
            if length > size - pos:
                raise FrameError(f"record of {length} bytes overruns the frame at offset {pos}")
            data = view[pos : pos + length]
            pos += length
            self._record(kind, total, data, packets)
        return packets

    def skip_to(self, sequence: int) -> int:
        """Write off frames up to (excluding) ``sequence`` as lost; returns how many.

        For a sender that stalled: frames it wrote that never arrived will not arrive now.
        """
        distance = (sequence - self._expected) % _SEQUENCE_MOD
        if distance == 0 or distance >= _SEQUENCE_MOD // 2:
            return 0
        self._gap()
        self._expected = sequence
        return distance

    def _gap(self) -> None:
        if self._partial is not None:
            self.lost += 1
            self._partial = None
        # The next MIDDLE/LAST records belong to a packet whose FIRST we never saw.
        self._skipping = True

    def _record(self, kind: int, total: int, data: memoryview, out: list[bytes]) -> None:
        if self._skipping:
            if kind in (MIDDLE, LAST):
                if kind == LAST:
                    self._skipping = False
                    self.lost += 1
                return
            self._skipping = False
        if kind == WHOLE:
            if self._partial is not None:
                raise FrameError("whole packet inside a fragmented one")
            if len(data) > self.max_packet_size:
                raise FrameError(f"packet of {len(data)} bytes exceeds {self.max_packet_size}")
            out.append(bytes(data))
        elif kind == FIRST:
            if self._partial is not None:
                raise FrameError("fragment start inside a fragmented packet")
            if total > self.max_packet_size:
                raise FrameError(f"packet of {total} bytes exceeds {self.max_packet_size}")
            if len(data) >= total:
                raise FrameError(f"first fragment of {len(data)} bytes for a {total}-byte packet")
            self._partial = bytearray(data)
            self._total = total
        else:
            partial = self._partial
            if partial is None:
                raise FrameError("fragment continuation without a start")
            if len(partial) + len(data) > self._total:
                raise FrameError(f"fragments exceed the declared {self._total} bytes")
            partial += data
            if kind == LAST:
                if len(partial) != self._total:
                    raise FrameError(
                        f"fragments end at {len(partial)} bytes of a declared {self._total}"
                    )
                out.append(bytes(partial))
                self._partial = None
