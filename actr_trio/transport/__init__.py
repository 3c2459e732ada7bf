"""Transports: the outer ring. ``WebRTCTransport`` is imported lazily (it pulls in aiortc)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._abc import (
    Inbound,
    InboundFrame,
    InboundPackets,
    MediaSource,
    Relay,
    SignalingConnector,
    SignalingSession,
    Transport,
)
from ._loopback import LoopbackHub, LoopbackTransport

if TYPE_CHECKING:
    from ._webrtc import WebRTCTransport

__all__ = [
    "Inbound",
    "InboundFrame",
    "InboundPackets",
    "LoopbackHub",
    "LoopbackTransport",
    "MediaSource",
    "Relay",
    "SignalingConnector",
    "SignalingSession",
    "Transport",
    "WebRTCTransport",
]


def __getattr__(name: str) -> object:
    # PEP 562: importing actr_trio must not import asyncio/aiortc.
    if name == "WebRTCTransport":
        from ._webrtc import WebRTCTransport

        return WebRTCTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
