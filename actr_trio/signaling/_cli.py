"""``actr-trio signaling``: run the signaling server until SIGINT/SIGTERM.

Realm secrets come from a file only its owner can read, or from the environment; never from
the command line, which every user of the machine can read (``ps``). Top-level imports stay
light (argparse only): ``actr-trio --help`` must not import Trio.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import ssl

    from ._limits import SignalingLimits
    from ._server import SignalingServer
    from ._status_page import StatusPage

#: Environment variable holding realms as ``NAME:SECRET`` entries (comma or space separated).
REALMS_ENV: Final = "ACTR_SIGNALING_REALMS"

#: The budget options: flag, SignalingLimits field, type, metavar, help (with the default,
#: which a unit test keeps equal to SignalingLimits'). Not imported from ``_limits`` here:
#: building the command line must stay light.
LIMIT_OPTIONS: Final[tuple[tuple[str, str, type, str, str], ...]] = (
    (
        "--max-connections",
        "max_connections",
        int,
        "N",
        "open connections at most; more are closed on accept (default 4096)",
    ),
    (
        "--max-connections-per-address",
        "max_connections_per_address",
        int,
        "N",
        "open connections from one address (IPv6: one /64) at most (default 256)",
    ),
    (
        "--hello-timeout",
        "hello_timeout",
        float,
        "S",
        "seconds a connection has to complete its handshake and register (default 5)",
    ),
    (
        "--rate",
        "message_rate",
        float,
        "R",
        "frames per second one connection may send; more are refused (default 50)",
    ),
    (
        "--burst",
        "message_burst",
        int,
        "B",
        "frames one connection may send at once; a connection refused this many more "
        "than the rate pays back is closed (default 200)",
    ),
    (
        "--discovery-rate",
        "discovery_rate",
        float,
        "PEERS",
        "peers per second discovery answers to one connection may hold (default 2000)",
    ),
    (
        "--discovery-burst",
        "discovery_burst",
        int,
        "PEERS",
        "peers one connection may be sent at once in discovery answers (default 10000)",
    ),
    (
        "--relay-rate",
        "relay_rate",
        float,
        "R",
        "relays (offers, answers) per second from one node to one target (default 1)",
    ),
    (
        "--relay-burst",
        "relay_burst",
        int,
        "B",
        "relays from one node to one target at once (default 10)",
    ),
    (
        "--max-relay-size",
        "max_relay_payload",
        int,
        "BYTES",
        "largest relay payload forwarded; larger ones are refused (default 32768)",
    ),
    (
        "--outbox-bytes",
        "outbox_bytes",
        int,
        "BYTES",
        "bytes queued for one connection at most; a quarter for relays from others "
        "(default 1048576)",
    ),
)

DESCRIPTION = f"""\
Run the signaling server until SIGINT or SIGTERM. Nodes register with it (it
assigns their ids), discover each other by type within their realm, and relay
the offers, answers and ICE candidates that open their peer-to-peer links.

Once listening it prints "actr-trio signaling listening on ws://HOST:PORT"
(wss:// with --tls-cert). Without TLS the connection is not encrypted: use it
only on a network you trust.

It signs each registered node's credential with its issuer key, kept in
--issuer-key (default: beside --db, as DB.issuer_key, created with mode 600;
without --db a new key each run). Its second line of output is
"actr-trio signaling issuer key HEX (key id ID)": set HEX as the nodes'
Config.trust_anchor (ACTR_TRUST_ANCHOR). --print-issuer-key prints HEX and
exits.

Realms and their secrets (at least 16 bytes each) come from --realms-file (a
file only its owner may read: chmod 600) and from the {REALMS_ENV}
environment variable ("NAME:SECRET" entries separated by commas or spaces).
With neither it admits any realm (a development default that it logs as a
warning).

example:
  {REALMS_ENV}="demo:$(cat demo.secret)" actr-trio signaling --port 8765 \\
      --tls-cert server.pem --tls-key server.key"""


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
        "--realms-file",
        default=None,
        metavar="FILE",
        help='realms from a TOML file (NAME = "SECRET", at top level or under [realms]) or '
        "NAME:SECRET lines; the file must not be accessible by other users (chmod 600)",
    )
    parser.add_argument(
        "--realm",
        action="append",
        default=[],
        metavar="NAME:SECRET",
        help=f"deprecated: puts the secret in the process list, readable by every user; use "
        f"--realms-file or {REALMS_ENV}",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="serve wss:// with this certificate chain (PEM; may also hold the key)",
    )
    parser.add_argument(
        "--tls-key",
        default=None,
        metavar="PEM",
        help="the private key of --tls-cert, if it is in a separate file",
    )
    parser.add_argument(
        "--issuer-key",
        default=None,
        metavar="PATH",
        help="the Ed25519 key that signs credentials, created (mode 600) if missing (default: "
        "DB.issuer_key beside --db; without --db, a new key each run)",
    )
    parser.add_argument(
        "--credential-lifetime",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds a node's credential is valid; nodes get a fresh one after two thirds "
        "of it (default 3600)",
    )
    parser.add_argument(
        "--print-issuer-key",
        action="store_true",
        help="print the issuer public key (hex, for Config.trust_anchor), creating the key "
        "file if needed, and exit",
    )
    parser.add_argument(
        "--presence-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds of silence before a node disappears from discovery (default 15)",
    )
    parser.add_argument(
        "--status",
        default=None,
        metavar="HOST:PORT",
        help="also serve the read-only realm status page at http://HOST:PORT/ (https with "
        "--tls-cert); off by default. On a loopback HOST it shows every realm; elsewhere each "
        "request must give REALM:SECRET (HTTP Basic) and sees that realm only",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="HOST:PORT",
        help="also serve Prometheus metrics at http://HOST:PORT/metrics (needs "
        "pip install 'actr-trio[metrics]'); off by default",
    )
    budgets = parser.add_argument_group(
        "budgets", "limits on connections, rates and sizes (docs/operations.md)"
    )
    for flag, field, kind, metavar, text in LIMIT_OPTIONS:
        budgets.add_argument(flag, dest=field, type=kind, default=None, metavar=metavar, help=text)


def limits_from_args(args: argparse.Namespace) -> SignalingLimits:
    """The server's budgets: SignalingLimits' defaults, with the options given.

    Raises:
        ConfigError: an option out of range (named by its field).
    """
    from ._limits import SignalingLimits

    given = {field: getattr(args, field) for _, field, *_ in LIMIT_OPTIONS}
    return SignalingLimits(**{k: v for k, v in given.items() if v is not None})


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
        ConfigError: unreadable file, a file other users may access, or an invalid entry.
    """
    import tomllib

    from ..errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            _check_private(path, os.fstat(f.fileno()).st_mode)
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


def realms_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Realms from :data:`REALMS_ENV`: ``NAME:SECRET`` entries separated by commas or
    whitespace (so a secret given this way holds neither); empty or unset gives none.

    Raises:
        ConfigError: an entry that is not ``NAME:SECRET`` (named by realm, never by secret).
    """
    from ..errors import ConfigError

    realms: dict[str, str] = {}
    for entry in environ.get(REALMS_ENV, "").replace(",", " ").split():
        try:
            name, secret = parse_realm(entry)
        except ConfigError as exc:
            raise ConfigError(f"{REALMS_ENV}: {exc}") from None
        realms[name] = secret
    return realms


def _check_private(path: str, mode: int) -> None:
    """Refuse a secrets file that other users may read or replace."""
    from ..errors import ConfigError

    if sys.platform != "win32" and mode & 0o077:
        raise ConfigError(
            f"realms file {path!r} is accessible by other users (mode {mode & 0o777:04o}); "
            f"it holds secrets: run 'chmod 600 {path}'"
        )


def server_ssl_context(cert: str, key: str | None) -> ssl.SSLContext:
    """A server-side TLS context from a PEM certificate chain and its key.

    Raises:
        ConfigError: a file that does not load (unreadable, not PEM, key does not match).
    """
    import ssl

    from ..errors import ConfigError

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        files = cert if key is None else f"{cert} and {key}"
        raise ConfigError(f"cannot load the TLS certificate and key from {files}: {exc}") from exc
    return context


def _realms(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str] | None:
    import logging

    from .._logging import SIGNALING

    realms: dict[str, str] = {}
    if args.realms_file:
        realms.update(load_realms_file(args.realms_file))
    realms.update(realms_from_env(environ))
    if args.realm:
        logging.getLogger(SIGNALING).warning(
            "--realm NAME:SECRET is deprecated: the secret is visible in the process list to "
            "every user of this machine; use --realms-file (chmod 600) or %s",
            REALMS_ENV,
        )
    for text in args.realm:
        name, secret = parse_realm(text)
        realms[name] = secret
    return realms or None


def run(args: argparse.Namespace) -> int:
    """Run the server; prints ``actr-trio signaling listening on ws://HOST:PORT`` (``wss://``
    with TLS) once listening.

    Returns 0 after SIGINT/SIGTERM, 1 when the address cannot be bound, 2 on a configuration
    error.
    """
    import logging

    import trio

    from .._identity import key_id
    from .._logging import SIGNALING
    from ..errors import ConfigError
    from ._metrics import metrics_address, serve_metrics
    from ._server import SignalingServer

    if args.print_issuer_key:
        return print_issuer_key(args)
    try:
        if args.tls_key and not args.tls_cert:
            raise ConfigError("--tls-key needs --tls-cert")
        ssl_context = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        realms = _realms(args, os.environ)
        server = SignalingServer(
            host=args.host,
            port=args.port,
            realms=realms,
            db_path=args.db,
            presence_timeout=args.presence_timeout,
            ssl_context=ssl_context,
            issuer_key_path=args.issuer_key,
            credential_lifetime=args.credential_lifetime,
            limits=limits_from_args(args),
        )
        status = status_page_from_args(args, server, realms, ssl_context)
        if args.metrics is not None:
            metrics_address(args.metrics)  # MetricsUnavailable, or a bad address, before start
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
                except ConfigError as exc:  # the issuer key file
                    sys.stderr.write(f"actr-trio signaling: {exc}\n")
                    result = 2
                    nursery.cancel_scope.cancel(reason="bad issuer key")
                else:
                    issuer = server.issuer_public_key
                    sys.stdout.write(
                        f"actr-trio signaling listening on {server.url}\n"
                        f"actr-trio signaling issuer key {issuer.hex()} (key id {key_id(issuer)})\n"
                    )
                    if status is not None:
                        try:
                            await nursery.start(status.run)
                        except OSError as exc:
                            sys.stderr.write(
                                f"actr-trio signaling: cannot serve the status page on "
                                f"{args.status}: {exc}\n"
                            )
                            result = 1  # the signal loop below ends at once: cancelled
                            nursery.cancel_scope.cancel(reason="cannot serve the status page")
                        else:
                            sys.stdout.write(f"actr-trio signaling status page at {status.url}\n")
                    if args.metrics is not None:
                        try:
                            host, port = await nursery.start(serve_metrics, server, args.metrics)
                        except OSError as exc:
                            sys.stderr.write(
                                f"actr-trio signaling: cannot serve metrics on {args.metrics}: "
                                f"{exc}\n"
                            )
                            result = 1  # the signal loop below ends at once: cancelled
                            nursery.cancel_scope.cancel(reason="cannot serve metrics")
                        else:
                            shown = f"[{host}]" if ":" in host else host
                            sys.stdout.write(
                                f"actr-trio signaling metrics at http://{shown}:{port}/metrics\n"
                            )
                    sys.stdout.flush()
                    async for signum in signals:
                        logging.getLogger(SIGNALING).info(
                            "received %s; stopping", signal.Signals(signum).name
                        )
                        nursery.cancel_scope.cancel(reason="signal received")
                        break
        return result

    return trio.run(main)


def status_page_from_args(
    args: argparse.Namespace,
    server: SignalingServer,
    realms: Mapping[str, str] | None,
    ssl_context: ssl.SSLContext | None,
) -> StatusPage | None:
    """The status page ``--status HOST:PORT`` asks for (``None`` without it).

    Raises:
        ConfigError: not HOST:PORT, or a non-loopback HOST without realms.
    """
    if not args.status:
        return None
    from ..errors import ConfigError
    from ._status_page import StatusPage

    host, sep, port = args.status.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--status {args.status!r}: expected HOST:PORT, e.g. 127.0.0.1:8766")
    return StatusPage(
        server, host=host.strip("[]"), port=int(port), realms=realms, ssl_context=ssl_context
    )


def print_issuer_key(args: argparse.Namespace) -> int:
    """``--print-issuer-key``: print the persisted issuer public key as hex (creating the key
    file if needed); 2 when there is no key file to print (no --db nor --issuer-key)."""
    from .._identity import IssuerKey
    from ..errors import ConfigError
    from ._server import issuer_key_file

    path = issuer_key_file(args.db, args.issuer_key)
    if path is None:
        sys.stderr.write(
            "actr-trio signaling: --print-issuer-key needs --db or --issuer-key (without them "
            "each run has a new key)\n"
        )
        return 2
    try:
        issuer = IssuerKey.load_or_create(path)
    except ConfigError as exc:
        sys.stderr.write(f"actr-trio signaling: {exc}\n")
        return 2
    sys.stdout.write(f"{issuer.public_bytes().hex()}\n")
    sys.stderr.write(f"issuer key id {issuer.key_id} from {path}\n")
    return 0
