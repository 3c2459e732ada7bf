"""``LocalRealm``: several nodes in one ``trio.run``, same lifecycle, mailbox and scheduler.

Signaling is in memory and the transport is the loopback one; everything else is the real
runtime, so a test written against LocalRealm exercises what production runs. Its nodes hand
envelopes to each other in process (the route nodes of one ``trio.run`` take anywhere);
``LocalRealm(direct=False)`` sends everything through the loopback transport instead, as
between processes: encoded, numbered, acknowledged and resent.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, final

import trio

from .._acl import discovery_visibility
from .._config import Config
from .._node import ActrNode, ActrRef, ActrSystem
from .._router import Workload
from ..transport._abc import Transport
from ..transport._loopback import LoopbackHub
from ._memory_signaling import MemorySignaling


@final
class LocalRealm:
    """An in-process realm: ``async with LocalRealm() as realm: async with realm.start(W()) as ref``.

    Args:
        realm: the realm name the nodes register in.
        direct: nodes hand envelopes to each other as Python objects (the default; see
            ``ActrSystem``); ``False`` sends everything through the loopback transport (the
            wire path). ``None`` takes :attr:`DEFAULT_DIRECT`. A node started with
            ``wrap_transport`` always uses the wire path: the wrapper is what it tests.
        **defaults: ``Config`` fields applied to every node started here.
    """

    #: The route ``direct=None`` means (a test suite may flip it to run its tests both ways).
    DEFAULT_DIRECT: bool = True

    def __init__(
        self, realm: str = "local", *, direct: bool | None = None, **defaults: Any
    ) -> None:
        self.realm = realm
        self.direct = self.DEFAULT_DIRECT if direct is None else direct
        self._defaults = defaults
        self.signaling = MemorySignaling(realm)
        self.hub = LoopbackHub()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._entered = False

    async def __aenter__(self) -> LocalRealm:
        await trio.lowlevel.checkpoint()
        self._entered = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._entered = False
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def temporary_data_dir(self) -> Path:
        """A fresh directory removed when the realm closes (for a durable mailbox)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="actr-realm-")
        return Path(tempfile.mkdtemp(dir=self._tmp.name))

    def config(self, **options: Any) -> Config:
        """The ``Config`` a node started with ``options`` gets."""
        values = {**self._defaults, **options}
        values.setdefault("realm", self.realm)
        return Config.from_mapping(values)

    def node(
        self,
        workload: Workload,
        *,
        wrap_transport: Callable[[Transport], Transport] | None = None,
        **options: Any,
    ) -> ActrNode:
        """A node of this realm, not started yet (e.g. for a ``Supervisor`` factory).

        ``options`` are ``Config`` fields; ``wrap_transport`` wraps the loopback transport,
        e.g. ``lambda t: FaultyTransport(t, drop=0.2)`` (such a node sends and receives over
        the wire path only).
        """
        transport: Transport = self.hub.transport()
        if wrap_transport is not None:
            transport = wrap_transport(transport)
        config = self.config(**options)
        visibility = discovery_visibility(
            config.acl, workload.acl, realm=config.realm, owner=type(workload).__name__
        )
        system = ActrSystem(
            config,
            transport=transport,
            signaling=self.signaling.connector(visibility=visibility),
            direct=self.direct and wrap_transport is None,
        )
        return system.attach(workload)

    @asynccontextmanager
    async def start(
        self,
        workload: Workload,
        *,
        wrap_transport: Callable[[Transport], Transport] | None = None,
        **options: Any,
    ) -> AsyncIterator[ActrRef]:
        """Start ``workload`` on a node of this realm (see :meth:`node` for the arguments).

        ``data_dir=path`` gives it a durable SQLite mailbox and a stable identity (start it again
        on the same path to restart "the same" node).
        """
        if not self._entered:
            raise RuntimeError("use `async with LocalRealm() as realm:` before realm.start()")
        async with self.node(workload, wrap_transport=wrap_transport, **options).start() as ref:
            yield ref
