"""Logging: public logger names, lifecycle lines at INFO, rate-limited resend lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

import actr_trio
from actr_trio import ActrId, ActrType, Context, Lane, Workload, route
from actr_trio._envelope import REQUEST, TELL, Envelope, decode_packet
from actr_trio._logging import LINK, LOGGER_NAMES, RateLimiter
from actr_trio.errors import DeadlineExceeded
from actr_trio.testing import LocalRealm, TransportWrapper
from actr_trio.transport import Transport

PACKAGE = Path(actr_trio.__file__).parent


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route("demo.Echo.Echo")
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


def test_no_module_logs_under_its_private_name() -> None:
    pattern = re.compile(r"getLogger\(\s*__name__\s*\)")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "_proto" not in path.parts and pattern.search(path.read_text())
    ]
    assert offenders == []


@pytest.mark.usefixtures("envelope_path")
async def test_lifecycle_lines_at_info_under_public_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="actr_trio"):
        async with (
            LocalRealm() as realm,
            realm.start(Echo()) as echo,
            realm.start(Caller()) as caller,
        ):
            assert await caller.call(echo.actr_id, "demo.Echo.Echo", b"hi") == b"hi"
    assert {r.name for r in caplog.records} <= set(LOGGER_NAMES)
    text = caplog.text
    for line in (
        f"{echo.actr_id} started (Echo, in-memory mailbox)",
        f"linked to {echo.actr_id} {'in process' if realm.direct else 'over loopback'}",
        f"{caller.actr_id} shutting down: draining 0 accepted envelopes",
        f"{caller.actr_id} said goodbye to 1 of 1 peers",
        f"{caller.actr_id} said goodbye (shutting down)",
        f"{caller.actr_id} stopped",
    ):
        assert line in text, line


def test_rate_limiter_writes_one_line_per_key_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    limiter = RateLimiter(lambda: now[0], interval=10)
    log = logging.getLogger(LINK)
    with caplog.at_level(logging.INFO, logger=LINK):
        for second in range(25):
            now[0] = 100.0 + second
            limiter.log(log, logging.INFO, "peer-a", "peer-a unreachable (%d)", second)
            if second == 3:
                limiter.log(log, logging.INFO, "peer-b", "peer-b unreachable")
    assert [r.getMessage() for r in caplog.records] == [
        "peer-a unreachable (0)",
        "peer-b unreachable",
        "peer-a unreachable (10) (9 similar lines suppressed in the last 10 s)",
        "peer-a unreachable (20) (9 similar lines suppressed in the last 10 s)",
    ]


def test_rate_limiter_remembers_a_bounded_number_of_keys() -> None:
    limiter = RateLimiter(lambda: 0.0, max_keys=3)
    log = logging.getLogger("test.rate")
    log.setLevel(logging.INFO)
    written = [limiter.log(log, logging.INFO, key, "x") for key in range(10)]
    assert all(written)
    assert len(limiter._slots) == 3
    with pytest.raises(ValueError, match="must be > 0"):
        RateLimiter(lambda: 0.0, interval=0)


class Blackhole(TransportWrapper):
    """Once ``silent`` is set, requests and tells this node sends are lost: the peer, still up,
    never acknowledges them, so the sender resends them until their deadline."""

    silent = False

    async def send(self, peer: ActrId, lane: Lane, packets: Sequence[bytes]) -> None:
        if self.silent:
            packets = [p for p in packets if not _is_request(p)]
            if not packets:
                await trio.lowlevel.checkpoint()
                return
        await self.inner.send(peer, lane, packets)


def _is_request(packet: bytes) -> bool:
    body = decode_packet(packet, max_payload=1 << 20).body
    return isinstance(body, Envelope) and body.kind in (REQUEST, TELL)


async def test_resend_lines_are_rate_limited(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    wrappers: list[Blackhole] = []

    def wrap(inner: Transport) -> Transport:
        wrappers.append(Blackhole(inner))
        return wrappers[-1]

    async with (
        LocalRealm() as realm,
        realm.start(Echo()) as echo,
        realm.start(Caller(), wrap_transport=wrap) as caller,
    ):
        assert await caller.call(echo.actr_id, "demo.Echo.Echo", b"1") == b"1"
        wrappers[0].silent = True
        # 60 virtual seconds of resending (every 2 s once the timeout has grown).
        with caplog.at_level(logging.INFO, logger=LINK), pytest.raises(DeadlineExceeded):
            await caller.call(echo.actr_id, "demo.Echo.Echo", b"2", timeout=60)
        resent = caller.statistics().outbound.retransmitted
    lines = [r.getMessage() for r in caplog.records if "no ack for" in r.getMessage()]
    # Unlimited, that would be a line per two timeouts: about 15 in 60 s. Limited: one per
    # 10 s, and the later ones count what they held back.
    assert resent >= 25
    assert 2 <= len(lines) <= 7, lines
    assert "suppressed" in lines[-1]
