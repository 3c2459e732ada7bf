"""Lifecycle: ``ActrSystem(config).attach(workload).start()`` -> ``ActrRef`` (docs/architecture.md).

The node is one nursery of sibling components. Start order, read top to bottom in
:meth:`_NodeCore.run`: mailbox open; 1. signaling registered; 2. transport open; 3. ``on_start``;
4. scheduler (after replaying what the mailbox holds); 5. inbound gate accepting.

Shutdown order, in :meth:`_NodeCore._shutdown`, the same whether it was asked for, the
``async with`` block ended, the enclosing scope was cancelled, SIGTERM arrived or a sibling
crashed: 1. stop accepting (new envelopes are refused with ``ShuttingDown``); 2. drain the
scheduler, bounded by ``Config.shutdown_grace`` (what is left stays in the mailbox for replay);
3. ``on_stop``; 4. close the transport, then unregister from signaling.

Each component runs in its own shielded cancel scope, so an outside cancellation cannot tear
them down out of order: the shutdown sequence stops them one by one (under a bounded scope).
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from ._acl import discovery_visibility, guard
from ._component import STOP_BOUND, Component
from ._config import Config
from ._context import Actions, Context
from ._datadir import hold_data_dir, make_private_dir, write_private_file
from ._deadlines import DeadlineTimer
from ._dispatcher import Dispatcher
from ._envelope import (
    Goodbye,
)
from ._fastlane import FastLaneStatistics
from ._groups import reraise, sole_exception
from ._heartbeat_report import ReportCarrier, ReportSource
from ._identity import NodeKey
from ._ids import ActrId
from ._ingate import InGate, InGateStatistics
from ._local import Directory
from ._logging import NODE
from ._mailbox import DeadLetter, Mailbox, MailboxStatistics, open_mailbox
from ._mailbox_memory import MemoryMailbox
from ._metrics import NodeMetrics, split_address
from ._outgate import OutGate, OutGateStatistics
from ._router import RouteTable, Workload
from ._scheduler import SchedulerStatistics
from ._streams import StreamRegistry
from ._tracing import tracer as node_tracer
from ._tracks import TrackRegistry
from .errors import (
    ConfigError,
    ShuttingDown,
)
from .transport._abc import SignalingConnector, SignalingSession, Transport

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from ._mailbox_sqlite import SqliteMailbox

log = logging.getLogger(NODE)

IDENTITY_FILE: Final = "identity.json"


# Step 4 of shutdown waits this long (within the grace period) for peers to ack what was sent.
ACK_FLUSH: Final = 1.0
# Step 4 of shutdown: bound on saying goodbye to every linked peer (a peer that left meanwhile
# would otherwise hold it for a whole connection timeout).
GOODBYE_BOUND: Final = 1.0
# Step 4 of shutdown: the order components stop in (transport before signaling).
STOP_ORDER: Final = (
    "metrics",
    "recovery",
    "ingate",
    "streams",
    "tracks",
    "outgate",
    "deadlines",
    "transport",
    "listener",
    "signaling",
    "mailbox",
)


@final
@attrs.frozen
class NodeStatistics:
    """Snapshot of a running node (``ref.statistics()``)."""

    actr_id: ActrId
    mailbox: MailboxStatistics
    scheduler: SchedulerStatistics
    inbound: InGateStatistics
    outbound: OutGateStatistics
    streams: FastLaneStatistics
    tracks: FastLaneStatistics
    #: The transport each linked peer is reached over ("webrtc", "websocket", "loopback").
    links: dict[ActrId, str] = attrs.field(factory=dict)


def _load_identity(data_dir: Path | None) -> ActrId | None:
    if data_dir is None:
        return None
    import json  # only with a data directory

    path = data_dir / IDENTITY_FILE
    try:
        return ActrId.parse(json.loads(path.read_text())["actr_id"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: unreadable identity ({exc}); remove it to get a new ActrId"
        ) from exc


def _save_identity(data_dir: Path | None, actr_id: ActrId) -> None:
    if data_dir is None:
        return
    import json  # as in _load_identity

    make_private_dir(data_dir)
    write_private_file(data_dir / IDENTITY_FILE, json.dumps({"actr_id": str(actr_id)}).encode())


def _database(mailbox: Mailbox) -> SqliteMailbox | None:
    """``mailbox`` if it is the durable (SQLite) one. An in-memory node never loads sqlite3."""
    if isinstance(mailbox, MemoryMailbox):
        return None
    from ._mailbox_sqlite import SqliteMailbox  # open_mailbox loaded it: a lookup

    return mailbox if isinstance(mailbox, SqliteMailbox) else None


class _NodeCore:
    """Everything inside one running node. Private: users hold an ``ActrRef``."""

    def __init__(
        self,
        config: Config,
        workload: Workload,
        transport: Transport,
        signaling: SignalingConnector,
        *,
        direct: bool = True,
    ) -> None:
        self.config = config
        self.direct = direct
        self.workload = workload
        self.routes = RouteTable(workload)
        self.acl = guard(config.acl, workload.acl, owner=type(workload).__name__)
        # Counted per route, and the transport's bytes, only when metrics are asked for.
        self.metrics = NodeMetrics(self.routes.keys()) if config.metrics is not None else None
        if self.metrics is not None:
            from ._metrics_transport import MeteredTransport  # only with metrics

            transport = MeteredTransport(transport)
        self.metrics_address: tuple[str, int] | None = None
        # Spans only with OpenTelemetry installed and a tracer provider configured by now:
        # resolved once, so that a send without them costs one attribute test.
        self.tracer: Tracer | None = node_tracer()
        self.transport = transport
        self.signaling = signaling
        self.mailbox: Mailbox = open_mailbox(config)
        # A durable node keeps its outstanding calls and tells in its mailbox database.
        self._database = _database(self.mailbox)
        outbox = self._database
        # Fails calls and cancels handlers at their deadlines (no cancel scope per envelope).
        self.deadlines = DeadlineTimer()
        self.outgate = OutGate(
            transport,
            max_payload=config.max_payload,
            outbox=outbox,
            deadlines=self.deadlines,
            peer_state_timeout=config.peer_state_timeout,
            max_peer_states=config.max_peer_states,
        )
        self.dispatcher = Dispatcher(
            self, mailbox=self.mailbox, routes=self.routes.by_key, deadlines=self.deadlines
        )
        self.scheduler = self.dispatcher.scheduler
        self.streams = StreamRegistry(
            buffer=config.stream_buffer,
            make_context=self._peer_context,
            max_per_peer=config.max_streams_per_peer,
            idle_timeout=config.stream_idle_timeout,
        )
        self.tracks = TrackRegistry(
            buffer=config.stream_buffer,
            make_context=self._peer_context,
            max_per_peer=config.max_tracks_per_peer,
            idle_timeout=config.stream_idle_timeout,
        )
        self._session: SignalingSession | None = None
        self._ingate: InGate | None = None
        self._directory: Directory | None = None
        self.shutdown_requested = trio.Event()
        self.stopped = trio.Event()
        self.recovered = trio.Event()

    @property
    def actr_id(self) -> ActrId:
        return self.session.actr_id

    @property
    def session(self) -> SignalingSession:
        if self._session is None:
            raise ShuttingDown("the node is not registered")
        return self._session

    def _peer_context(self, peer: ActrId | None) -> Context:
        return Context(self, caller_id=peer)

    def statistics(self) -> NodeStatistics:
        assert self._ingate is not None
        return NodeStatistics(
            self.actr_id,
            self.mailbox.statistics(),
            self.scheduler.statistics(),
            self._ingate.statistics(),
            self.outgate.statistics(),
            self.streams.statistics(),
            self.tracks.statistics(),
            self._links(),
        )

    def _links(self) -> dict[ActrId, str]:
        links = getattr(self.transport, "links", None)
        return {} if links is None else dict(links())

    async def run(self, *, task_status: trio.TaskStatus[ActrRef]) -> None:
        c = {
            name: Component(name)
            for name in (
                "mailbox",
                "deadlines",
                "listener",
                "signaling",
                "transport",
                "outgate",
                "streams",
                "tracks",
                "scheduler",
                "ingate",
                "recovery",
                "metrics",
            )
        }
        render = self._metrics_render()  # before anything opens: no extra, no start
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(c["mailbox"].run, self.mailbox.run)
                await nursery.start(c["deadlines"].run, self.deadlines.run)
                previous = _load_identity(self.config.data_dir)
                # Kept beside the identity: only this key can register under it again.
                node_key = NodeKey.load_or_create(self.config.data_dir)
                actr_type = type(self.workload).actr_type
                register = self.signaling.run
                # Bound before registering: the registration advertises the bound address.
                listen = getattr(self.transport, "listen", None)
                if listen is not None and self.config.listen is not None:
                    address = await nursery.start(c["listener"].run, listen)
                    register = partial(self.signaling.run, listen=address)
                self._session = await nursery.start(
                    c["signaling"].run, register, actr_type, previous, node_key
                )  # 1
                _save_identity(self.config.data_dir, self.actr_id)
                await nursery.start(c["transport"].run, self.transport.run, self.session)  # 2
                await nursery.start(c["outgate"].run, self.outgate.run, self.actr_id)
                self._ingate = self._make_ingate()
                # What a crash left outstanding is read before anything (on_start, the user)
                # can send: a request sent in this run is never taken for a leftover.
                await nursery.start(self._recover, c["recovery"])
                await nursery.start(c["streams"].run, self.streams.run)
                await nursery.start(c["tracks"].run, self.tracks.run)
                await self.workload.on_start(Context(self))  # 3
                await nursery.start(c["scheduler"].run, self.scheduler.run)  # 4
                await self._replay()
                await nursery.start(c["ingate"].run, self._ingate.run)  # 5
                if self._directory is not None:
                    self._directory.add(self._ingate)  # nodes of this trio.run: in process
                if render is not None:
                    self.metrics_address = await nursery.start(
                        c["metrics"].run, self._serve_metrics, render
                    )
                log.info(
                    "%s started (%s, %s mailbox)",
                    self.actr_id,
                    type(self.workload).__name__,
                    "durable" if self._durable else "in-memory",
                )
                task_status.started(ActrRef._create(self))
                await self.shutdown_requested.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown(c)
                self.stopped.set()

    def _metrics_render(self) -> Callable[[], bytes] | None:
        """The /metrics page of this node, if ``Config.metrics`` asks for one.

        Raises:
            MetricsUnavailable: the ``metrics`` extra (prometheus-client) is not installed.
        """
        if self.metrics is None:
            return None
        from ._metrics_export import NodeCollector, render
        from ._metrics_transport import MeteredTransport

        assert isinstance(self.transport, MeteredTransport)
        actr_type = str(type(self.workload).actr_type)
        return render(NodeCollector(self.statistics, self.metrics, self.transport, actr_type))

    async def _serve_metrics(
        self, render: Callable[[], bytes], *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        from ._metrics_http import serve_metrics  # only with metrics

        assert self.config.metrics is not None
        host, port = split_address(self.config.metrics)
        await serve_metrics(host, port, render, log=log, task_status=task_status)

    def _make_ingate(self) -> InGate:
        ingate = InGate(
            local=self.actr_id,
            transport=self.transport,
            mailbox=self.mailbox,
            outgate=self.outgate,
            streams=self.streams,
            tracks=self.tracks,
            routes=self.routes.keys(),
            enqueue=self.scheduler.enqueue,
            max_payload=self.config.max_payload,
            acl=self.acl,
            metrics=self.metrics,
            peer_state_timeout=self.config.peer_state_timeout,
            max_peer_states=self.config.max_peer_states,
        )
        if self.direct:
            # Nodes of this trio.run vouched for by the same issuer reach each other directly.
            self._directory = Directory(self.session.issuer_key)
            self.outgate.use_directory(self._directory, ingate)
        return ingate

    def _leave_directory(self) -> None:
        if self._directory is not None and self._ingate is not None:
            self._directory.remove(self._ingate)

    async def _recover(self, component: Component, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await component.run(self.outgate.recover, task_status=task_status)
        finally:
            self.recovered.set()

    async def _replay(self) -> None:
        for stored in await self.mailbox.pending():
            self.dispatcher.enqueue_stored(stored, replay=True)

    async def _shutdown(self, c: dict[str, Component]) -> None:
        try:
            await self._drain_and_stop_workload(c)
        finally:
            self._leave_directory()
            if self._ingate is not None:
                self._ingate.running = False
            # 4. Whatever happened above, every component stops, transport before signaling.
            # Each stop is bounded; whatever still runs after that is cancelled outright.
            with trio.move_on_after(STOP_BOUND * len(STOP_ORDER), shield=True):
                for name in STOP_ORDER:
                    await c[name].stop()
            for component in c.values():
                component.scope.cancel(reason="node shutdown overran its bound")
            log.info("%s stopped", self._session.actr_id if self._session else "node")

    @property
    def _durable(self) -> bool:
        return self._database is not None

    async def _release_unrun(self, c: dict[str, Component]) -> int:
        """Envelopes accepted here that never ran give back their accept-time attempt, so a
        graceful stop leaves exact counts (only a crash may leave one count too many).
        Returns how many never ran."""
        taken = self.scheduler.take_all()
        unrun = [work.stored.id for work in taken if work.counted]
        if unrun and c["mailbox"].entered and not c["mailbox"].done.is_set():
            with trio.move_on_after(STOP_BOUND):
                await self.mailbox.release_attempts(unrun)
        return len(taken)

    async def _drain_and_stop_workload(self, c: dict[str, Component]) -> None:
        grace = self.config.shutdown_grace
        drained = True
        if self._ingate is not None and c["ingate"].entered:
            self._ingate.accepting = False  # 1. stop accepting
            stats = self.scheduler.statistics()
            log.info(
                "%s shutting down: draining %d accepted envelopes (shutdown_grace %g s)",
                self.actr_id,
                self.scheduler.pending() + int(stats.running),
                grace,
            )
            self.scheduler.stop_when_idle()  # 2. drain, bounded
            with trio.move_on_after(grace):
                await c["scheduler"].done.wait()
            drained = c["scheduler"].done.is_set()
        await c["scheduler"].stop()
        left = await self._release_unrun(c)
        if not drained:
            log.warning(
                "%s: shutdown_grace passed before the drain finished (%d envelopes queued); %s",
                self.actr_id,
                left,
                "what was not handled stays in the mailbox for the next start"
                if self._durable
                else "what was not handled is lost (no data_dir)",
            )
        if self._session is not None:
            with trio.move_on_after(grace):
                try:
                    await self.workload.on_stop(Context(self))  # 3.
                except Exception:
                    log.exception("%s: on_stop failed", self._session.actr_id)
            with trio.move_on_after(min(ACK_FLUSH, grace)):
                await self.outgate.wait_acked()
        self.outgate.close()
        if c["mailbox"].entered and not c["mailbox"].done.is_set():
            with trio.move_on_after(STOP_BOUND):
                await self.mailbox.flush()
        # Answered or persisted: now peers may stop resending to us. Nodes of this trio.run
        # stop handing envelopes over first: nothing arrives that way after the goodbye.
        self._leave_directory()
        if c["ingate"].entered and c["transport"].entered and not c["transport"].done.is_set():
            await self._say_goodbye(kept=not drained and self._durable)

    async def _say_goodbye(self, *, kept: bool) -> None:
        """Tell every linked peer that this node is leaving (bounded by GOODBYE_BOUND)."""
        assert self._ingate is not None
        peers = self.outgate.peers() | self._ingate.peers()
        if not peers:
            return
        said: list[ActrId] = []

        async def one(peer: ActrId) -> None:
            pending = kept or self.outgate.unacked_to(peer) > 0
            if await self.outgate.say_goodbye(peer, Goodbye(answers_pending=pending)):
                said.append(peer)

        with trio.move_on_after(GOODBYE_BOUND):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(one, peer)
        log.info("%s said goodbye to %d of %d peers", self.actr_id, len(said), len(peers))


@final
class ActrRef(Actions):
    """A running node: its identity, statistics, shutdown, and the calls of :class:`Context`
    (``call``, ``tell``, ``tell_many``, ``discover``, ``open_stream``, ``publish_track``) for
    code outside handlers (no caller, no deadline of its own).

    Created by ``ActrNode.start()`` only.
    """

    __slots__ = ("_core", "deadline", "traceparent", "tracestate")

    _core: _NodeCore

    def __init__(self, core: _NodeCore, token: object) -> None:
        if token is not _TOKEN:
            raise TypeError("ActrRef is created by ActrNode.start()")
        self._core = core
        self.deadline = math.inf
        # No envelope of its own: a send starts a trace, or joins the current span's.
        self.traceparent = ""
        self.tracestate = ""

    @classmethod
    def _create(cls, core: _NodeCore) -> ActrRef:
        return cls(core, _TOKEN)

    def __repr__(self) -> str:
        return f"<ActrRef {self._core.actr_id} {type(self._core.workload).__name__}>"

    @property
    def actr_id(self) -> ActrId:
        """This node's identity."""
        return self._core.actr_id

    def statistics(self) -> NodeStatistics:
        """Counters of every component."""
        return self._core.statistics()

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``(host, port)`` where this node serves ``/metrics`` (``Config.metrics``), or None."""
        return self._core.metrics_address

    @property
    def mailbox(self) -> Mailbox:
        """The node's mailbox (read-only use: ``pending()``, ``statistics()``)."""
        return self._core.mailbox

    async def wait_recovered(self) -> None:
        """Return once the calls and tells a crash left outstanding were resent and settled.

        Only durable nodes (with a ``data_dir``) keep outstanding requests; for others this
        returns at once.
        """
        await self._core.recovered.wait()

    async def dead_letters(self) -> list[DeadLetter]:
        """Envelopes that failed ``Config.max_attempts`` times, oldest first."""
        return await self._core.mailbox.dead_letters()

    async def redrive(self, envelope_id: int | None = None) -> int:
        """Put one dead letter (or all) back in the queue with a fresh attempt count."""
        return await self._core.dispatcher.redrive(envelope_id)

    async def purge_dead_letters(self) -> int:
        """Delete every dead letter; returns how many."""
        self._core.dispatcher.forget_dead_letters()
        return await self._core.mailbox.purge_dead_letters()

    async def shutdown(self) -> None:
        """Shut down in the documented order and return once the node stopped."""
        self._core.shutdown_requested.set()
        await self._core.stopped.wait()

    async def wait_for_shutdown(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Wait until SIGINT/SIGTERM (then shut down gracefully) or another shutdown.

        Returns once the node stopped. Must run in the main thread (signal handling). Startable:
        ``await nursery.start(ref.wait_for_shutdown)`` returns once the signal handlers are in
        place, so a signal sent after that is never missed.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for signum in signals:
                        log.info(
                            "%s: received %s, shutting down",
                            self.actr_id,
                            signal.Signals(signum).name,
                        )
                        self._core.shutdown_requested.set()
                        return

                nursery.start_soon(on_signal)
                await self._core.shutdown_requested.wait()
                nursery.cancel_scope.cancel()
        await self._core.stopped.wait()


_TOKEN: Final = object()


@final
class ActrNode:
    """A system with its workload attached; ``start()`` runs it."""

    def __init__(self, core: _NodeCore) -> None:
        self._core = core
        self._started = False

    def __repr__(self) -> str:
        return f"<ActrNode {type(self._core.workload).__name__}>"

    @asynccontextmanager
    async def start(self) -> AsyncIterator[ActrRef]:
        """Start the node (in the documented start order) and yield its :class:`ActrRef`.

        Leaving the block shuts the node down in the documented order. A crash in one of the
        node's components cancels the others and propagates out of this block as itself;
        nothing accepted is lost. An exception raised in the block comes out unchanged.

        Raises:
            ConfigError: started twice, or an invalid workload or data dir.
            DataDirInUse: another node holds ``Config.data_dir``.
            SignalingError, AuthError: registration failed.
            BaseExceptionGroup: only when several things failed at once (say the block raised
                while a component crashed, or two components crashed); its leaves are those
                failures. One failure is never wrapped in a group.

        Cancellation: cancelling the enclosing scope shuts the node down in the same order.
        """
        if self._started:
            raise ConfigError("a node starts once; build a new ActrSystem to start again")
        self._started = True
        failure: BaseException | None = None
        body_error: BaseException | None = None
        try:
            # Held from before the mailbox opens until the node has stopped.
            with hold_data_dir(self._core.config.data_dir):
                async with trio.open_nursery() as nursery:
                    ref = await nursery.start(self._core.run)
                    try:
                        yield ref
                    except BaseException as exc:
                        body_error = exc  # handed back unchanged, even if it is a group
                        raise
                    finally:
                        self._core.shutdown_requested.set()
        except BaseExceptionGroup as group:
            # Two nurseries wrap a lone failure twice; only several failures stay a group.
            failure = sole_exception(group, keep=body_error)
            if failure is None:
                raise
        if failure is not None:
            reraise(failure)


@final
class ActrSystem:
    """The runtime infrastructure of one node before it has a workload.

    Args:
        config: the node's configuration.
        transport: override the transport (``LocalRealm`` passes a loopback transport); by
            default a ``WebRTCTransport`` for ``config``.
        signaling: override how the node registers; by default a WebSocket client of
            ``config.signaling_url``.
        direct: hand envelopes to the nodes of the same ``trio.run`` and realm (vouched for
            by the same signaling service) as Python objects, with every guarantee of the
            wire (the default); ``False`` sends everything through ``transport``, e.g. to
            test the wire path between nodes of one process.
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: Transport | None = None,
        signaling: SignalingConnector | None = None,
        direct: bool = True,
    ) -> None:
        self.config = config
        self._transport = transport
        self._signaling = signaling
        self._direct = direct
        self._attached = False

    def attach(self, workload: Workload) -> ActrNode:
        """Attach the workload; consumes the system.

        Raises:
            ConfigError: already attached, or the workload has no ``actr_type``.
        """
        if self._attached:
            raise ConfigError("this ActrSystem already has a workload (one workload per node)")
        if not isinstance(workload, Workload):
            raise ConfigError(f"{workload!r} is not a Workload")
        self._attached = True
        transport = self._transport
        if transport is None:
            # WebRTC, and direct WebSocket links to peers that advertise an address.
            from .transport._dual import DualTransport

            transport = DualTransport(self.config)
        signaling = self._signaling
        if signaling is None:
            if self.config.signaling_url is None:
                raise ConfigError(
                    "Config.signaling_url is required (or use actr_trio.testing.LocalRealm)"
                )
            from .signaling._client import SignalingClient

            # The server hides this node from callers its ACLs refuse (enforcement stays here).
            visibility = discovery_visibility(
                self.config.acl,
                workload.acl,
                realm=self.config.realm,
                owner=type(workload).__name__,
            )
            signaling = SignalingClient(self.config, visibility=visibility)
        core = _NodeCore(self.config, workload, transport, signaling, direct=self._direct)
        if isinstance(signaling, ReportCarrier):
            # The node's figures ride on its heartbeats (actr-trio inspect, the status page).
            signaling.report_with(
                ReportSource(
                    mailbox=core.mailbox,
                    dispatcher=core.dispatcher,
                    outgate=core.outgate,
                    max_payload=self.config.max_payload,
                )
            )
        return ActrNode(core)
