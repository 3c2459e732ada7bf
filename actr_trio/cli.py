"""``actr-trio``: the command line (signaling server, code generation, demo).

Help texts here are plain text (argparse prints them as written), not reStructuredText.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

# subcommand -> module with add_arguments(parser) and run(args) -> int (and optionally a plain
# text DESCRIPTION); imported lazily so that `actr-trio codegen` never imports aiortc and
# `actr-trio signaling` never imports grpc_tools.
_COMMANDS = {
    "signaling": ("actr_trio.signaling._cli", "run the signaling server"),
    "codegen": (
        "actr_trio.codegen._cli",
        "generate protobuf classes, handler bases and client stubs",
    ),
    "inspect": (
        "actr_trio.signaling._inspect_cli",
        "list a realm's nodes and what they report (backlog, handled rate)",
    ),
    "demo": ("actr_trio._demo", "run the demo: nodes exchanging RPCs, priorities and a stream"),
}

DESCRIPTION: Final = """\
actr-trio runs actr actor nodes on Trio. This command runs the signaling server
that nodes register with, lists a realm's nodes, generates code from .proto
services, or runs a demo.

Run "actr-trio COMMAND --help" for the options of one command."""

EPILOG: Final = """\
logging:
  Log lines go to stderr. --log-level (before or after COMMAND) sets the level of
  actr_trio's loggers: actr_trio.node, actr_trio.link, actr_trio.transport,
  actr_trio.signaling, actr_trio.mailbox and actr_trio.streams. The WebRTC
  libraries' own loggers (aiortc, aioice) stay at WARNING unless the level is debug."""

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL: Final = "info"
# Third-party loggers that are chatty at INFO (ICE candidate pairs, DTLS states): WARNING
# unless the user asked for debug.
QUIET_LOGGERS: Final = ("aioice", "aiortc")
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def version() -> str:
    """The installed actr-trio version (from its package metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("actr-trio")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_log_level(parser: argparse.ArgumentParser, *, default: str) -> None:
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        type=str.lower,
        help=f"lowest level of the log lines written to stderr (default: {DEFAULT_LOG_LEVEL})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``actr-trio`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="actr-trio",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actr-trio {version()}")
    _add_log_level(parser, default=DEFAULT_LOG_LEVEL)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, (module_name, help_text) in _COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=help_text,
            description=getattr(module, "DESCRIPTION", help_text),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        # Also accepted after COMMAND; SUPPRESS keeps a value given before it.
        _add_log_level(command, default=argparse.SUPPRESS)
    return parser


def configure_logging(level_name: str) -> None:
    """Write actr_trio's log lines at ``level_name`` and above to stderr; the WebRTC libraries'
    own loggers at WARNING unless ``level_name`` is ``"debug"``.

    Like :func:`logging.basicConfig`, it does nothing when logging is already configured (the
    root logger has handlers): the host's configuration wins.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    level = logging.getLevelNamesMapping()[level_name.upper()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actr-trio`` command."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    module = importlib.import_module(_COMMANDS[args.command][0])
    try:
        result: int = module.run(args)
    except Exception as exc:
        status = _report_actr_error(args.command, exc)
        if status is None:
            raise  # not ours to explain: a bug keeps its traceback
        return status
    return result


def _report_actr_error(command: str, exc: Exception) -> int | None:
    """For an ``ActrError`` (alone, or alone in a group): one line on stderr, then the exit
    status, 2 for a configuration error and 1 otherwise. ``None`` for anything else."""
    from ._groups import sole_exception
    from .errors import ActrError, ConfigError

    error = sole_exception(exc) if isinstance(exc, BaseExceptionGroup) else exc
    if not isinstance(error, ActrError):
        return None
    sys.stderr.write(f"actr-trio {command}: error: {error}\n")
    return 2 if isinstance(error, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
