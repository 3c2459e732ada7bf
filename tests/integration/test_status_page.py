"""The realm status page in a real headless Chromium: an ``actr-trio signaling --status``
process, nodes registered with it, and what a person would see (node rows, counts that change
after calls, the drill-down), plus a screenshot saved as a test artifact.

Chromium is Debian's ``chromium`` package (``nox -s tests`` installs it when it can). Without
it the test skips locally and fails in CI (``CI`` set). Waits poll the page's DOM over the
DevTools protocol, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from headless import Page, chromium, find_chromium
from netprocs import Processes
from test_inspect import realm_nodes

from actr_trio.errors import RemoteError
from actr_trio.signaling._cli import REALMS_ENV

pytestmark = pytest.mark.integration

REALMS = {"alpha": "alpha-secret-16bytes"}
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "status-page.png"

# What the page shows: the cells of every node row, and the drill-down.
ROWS = "[...document.querySelectorAll('#nodes tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))"
DETAIL = """JSON.stringify({
  title: document.getElementById('detail-title').textContent,
  hidden: document.getElementById('detail').hidden,
  backlog: [...document.querySelectorAll('#detail-backlog tr')].map(tr => [...tr.cells].map(td => td.textContent)),
  lanes: [...document.querySelectorAll('#detail-lanes tbody tr')].map(tr => [...tr.cells].map(td => td.textContent)),
  dead: [...document.querySelectorAll('#detail-dead li')].map(li => li.textContent),
})"""
WAIT = 30  # seconds for the page to show something (it polls every second)
COLUMNS = ("node", "type", "since", "heartbeat", "backlog", "handled", "handled/s", "dead letters")


def _chromium_or_skip() -> str:
    found = find_chromium()
    if found is not None:
        return found
    reason = (
        "chromium is not installed (Debian: apt-get install chromium; nox -s tests installs it "
        "when it can)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: required in CI")
    pytest.skip(reason)


async def _start_signaling(processes: Processes) -> tuple[str, str]:
    """An ``actr-trio signaling --status`` process; its ws:// URL and its page's URL."""
    env = {**os.environ, REALMS_ENV: ",".join(f"{k}:{v}" for k, v in REALMS.items())}
    argv = [sys.executable, "-m", "actr_trio.cli", "signaling", "--host", "127.0.0.1"]
    argv += ["--port", "0", "--status", "127.0.0.1:0"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, env=env)
    processes.procs.append(proc)
    assert proc.stdout is not None
    found: dict[str, str] = {}
    buffer = b""
    with trio.fail_after(30):
        while "status" not in found:
            data = await proc.stdout.receive_some()
            if not data:
                raise EOFError("actr-trio signaling closed its stdout")
            buffer += data
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            for line in lines:
                text = line.decode()
                if text.startswith("actr-trio signaling listening on "):
                    found["ws"] = text.rsplit(" ", 1)[-1]
                elif text.startswith("actr-trio signaling status page at "):
                    found["status"] = text.rsplit(" ", 1)[-1]
    return found["ws"], found["status"]


async def _until(page: Page, expression: str, ready: Callable[[Any], bool]) -> Any:
    """Evaluate ``expression`` in the page until ``ready`` holds for its value (at most
    :data:`WAIT` seconds; the failure says what the page showed last)."""
    value = None
    with trio.move_on_after(WAIT):
        while True:
            value = await page.evaluate(expression)
            if ready(value):
                return value
            await trio.sleep(0.1)
    raise AssertionError(f"after {WAIT} s the page still shows {value!r}")


def _row(rows: list[list[str]], node_id: str) -> dict[str, str] | None:
    for cells in rows:
        if cells and cells[0] == node_id:
            return dict(zip(COLUMNS, cells, strict=True))
    return None


async def test_the_status_page_shows_the_realm_live_in_chromium(
    processes: Processes, tmp_path: Path
) -> None:
    executable = _chromium_or_skip()
    ws_url, page_url = await _start_signaling(processes)
    with trio.fail_after(180):
        async with (
            realm_nodes(ws_url, direct=False) as (echo, caller),
            chromium(executable, tmp_path / "profile", tmp_path / "chromium.log") as browser,
        ):
            echo_id, caller_id = str(echo.actr_id), str(caller.actr_id)
            page = await browser.open(f"{page_url}?realm=alpha")

            def both_reported(rows: list[list[str]]) -> bool:
                found = [_row(rows, node) for node in (echo_id, caller_id)]
                return all(r is not None and r["handled"] != "-" for r in found)

            rows = await _until(page, ROWS, both_reported)
            first = _row(rows, echo_id)
            assert first is not None
            assert first["type"] == "acme:echo"
            assert first["handled"] == "0"
            assert first["backlog"] == "0"
            assert first["dead letters"] == "0"
            assert first["heartbeat"].endswith("s ago")
            assert len(rows) == 2

            # Calls change what the page shows (heartbeats carry the counts, the page polls).
            for i in range(5):
                await caller.call(echo.actr_id, "demo.Echo.Echo", b"%d" % i)
            with pytest.raises(RemoteError):
                await caller.call(echo.actr_id, "demo.Echo.Poison", b"p")

            def counted(rows: list[list[str]]) -> bool:
                row = _row(rows, echo_id)
                return row is not None and int(row["handled"]) >= 6 and row["dead letters"] == "1"

            await _until(page, ROWS, counted)

            # Drill-down: a click on the node's row.
            clicked = await page.evaluate(
                f"(() => {{ for (const tr of document.querySelectorAll('#nodes tbody tr')) "
                f"if (tr.dataset.id === {json.dumps(echo_id)}) {{ tr.click(); return true; }} "
                f"return false; }})()"
            )
            assert clicked
            detail = json.loads(
                await _until(page, DETAIL, lambda text: not json.loads(text)["hidden"])
            )
            assert detail["title"] == echo_id
            assert detail["backlog"] == [["HIGH", "0"], ["NORMAL", "0"], ["LOW", "0"]]
            assert detail["dead"] == ["demo.Echo.Poison"]
            assert detail["lanes"] == [["RELIABLE", "1", "0"]], detail  # its answers to the caller
            await page.evaluate("document.fonts.ready.then(() => true)")
            shot = tmp_path / "status-page.png"
            await page.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert shot.stat().st_size > 5000
    if os.environ.get("ACTR_UPDATE_GOLDEN") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGE)
