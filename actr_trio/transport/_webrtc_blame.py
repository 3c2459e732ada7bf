"""Which link an error the asyncio loop reports belongs to.

Part of the WebRTC transport (``_webrtc.py`` has the overview, "Containment"). What aiortc's
own tasks and callbacks raise never reaches our code as an exception: asyncio hands it to the
loop's exception handler (``_webrtc_ports.Ports.on_asyncio_error``) as a *context* (the exception,
the task, the handle). :func:`suspects` lists the objects whose methods were running when it
failed, :func:`owned` the aiortc objects of one peer connection; a link is to blame when the two
meet. Plain object inspection: no asyncio call, so it runs in whatever thread the report comes
from (a task destroyed while pending is reported by the garbage collector, in any thread).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["owned", "suspects"]

# How deep to look for the aiortc object behind a failing task or callback.
_MAX_AWAIT_DEPTH: Final = 16
_MAX_TRACEBACK: Final = 64


def owned(pc: Any, channels: Iterator[object]) -> Iterator[object]:
    """The aiortc objects of peer connection ``pc`` with data ``channels`` (their tasks may
    fail)."""
    yield pc
    yield from channels
    # aiortc's annotations say these are never None; before negotiation some are.
    sctp: object = pc.sctp
    transports: list[object] = [sctp, getattr(sctp, "transport", None)]
    for transceiver in pc.getTransceivers():
        yield transceiver
        yield transceiver.sender
        yield transceiver.receiver
        transports.append(transceiver.sender.transport)
    for transport in transports:
        if transport is None:
            continue
        yield transport  # the SCTP transport, or a DTLS transport
        ice = getattr(transport, "transport", None)  # a DTLS transport's ICE transport
        if ice is not None:
            yield ice
            gatherer = getattr(ice, "iceGatherer", None)
            if gatherer is not None:
                yield gatherer


def suspects(context: dict[str, Any]) -> Iterator[object]:
    """Objects whose methods a failing task or callback ran (``self`` of each frame): where
    the exception was raised (a finished task's coroutine has no frames left), what a pending
    task was running, the callback's owner."""
    exception = context.get("exception")
    tb = getattr(exception, "__traceback__", None)
    for _ in range(_MAX_TRACEBACK):
        if tb is None:
            break
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None:
            yield owner
        tb = tb.tb_next
    for key in ("future", "task"):
        future = context.get(key)
        get_coro = getattr(future, "get_coro", None)
        if get_coro is not None:
            yield from _coroutine_selves(get_coro())
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if owner is not None:
        yield owner
    for key in ("transport", "protocol"):
        if context.get(key) is not None:
            yield context[key]


def _coroutine_selves(coro: object) -> Iterator[object]:
    for _ in range(_MAX_AWAIT_DEPTH):
        if not isinstance(coro, types.CoroutineType):
            return
        frame = coro.cr_frame
        if frame is not None and "self" in frame.f_locals:
            yield frame.f_locals["self"]
        coro = coro.cr_await
