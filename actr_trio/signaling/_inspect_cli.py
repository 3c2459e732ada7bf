"""``actr-trio inspect``: list a realm's nodes and what they last reported.

Top-level imports stay light (argparse only): building the command line must not import Trio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._reports import NodeStatus

#: Where the realm secret comes from (never the command line, which every user can read).
SECRET_ENV: Final = "ACTR_REALM_SECRET"
REALM_ENV: Final = "ACTR_REALM"

DESCRIPTION: Final = f"""\
List the nodes registered in a realm of a signaling server, with what each last
reported in its heartbeats: type, id, since when it is registered, how long ago
its last heartbeat came, its mailbox backlog and how many envelopes per second it
handles.

It proves the realm secret like a node does (from {SECRET_ENV}, or
--secret-file), but never registers: it only observes. --json prints one JSON
object for scripts ("realm", "nodes": one object per node with the backlog per
priority, lanes and recent dead letters too).

example:
  {SECRET_ENV}="$(cat demo.secret)" actr-trio inspect ws://127.0.0.1:8765 --realm demo"""

_COLUMNS: Final = ("TYPE", "ID", "SINCE", "HEARTBEAT", "BACKLOG", "HANDLED", "HANDLED/S")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` subcommand's options to ``parser``."""
    parser.add_argument("url", metavar="URL", help="the signaling server, ws://HOST:PORT or wss://")
    parser.add_argument(
        "--realm",
        default=None,
        help=f"the realm to list (default: ${REALM_ENV})",
    )
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="FILE",
        help=f"read the realm secret from FILE (default: ${SECRET_ENV})",
    )
    parser.add_argument(
        "--ca", default=None, metavar="PEM", help="CA certificates to verify a wss:// server"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _secret(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    from ..errors import ConfigError

    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read --secret-file {args.secret_file!r}: {exc}") from exc
    return environ.get(SECRET_ENV) or None


def run(args: argparse.Namespace) -> int:
    """List the realm's nodes; 0 on success, 1 when the server cannot be asked, 2 on a
    configuration error (raised as ``ConfigError``; ``actr-trio`` prints it)."""
    import json
    import ssl
    from functools import partial

    import trio

    from ..errors import ConfigError
    from ._inspect import inspect_realm

    realm = args.realm or os.environ.get(REALM_ENV)
    if not realm:
        raise ConfigError(f"--realm is required (or set {REALM_ENV})")
    if not args.url.startswith(("ws://", "wss://")):
        raise ConfigError(f"URL {args.url!r} must look like ws://HOST:PORT or wss://HOST:PORT")
    secret = _secret(args, os.environ)
    context = None
    if args.url.startswith("wss://"):
        try:
            context = ssl.create_default_context(cafile=args.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--ca {args.ca!r} cannot be loaded: {exc}") from exc
    rows = trio.run(partial(inspect_realm, args.url, realm, secret, ssl_context=context))
    if args.json:
        json.dump({"realm": realm, "nodes": [row.to_json() for row in rows]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(rows, now=time.time()))
    return 0


def render_table(rows: Sequence[NodeStatus], *, now: float) -> str:
    """``rows`` as aligned text columns (``-`` for a node that has not reported yet)."""
    lines = [_COLUMNS, *(_cells(row, now) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text = "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )
    return text if rows else text + "(no node registered in this realm)\n"


def _cells(row: NodeStatus, now: float) -> tuple[str, ...]:
    report: Any = row.report
    return (
        _printable(str(row.actr_id.type)),
        _printable(str(row.actr_id)),
        _duration(now - row.since) + " ago",
        f"{row.heartbeat_age:.1f}s ago",
        "-" if report is None else str(report.pending),
        "-" if report is None else str(report.handled),
        f"{row.handled_rate:.1f}",
    )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _printable(text: str) -> str:
    """Names come from nodes: no terminal control characters reach the operator's terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)
