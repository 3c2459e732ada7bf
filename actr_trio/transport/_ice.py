"""The one place that bends aioice's host-candidate gathering to ``Config.ice_addresses``.

aioice offers every interface address except loopback (``aioice.ice.get_host_addresses`` skips
127.0.0.1 and ::1), and aiortc offers no way to choose. Tests, examples and benchmarks must stay
on loopback, so we wrap that module-level function:

* :func:`hooked` installs the wrapper for as long as a transport runs (reference-counted, so
  several transports in one process share it) and puts the original back when the last leaves.
* :func:`host_addresses` sets the addresses for the *current context only* (a ``ContextVar``):
  aiortc gathers inside the asyncio task that runs ``setLocalDescription`` and the tasks it
  spawns, which all inherit the context, so two connections with different address lists (or
  code in the process that never asked) are not affected. Unset, the wrapper calls the original.

This touches an aioice internal, which is why ``pyproject.toml`` pins ``aioice==0.13.0``:
check this module (and its test that only 127.0.0.1 is offered) before moving the pin.
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import aioice.ice

__all__ = ["hooked", "host_addresses"]

_ADDRESSES: Final = contextvars.ContextVar[tuple[str, ...] | None](
    "actr_trio_ice_addresses", default=None
)
_original = aioice.ice.get_host_addresses
_users = 0


def _restricted_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _ADDRESSES.get()
    if addresses is None:
        return _original(use_ipv4, use_ipv6)
    chosen = []
    for address in addresses:
        version = ipaddress.ip_address(address).version
        if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
            chosen.append(address)
    return chosen


@contextmanager
def hooked() -> Iterator[None]:
    """Install the gathering hook while the block runs (nested and concurrent uses are fine)."""
    global _users
    if _users == 0:
        aioice.ice.get_host_addresses = _restricted_host_addresses
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            aioice.ice.get_host_addresses = _original


@contextmanager
def host_addresses(addresses: tuple[str, ...]) -> Iterator[None]:
    """Gather host candidates only on ``addresses`` in this context (needs :func:`hooked`).

    An empty tuple means no restriction (aioice's default interfaces).

    Raises:
        ValueError: an entry is not an IP address literal.
    """
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError naming the culprit
    token = _ADDRESSES.set(addresses or None)
    try:
        yield
    finally:
        _ADDRESSES.reset(token)
