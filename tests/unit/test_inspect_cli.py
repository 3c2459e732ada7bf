"""The command lines of ``actr-trio inspect`` and ``actr-trio signaling --status``: their
configuration errors (exit 2, one line, before any connection) and the inspect table."""

from __future__ import annotations

import pytest

from actr_trio._heartbeat_report import HeartbeatReport
from actr_trio._ids import ActrId, ActrType
from actr_trio.cli import main
from actr_trio.signaling._cli import REALMS_ENV
from actr_trio.signaling._inspect_cli import REALM_ENV, render_table
from actr_trio.signaling._reports import NodeStatus


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ws://127.0.0.1:1"], "--realm is required"),
        (["http://127.0.0.1:1", "--realm", "demo"], "must look like ws://HOST:PORT"),
        (["ws://127.0.0.1:1", "--realm", "demo", "--secret-file", "/nonexistent"], "cannot read"),
    ],
    ids=["no-realm", "not-ws", "missing-secret-file"],
)
def test_inspect_configuration_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv(REALM_ENV, raising=False)
    assert main(["inspect", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("actr-trio inspect: error: ")
    assert message in err


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("8766", "expected HOST:PORT"),
        ("127.0.0.1:http", "expected HOST:PORT"),
        ("192.0.2.1:8766", "needs realms with secrets"),
    ],
    ids=["no-host", "port-not-a-number", "public-without-realms"],
)
def test_status_configuration_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: str, message: str
) -> None:
    monkeypatch.delenv(REALMS_ENV, raising=False)
    assert main(["signaling", "--port", "0", "--status", status]) == 2
    err = capsys.readouterr().err
    assert err.startswith("actr-trio signaling: ")
    assert message in err


def test_the_table_has_a_line_per_node_and_dashes_before_a_report() -> None:
    echo = ActrId("demo", 1, ActrType("acme", "echo"))
    caller = ActrId("demo", 2, ActrType("acme", "caller"))
    rows = [
        NodeStatus(echo, 880.0, 0.4, HeartbeatReport((1, 2, 3), 8120, 8132), 415.25),
        NodeStatus(caller, 999.0, 1.25, None, 0.0),
    ]
    lines = render_table(rows, now=1000.0).splitlines()
    assert [line.split() for line in lines] == [
        ["TYPE", "ID", "SINCE", "HEARTBEAT", "BACKLOG", "HANDLED", "HANDLED/S"],
        ["acme:echo", "acme:echo#1@demo", "2m", "ago", "0.4s", "ago", "6", "8120", "415.2"],
        ["acme:caller", "acme:caller#2@demo", "1s", "ago", "1.2s", "ago", "-", "-", "0.0"],
    ]
    assert render_table([], now=0.0).endswith("(no node registered in this realm)\n")
