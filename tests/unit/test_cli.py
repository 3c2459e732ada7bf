"""The ``actr-trio`` command line: plain-text help, --version, --log-level."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import types
from importlib.metadata import version

import pytest

from actr_trio import cli as actr_cli

# reStructuredText that must never reach a terminal: inline literals, roles, directives.
REST_MARKUP = re.compile(r"``|:(class|func|meth|data|attr|mod|exc):|^\s*\.\. ", re.MULTILINE)


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        actr_cli.main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [(), ("signaling",), ("codegen",), ("demo",)])
def test_help_is_plain_text(capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    text = help_of(capsys, *command)
    assert not REST_MARKUP.search(text), text
    assert "DESIGN" not in text
    assert "--log-level" in text


def test_help_lists_the_commands_and_the_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys)
    for command in ("signaling", "codegen", "demo", "--version"):
        assert command in text
    assert "actr_trio.node" in text
    assert "aioice" in text


def test_maintainer_flags_stay_out_of_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--builtin" not in help_of(capsys, "codegen")
    assert "--role" not in help_of(capsys, "demo")
    # Still accepted (nox -s codegen and the demo's worker process use them).
    args = actr_cli.build_parser().parse_args(["codegen", "--builtin"])
    assert args.builtin


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        actr_cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"actr-trio {version('actr-trio')}\n"


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["fake"], "info"),
        (["--log-level", "debug", "fake"], "debug"),
        (["fake", "--log-level", "WARNING"], "warning"),
        (["--log-level", "error", "fake", "--log-level", "debug"], "debug"),
    ],
)
def test_log_level_before_or_after_the_command(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], level: str
) -> None:
    seen: list[str] = []
    module = types.ModuleType("fake_log_command")
    module.add_arguments = lambda parser: None  # type: ignore[attr-defined]
    module.run = lambda args: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(actr_cli._COMMANDS, "fake", (module.__name__, "a test command"))
    monkeypatch.setattr(actr_cli, "configure_logging", seen.append)
    assert actr_cli.main(argv) == 0
    assert seen == [level]


def test_an_unknown_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        actr_cli.build_parser().parse_args(["--log-level", "loud", "demo"])
    assert info.value.code == 2
    assert "--log-level" in capsys.readouterr().err


LEVELS_SCRIPT = """
import logging, sys
from actr_trio.cli import configure_logging
configure_logging(sys.argv[1])
names = ("actr_trio.node", "actr_trio.link", "aioice.ice", "aiortc.rtcpeerconnection")
print(" ".join(logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in names))
logging.getLogger("actr_trio.node").info("an info line")
"""


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("info", "INFO INFO WARNING WARNING"),
        ("debug", "DEBUG DEBUG DEBUG DEBUG"),
        ("warning", "WARNING WARNING WARNING WARNING"),
    ],
)
def test_configure_logging_quiets_the_webrtc_libraries_unless_debug(
    level: str, expected: str
) -> None:
    # A fresh process: the CLI configures logging only where nothing else did.
    out = subprocess.run(
        [sys.executable, "-c", LEVELS_SCRIPT, level],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split("\n")[0] == expected
    assert ("INFO actr_trio.node: an info line" in out.stderr) == (level != "warning")


def test_demo_worker_inherits_the_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    from actr_trio import _demo

    seen: dict[str, object] = {}

    def fake_run(fn: object) -> None:
        seen.update(fn.keywords)  # type: ignore[attr-defined]

    monkeypatch.setattr(_demo.trio, "run", fake_run)
    args = argparse.Namespace(log_level="debug", local=False, role="main", signaling=None)
    assert _demo.run(args) == 0
    command = seen["worker_command"]
    assert isinstance(command, list)
    assert command[command.index("--log-level") + 1] == "debug"
