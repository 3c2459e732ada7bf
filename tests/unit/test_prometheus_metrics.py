"""A node's Prometheus metrics (Config.metrics): scraped over real HTTP on 127.0.0.1 and parsed
with prometheus_client's own parser; the figures must match what the test made happen."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import actr_trio._metrics_http
from actr_trio import ActrType, Config, Context, Priority, Workload, route
from actr_trio._metrics import split_address
from actr_trio.errors import ConfigError, MetricsUnavailable, Retryable, RouteNotFound
from actr_trio.testing import LocalRealm

ECHO = "acme.Echo.Echo"
FLAKY = "acme.Echo.Flaky"
ANY_PORT = "127.0.0.1:0"
BOUND = 30  # seconds per test: sockets are real, so the clock is too
CALLS = 7


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    def __init__(self) -> None:
        self.hold = False
        self.handled = 0
        self.released = trio.Event()
        self.expect = 0
        self.all_handled = trio.Event()

    @route(ECHO)
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        if self.hold:
            await self.released.wait()  # until cancelled by the shutdown
        self.handled += 1
        if self.handled == self.expect:
            self.all_handled.set()
        return request

    @route(FLAKY)
    async def flaky(self, request: bytes, ctx: Context) -> bytes:
        raise Retryable("never works")


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


async def http(address: tuple[str, int] | None, request: bytes) -> tuple[int, bytes, bytes]:
    """Send ``request`` raw; the status, the head and the body of the answer (read to EOF)."""
    assert address is not None
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def scrape(address: tuple[str, int] | None) -> dict[str, Metric]:
    status, head, body = await http(address, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
    assert status == 200, head
    assert b"content-type: text/plain; version=0.0.4" in head.lower()
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The value of the sample named ``sample`` with exactly ``labels``; 0 if absent."""
    family = families[_family_of(sample, families)]
    found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else 0.0


def _family_of(sample: str, families: Iterable[str]) -> str:
    return max((name for name in families if sample.startswith(name)), key=len)


async def test_a_scrape_shows_what_the_node_accepted_handled_refused_and_dead_lettered() -> None:
    echo = Echo()
    with trio.fail_after(BOUND):
        async with (
            LocalRealm("demo", max_attempts=2) as realm,
            realm.start(echo, metrics=ANY_PORT) as a,
            realm.start(Caller(), metrics=ANY_PORT) as b,
        ):
            for _ in range(CALLS):
                assert await b.call(a.actr_id, ECHO, b"x") == b"x"
            await b.tell(a.actr_id, ECHO, b"t", priority=Priority.HIGH)
            with pytest.raises(RouteNotFound):
                await b.call(a.actr_id, "acme.Echo.Nope", b"")
            await b.tell(a.actr_id, FLAKY, b"")  # run twice, then dead-lettered
            await trio.testing.wait_all_tasks_blocked()
            assert echo.handled == CALLS + 1
            assert a.statistics().mailbox.dead_letters == 1

            m = await scrape(a.metrics_address)
            caller = await scrape(b.metrics_address)

    normal = {"priority": "normal"}
    assert value(m, "actr_node_info", actr_id=str(a.actr_id), type="acme:echo") == 1
    assert value(m, "actr_envelopes_accepted_total", route=ECHO, **normal) == CALLS
    assert value(m, "actr_envelopes_accepted_total", route=ECHO, priority="high") == 1
    assert value(m, "actr_envelopes_accepted_total", route=FLAKY, **normal) == 1
    assert value(m, "actr_envelopes_handled_total", route=ECHO, **normal) == CALLS
    assert value(m, "actr_envelopes_handled_total", route=ECHO, priority="high") == 1
    assert value(m, "actr_envelopes_handled_total", route=FLAKY, **normal) == 0  # never finished
    assert value(m, "actr_envelopes_dead_lettered_total", route=FLAKY, **normal) == 1
    # A route the workload does not have is never a label of its own (a peer picks it).
    refused = {"route": "unknown", "reason": "route_not_found", **normal}
    assert value(m, "actr_envelopes_refused_total", **refused) == 1
    assert value(m, "actr_handler_latency_seconds_count", route=ECHO) == CALLS + 1
    assert value(m, "actr_handler_latency_seconds_count", route=FLAKY) == 2  # both attempts
    assert value(m, "actr_handler_latency_seconds_bucket", route=ECHO, le="+Inf") == CALLS + 1
    assert 0 < value(m, "actr_handler_latency_seconds_sum", route=ECHO) < BOUND
    for priority in ("high", "normal", "low"):
        assert value(m, "actr_mailbox_depth", priority=priority) == 0
    assert value(m, "actr_mailbox_dead_letters") == 1
    assert m["actr_envelopes_accepted"].type == "counter"
    assert m["actr_handler_latency_seconds"].type == "histogram"
    assert m["actr_mailbox_depth"].type == "gauge"

    # The caller times its calls per target type and lane (the refused one is not an answer).
    target = {"target_type": "acme:echo", "lane": "reliable"}
    assert value(caller, "actr_call_latency_seconds_count", **target) == CALLS
    buckets = [
        s.value
        for s in caller["actr_call_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["target_type"] == "acme:echo"
    ]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == CALLS
    # Handed over in process and taken: the calls and the two tells (not the refused call).
    assert value(caller, "actr_envelopes_sent_total", path="direct") == CALLS + 2


async def test_the_wire_path_counts_packets_and_bytes_per_lane_and_direction() -> None:
    with trio.fail_after(BOUND):
        async with (
            LocalRealm("demo", direct=False) as realm,
            realm.start(Echo(), metrics=ANY_PORT) as a,
            realm.start(Caller(), metrics=ANY_PORT) as b,
        ):
            for _ in range(CALLS):
                await b.call(a.actr_id, ECHO, b"x" * 100)
            caller = await scrape(b.metrics_address)
            callee = await scrape(a.metrics_address)
    lane = {"transport": "loopback", "lane": "reliable"}
    # Each request (at least 100 payload bytes) goes out of the caller and into the callee.
    assert value(caller, "actr_transport_packets_total", direction="out", **lane) >= CALLS
    assert value(caller, "actr_transport_bytes_total", direction="out", **lane) >= 100 * CALLS
    assert value(callee, "actr_transport_packets_total", direction="in", **lane) >= CALLS
    assert value(callee, "actr_transport_bytes_total", direction="in", **lane) >= 100 * CALLS
    assert value(caller, "actr_envelopes_sent_total", path="wire") >= CALLS
    assert value(callee, "actr_envelopes_handled_total", route=ECHO, priority="normal") == CALLS


async def test_envelopes_left_by_a_previous_run_are_counted_as_replayed(tmp_path: Path) -> None:
    echo = Echo()
    echo.hold = True
    with trio.fail_after(BOUND):
        async with LocalRealm("demo", shutdown_grace=0.2) as realm, realm.start(Caller()) as b:
            async with realm.start(echo, data_dir=tmp_path / "echo") as a:
                for _ in range(3):
                    await b.tell(a.actr_id, ECHO, b"kept")  # the first blocks the rest
            assert echo.handled == 0
            echo.hold, echo.expect = False, 3
            async with realm.start(echo, data_dir=tmp_path / "echo", metrics=ANY_PORT) as a:
                await echo.all_handled.wait()  # (the SQLite writer's thread: no idle test)
                m = await scrape(a.metrics_address)
    normal = {"route": ECHO, "priority": "normal"}
    assert value(m, "actr_envelopes_replayed_total", **normal) == 3
    assert value(m, "actr_envelopes_handled_total", **normal) == 3
    assert value(m, "actr_envelopes_accepted_total", **normal) == 0  # accepted in the first run


async def test_the_endpoint_answers_only_get_metrics_and_bounds_what_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(actr_trio._metrics_http, "CONNECTION_TIMEOUT", 0.5)
    with trio.fail_after(BOUND):
        async with LocalRealm("demo") as realm, realm.start(Echo(), metrics=ANY_PORT) as a:
            address = a.metrics_address
            assert address is not None
            assert address[0] == "127.0.0.1"
            assert address[1] > 0
            get = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"
            assert (await http(address, get % b"/"))[0] == 404
            assert (await http(address, get % b"/metrics/x"))[0] == 404
            status, head, _ = await http(address, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            assert status == 405
            assert b"\r\nallow: GET, HEAD\r\n" in head
            assert (await http(address, b"\x00\x01 nonsense\r\n\r\n"))[0] == 400
            huge = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
            assert (await http(address, huge))[0] == 431
            status, _, body = await http(address, b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (status, body) == (200, b"")
            # A client that says nothing is cut off after the connection timeout.
            async with await trio.open_tcp_stream(*address) as silent:
                assert await silent.receive_some() == b""
            # After all that the node still serves (and its metrics too).
            assert "actr_envelopes_accepted" in await scrape(address)


async def test_without_the_extra_a_node_with_metrics_fails_to_start_with_a_typed_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import prometheus_client` (and its modules) raise ImportError.
    for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "actr_trio._metrics_export", raising=False)
    with trio.fail_after(BOUND):
        async with LocalRealm("demo") as realm:
            with pytest.raises(MetricsUnavailable, match=r"actr-trio\[metrics\]"):
                async with realm.start(Echo(), metrics=ANY_PORT):
                    pytest.fail("started without prometheus-client")
            async with realm.start(Echo()) as a:  # without metrics nothing needs it
                assert a.metrics_address is None
    assert issubclass(MetricsUnavailable, ConfigError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text) == expected
    assert Config(metrics=text).metrics == text


@pytest.mark.parametrize("text", ["9464", ":9464", "::1:9464", "host:99999", "host:x", "[]:1"])
def test_bad_addresses_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"Config\.metrics"):
        Config(metrics=text)


@pytest.mark.parametrize(
    ("address", "hidden", "message"),
    [
        ("nowhere", False, "metrics address: 'nowhere' is not HOST:PORT"),
        (ANY_PORT, True, "metrics need prometheus-client: pip install 'actr-trio[metrics]'"),
    ],
)
def test_signaling_metrics_option_errors_exit_2_before_the_server_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    address: str,
    hidden: bool,
    message: str,
) -> None:
    from actr_trio.cli import build_parser
    from actr_trio.signaling._cli import run

    if hidden:
        for name in [n for n in sys.modules if n.split(".")[0] == "prometheus_client"]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.delitem(sys.modules, "actr_trio._metrics_export", raising=False)
    args = build_parser().parse_args(["signaling", "--port", "0", "--metrics", address])
    assert run(args) == 2
    assert capsys.readouterr().err == f"actr-trio signaling: {message}\n"


def test_the_default_transport_reports_frames_and_links_of_each_half() -> None:
    # Read by duck typing at scrape time: the default transport's WebRTC and WebSocket halves
    # appear apart (nothing runs: every figure is 0, but each label is there).
    from actr_trio._metrics_export import NodeCollector
    from actr_trio._metrics_transport import MeteredTransport
    from actr_trio.transport._dual import DualTransport

    transport = MeteredTransport(DualTransport(Config()))
    collector = NodeCollector(lambda: pytest.fail("not read"), None, transport, "acme:echo")  # type: ignore[arg-type]
    families = {f.name: f for f in collector._transport_figures()}
    frames = {
        (s.labels["transport"], s.labels["direction"])
        for s in families["actr_transport_frames"].samples
    }
    assert frames == {(half, way) for half in ("webrtc", "websocket") for way in ("in", "out")}
    for name in ("actr_links_open", "actr_links_negotiating"):
        assert {s.labels["transport"] for s in families[name].samples} == {"webrtc", "websocket"}
