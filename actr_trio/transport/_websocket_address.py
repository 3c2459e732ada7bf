"""The listen address a node advertises for direct WebSocket links: ``HOST:PORT``.

Sans-IO. The same check runs where an address enters: ``Config.listen`` (what to bind), the
signaling server reading a ``Register.listen`` (hostile client), and the node reading a
``Peers.addresses`` entry (hostile server): so a node never dials anything but a host name or
IP literal and a port in 1..65535.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = ["MAX_ADDRESS", "format_address", "parse_address"]

#: Longest address text accepted: a 253-character DNS name, brackets, colon and 5 digits.
MAX_ADDRESS: Final = 262
# A DNS name (labels of letters, digits and hyphens) or an IPv4 literal.
_HOST_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def parse_address(text: str, *, allow_any_port: bool = False) -> tuple[str, int]:
    """``(host, port)`` from ``"HOST:PORT"`` or ``"[IPv6]:PORT"``.

    Args:
        allow_any_port: accept port 0 ("pick a free port", for ``Config.listen`` only).

    Raises:
        ValueError: saying what is wrong (too long, no port, port out of range, bad host).
    """
    if not isinstance(text, str):
        raise ValueError("is not a string")
    if len(text) > MAX_ADDRESS:
        raise ValueError(f"is longer than {MAX_ADDRESS} characters")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT (or [IPv6]:PORT)")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"has port {port_text!r}, not a number")
    port = int(port_text)
    if not (0 if allow_any_port else 1) <= port <= 65535:
        raise ValueError(f"has port {port}, out of range ({0 if allow_any_port else 1}-65535)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("has an unclosed [ in its host")
        try:
            literal = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"has {host!r}, not an IPv6 address") from None
        return str(literal), port
    if not _HOST_RE.fullmatch(host) or ".." in host:
        raise ValueError(f"has host {host[:64]!r}, not a host name or IPv4 address")
    return host, port


def format_address(host: str, port: int) -> str:
    """The advertised text for ``host`` and ``port`` (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
