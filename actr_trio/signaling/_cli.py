"""``actr-trio signaling``: run the signaling server until SIGINT/SIGTERM.

Top-level imports stay light (argparse only): ``actr-trio --help`` must not import Trio.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the signaling server until SIGINT or SIGTERM. Nodes register with it (it
assigns their ids), discover each other by type within their realm, and relay
the offers, answers and ICE candidates that open their peer-to-peer links.

Once listening it prints "actr-trio signaling listening on ws://HOST:PORT".
With no --realm and no --realms-file it admits any realm (a development default
that it logs as a warning).

example:
  actr-trio signaling --port 8765 --realm demo:s3cret"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``signaling`` subcommand's options to ``parser``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port; 0 picks a free one (default 8765)"
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite file for realms and registrations (default: in memory)",
    )
    parser.add_argument(
        "--realm",
        action="append",
        default=[],
        metavar="NAME:SECRET",
        help="admit realm NAME to nodes proving SECRET (repeatable); with no realms any realm is admitted",
    )
    parser.add_argument(
        "--realms-file",
        default=None,
        metavar="FILE",
        help='realms from a TOML file (NAME = "SECRET", at top level or under [realms]) or NAME:SECRET lines',
    )
    parser.add_argument(
        "--presence-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds of silence before a node disappears from discovery (default 15)",
    )


def parse_realm(text: str) -> tuple[str, str]:
    """Split ``NAME:SECRET`` (the secret may contain ``:``).

    Raises:
        ConfigError: no ``:``, or an empty name or secret.
    """
    from ..errors import ConfigError

    name, sep, secret = text.partition(":")
    name = name.strip()
    if not sep or not name or not secret:
        raise ConfigError(f"realm {text.split(':', 1)[0]!r}: expected NAME:SECRET")
    return name, secret


def load_realms_file(path: str) -> dict[str, str]:
    """Read realms from ``path``: TOML (``NAME = "SECRET"`` at top level or under ``[realms]``),
    or else lines of ``NAME:SECRET`` (blank lines and ``#`` comments ignored).

    Raises:
        ConfigError: unreadable file or invalid entry.
    """
    import tomllib

    from ..errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read realms file {path!r}: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        realms: dict[str, str] = {}
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, secret = parse_realm(line)
                realms[name] = secret
        return realms
    table = data.get("realms", data)
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f'realms file {path!r}: expected NAME = "SECRET" entries')
    return {str(k): str(v) for k, v in table.items()}


def run(args: argparse.Namespace) -> int:
    """Run the server; prints ``actr-trio signaling listening on ws://HOST:PORT`` once listening.

    Returns 0 after SIGINT/SIGTERM, 1 when the address cannot be bound, 2 on a configuration
    error.
    """
    import logging
    import sys

    import trio

    from .._logging import SIGNALING
    from ..errors import ConfigError
    from ._server import SignalingServer

    try:
        realms: dict[str, str] = {}
        if args.realms_file:
            realms.update(load_realms_file(args.realms_file))
        for text in args.realm:
            name, secret = parse_realm(text)
            realms[name] = secret
        server = SignalingServer(
            host=args.host,
            port=args.port,
            realms=realms or None,
            db_path=args.db,
            presence_timeout=args.presence_timeout,
        )
    except ConfigError as exc:
        sys.stderr.write(f"actr-trio signaling: {exc}\n")
        return 2

    async def main() -> int:
        import signal

        result = 0
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(server.run)
                except OSError as exc:
                    sys.stderr.write(
                        f"actr-trio signaling: cannot listen on {args.host}:{args.port}: {exc}\n"
                    )
                    result = 1
                    nursery.cancel_scope.cancel(reason="cannot listen")
                else:
                    sys.stdout.write(f"actr-trio signaling listening on {server.url}\n")
                    sys.stdout.flush()
                    async for signum in signals:
                        logging.getLogger(SIGNALING).info(
                            "received %s; stopping", signal.Signals(signum).name
                        )
                        nursery.cancel_scope.cancel(reason="signal received")
                        break
        return result

    return trio.run(main)
