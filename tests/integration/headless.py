"""A headless Chromium driven over the DevTools protocol (CDP) with trio-websocket: enough to
open a page, read what it shows (JavaScript evaluated in it) and take a screenshot.

No browser-automation dependency: Chromium listens for DevTools on a port it picks itself
(``--remote-debugging-port=0``) and writes it to ``DevToolsActivePort`` in its profile
directory; one WebSocket to the browser target carries every command (flattened sessions).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Screenshots are megabytes of base64 in one message.
MAX_MESSAGE = 64 * 1024 * 1024
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class CdpError(Exception):
    """A DevTools command answered with an error."""


@attrs.define(eq=False)
class _Slot:
    done: trio.Event = attrs.field(factory=trio.Event)
    answer: dict[str, Any] | None = None


@attrs.define(eq=False)
class Page:
    """One tab, attached through the browser connection."""

    browser: Browser
    session: str

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session=self.session, **params)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited if it is a promise)."""
        answer = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression!r} raised: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        answer = await self.send("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(answer["data"]))


@attrs.define(eq=False)
class Browser:
    ws: WebSocketConnection
    ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))
    waiting: dict[int, _Slot] = attrs.field(factory=dict)

    async def send(
        self, method: str, *, session: str | None = None, **params: Any
    ) -> dict[str, Any]:
        request_id = next(self.ids)
        message: dict[str, Any] = {"id": request_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        slot = self.waiting[request_id] = _Slot()
        try:
            await self.ws.send_message(json.dumps(message))
            await slot.done.wait()
        finally:
            del self.waiting[request_id]
        assert slot.answer is not None
        if "error" in slot.answer:
            raise CdpError(f"{method}: {slot.answer['error']}")
        result: dict[str, Any] = slot.answer.get("result", {})
        return result

    async def read(self) -> None:
        """Route answers to their commands (events are not needed here)."""
        while True:
            message = json.loads(await self.ws.get_message())
            slot = self.waiting.get(message.get("id", -1))
            if slot is not None:
                slot.answer = message
                slot.done.set()

    async def open(self, url: str, width: int = 1100, height: int = 520) -> Page:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.send("Page.enable")
        await page.send("Page.navigate", url=url)
        return page


async def _devtools_url(profile: Path, proc: trio.Process) -> str:
    """The browser's DevTools WebSocket URL, once Chromium wrote it (the caller bounds it)."""
    active = profile / "DevToolsActivePort"
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before DevTools was up")
        try:
            lines = (await trio.Path(active).read_text()).splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= 2:
            return f"ws://127.0.0.1:{int(lines[0])}{lines[1]}"
        await trio.sleep(0.05)


async def _stop(proc: trio.Process) -> None:
    """SIGTERM (Chromium stops its own helpers), then SIGKILL to the whole process group."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.terminate()
            with trio.move_on_after(10):
                await proc.wait()
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(ProcessLookupError):  # its helpers, if any survived it
            os.killpg(proc.pid, signal.SIGKILL)


@asynccontextmanager
async def chromium(executable: str, profile: Path, log: Path) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh ``profile``; stopped (and its process group killed) on
    exit, whatever happens."""
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:  # noqa: ASYNC230 - a local file, opened once
        proc = await trio.lowlevel.open_process(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    try:
        with trio.fail_after(60):
            url = await _devtools_url(profile, proc)
        async with (
            open_websocket_url(url, max_message_size=MAX_MESSAGE) as ws,
            trio.open_nursery() as nursery,
        ):
            browser = Browser(ws)
            nursery.start_soon(browser.read)
            yield browser
            nursery.cancel_scope.cancel()
    finally:
        await _stop(proc)
