"""The in-process route: nodes of one ``trio.run`` hand each other envelopes as Python objects.

A node that runs with ``direct=True`` (the default) registers its :class:`LocalPeer` in the
:class:`Directory` of its realm once it accepts inbound traffic (start step 5) and leaves it
at shutdown, before it says goodbye. Another node of the same ``trio.run`` that sends to it
finds it there and skips the wire: no protobuf encoding, no link sequence numbers, no ack
packets. The receiver's gate runs on the sender's stack: the same checks as for a packet
(shutting down, ACL, route), then its mailbox records the envelope (at once in memory, or in
the SQLite writer's next commit), then the scheduler queues it. A tell returns once that
accept is committed, as over the wire; a call waits for the answer, which the receiver hands
straight to the caller's waiter.

Directories are per ``trio.run`` (a :class:`~trio.lowlevel.RunVar`), so nothing leaks from one
run to the next, and per realm *instance*: nodes meet here only if the same issuer (signaling
service) vouched for both, so two ``LocalRealm`` objects with the same realm name, whose ids
may coincide, never see each other. The sender is authenticated by construction: the caller a
receiver sees is the node object that called it, never a field it wrote.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, final

import trio

from ._deadlines import DeadlineTimer
from ._envelope import REQUEST, Chunk, Envelope, Goodbye, WireError
from ._ids import ActrId
from ._lanes import Lane
from ._peerlane import EXPIRED, Waiter
from ._wire import OVERLOADED_BACKOFF_MAX, OVERLOADED_BACKOFF_MIN
from .errors import DeadlineExceeded, Overloaded

__all__ = ["Directory", "LocalPeer", "LocalRoute", "Verdicts"]


#: One verdict per envelope handed to :meth:`LocalPeer.accept`: ``None`` when it is in the
#: receiver's mailbox (accepted now, or a duplicate of one it has), else the refusal.
Verdicts = list[WireError | None]


class LocalPeer(Protocol):
    """What a node offers the other nodes of its ``trio.run`` (its inbound gate)."""

    @property
    def actr_id(self) -> ActrId:
        """The node's identity."""
        ...

    @property
    def key(self) -> str:
        """``str(actr_id)``, as mailboxes store callers (computed once)."""
        ...

    @property
    def immediate(self) -> bool:
        """True when :meth:`accept_now` may be used: the mailbox records without waiting."""
        ...

    @property
    def running(self) -> bool:
        """False once the node stopped (answers to its calls then go by the directory)."""
        ...

    def accept_one_now(self, sender: LocalPeer, env: Envelope) -> WireError | None:
        """:meth:`accept_now` of one envelope (its verdict)."""
        ...

    def accept_now(self, sender: LocalPeer, envelopes: Sequence[Envelope]) -> Verdicts:
        """Accept ``envelopes`` from ``sender`` at once (only when :attr:`immediate`).

        The caller made its own checkpoint before (a cancelled sender accepts nothing).
        """
        ...

    async def accept(self, sender: LocalPeer, envelopes: Sequence[Envelope]) -> Verdicts:
        """Accept ``envelopes`` from ``sender``; returns once the mailbox committed them."""
        ...

    def respond(
        self, responder: ActrId, request_id: str, payload: bytes, error: WireError | None
    ) -> None:
        """The answer of ``responder`` to request ``request_id`` this node sent it."""
        ...

    async def deliver_chunk(self, sender: ActrId, lane: Lane, chunk: Chunk) -> WireError | None:
        """Hand a stream chunk to the stream registry; the refusal, if it was refused."""
        ...

    def goodbye(self, peer: ActrId, goodbye: Goodbye) -> None:
        """``peer`` is shutting down gracefully (see ``OutGate.on_goodbye``)."""
        ...


_DIRECTORIES: trio.lowlevel.RunVar[dict[bytes, dict[ActrId, LocalPeer]]] = trio.lowlevel.RunVar(
    "actr_trio.directories"
)


@final
class Directory:
    """The running nodes of one realm instance in this ``trio.run``, by ``ActrId``.

    Args:
        issuer_key: the public key of the service that issued the nodes' credentials: nodes
            share a directory only when the same issuer vouched for both.
    """

    def __init__(self, issuer_key: bytes) -> None:
        try:
            by_issuer = _DIRECTORIES.get()
        except LookupError:
            by_issuer = {}
            _DIRECTORIES.set(by_issuer)
        # Never dropped, even when empty: a node between registration and start holds it.
        # Bounded by the signaling services of this run, and gone with the run.
        self.peers = by_issuer.setdefault(issuer_key, {})

    def __repr__(self) -> str:
        return f"<Directory of {len(self.peers)} nodes>"

    def add(self, peer: LocalPeer) -> None:
        """``peer`` accepts envelopes from now on (a restarted node replaces its old entry)."""
        self.peers[peer.actr_id] = peer

    def remove(self, peer: LocalPeer) -> None:
        """``peer`` stops being reachable here (only its own entry is removed)."""
        if self.peers.get(peer.actr_id) is peer:
            del self.peers[peer.actr_id]

    def get(self, actr_id: ActrId) -> LocalPeer | None:
        """The running node ``actr_id`` of this realm in this run, if any."""
        return self.peers.get(actr_id)


@final
class LocalRoute:
    """The sending side of the in-process route, one per node (used by its OutGate).

    Args:
        directory: where the node finds the running nodes of its realm.
        me: the node's own :class:`LocalPeer` (answers to its calls come back through it).
        calls: the node's calls waiting for an answer, by request id (shared with the wire
            path, so a goodbye settles both alike).
        deadlines: fails the wait of a call at its deadline (no cancel scope per call).
        wire: sends an envelope over the wire instead (the receiver left before taking it).
    """

    def __init__(
        self,
        directory: Directory,
        me: LocalPeer,
        calls: dict[str, Waiter],
        deadlines: DeadlineTimer,
        wire: Callable[[Envelope, float], Awaitable[bytes]],
    ) -> None:
        self.directory = directory
        self.me = me
        self._calls = calls
        self._deadlines = deadlines
        self._wire = wire
        self.delivered = 0  # envelopes the receivers accepted (or recognised as duplicates)
        self.overloaded = 0  # back-offs because a receiver's mailbox was full

    def __repr__(self) -> str:
        return f"<LocalRoute of {self.me.actr_id}>"

    async def deliver(self, peer: LocalPeer, env: Envelope, deadline: float) -> bytes:
        """Hand ``env`` to ``peer``; a REQUEST then waits for its answer.

        Returns the answer's payload (``b""`` for a tell); over the wire if ``peer`` left
        before accepting it. The caller checked that ``deadline`` (trio clock) had not passed
        yet.

        Raises:
            DeadlineExceeded: ``deadline`` passed first.
            Overloaded: the receiver's mailbox stayed full until the deadline.
            CallError: the receiver refused it or the handler failed (typed by the wire kind).
        """
        if env.kind != REQUEST:
            if peer.immediate:
                # A tell yields once, here (a cancelled sender has accepted nothing).
                await trio.lowlevel.checkpoint()
                verdict = peer.accept_one_now(self.me, env)
                if verdict is None:
                    self.delivered += 1
                    return b""
                left = await self._retry(peer, [env], [verdict], deadline, tell=True)
            else:
                left = await self._hand_over(peer, [env], deadline, tell=True)
            return await self._wire(env, deadline) if left else b""
        waiter = Waiter(peer.actr_id)
        self._calls[env.request_id] = waiter
        try:
            if peer.immediate:
                # A call yields while it waits for its answer: no other task switch.
                await trio.lowlevel.checkpoint_if_cancelled()
                verdict = peer.accept_one_now(self.me, env)
                if verdict is None:
                    self.delivered += 1
                    left = []
                else:
                    left = await self._retry(peer, [env], [verdict], deadline, tell=False)
            else:
                left = await self._hand_over(peer, [env], deadline, tell=False)
            if left:
                del self._calls[env.request_id]
                return await self._wire(env, deadline)
            waiter.accepted = True
            if not waiter.done:
                self._deadlines.add(deadline, waiter)
                await waiter.wait()
        finally:
            self._calls.pop(env.request_id, None)
        error = waiter.error
        if error is None:
            return waiter.payload
        if error is EXPIRED:
            raise DeadlineExceeded(
                f"{env.route_key} to {peer.actr_id}: no answer before the deadline"
            )
        raise error.to_exception() if isinstance(error, WireError) else error

    async def deliver_many(
        self, peer: LocalPeer, envs: list[Envelope], deadline: float
    ) -> list[Envelope]:
        """Hand tells ``envs`` to ``peer`` in one accept; returns those it did not take
        because it left meanwhile (send them over the wire instead). Raises like
        :meth:`deliver`."""
        return await self._hand_over(peer, envs, deadline, tell=True)

    async def _hand_over(
        self, peer: LocalPeer, envs: list[Envelope], deadline: float, *, tell: bool
    ) -> list[Envelope]:
        if peer.immediate:
            if tell:
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            verdicts = peer.accept_now(self.me, envs)
        else:
            verdicts = await peer.accept(self.me, envs)
        return await self._retry(peer, envs, verdicts, deadline, tell=tell)

    async def _retry(
        self,
        peer: LocalPeer,
        envs: list[Envelope],
        verdicts: Verdicts,
        deadline: float,
        *,
        tell: bool,
    ) -> list[Envelope]:
        """Given the verdicts of a first hand-over, hand over again what the receiver refused
        as overloaded (the tail of the batch), after a backoff, same request ids, until the
        deadline; raises the first other refusal. Returns what ``peer`` did not take because
        it left meanwhile."""
        backoff = OVERLOADED_BACKOFF_MIN
        pending = envs
        while True:
            retry = _settle(pending, verdicts)
            self.delivered += len(pending) - len(retry)
            if not retry:
                return []
            self.overloaded += 1
            pending = retry
            now = trio.current_time()
            if now >= deadline:
                raise Overloaded(
                    f"{pending[0].route_key} to {peer.actr_id}: receiver overloaded until the deadline"
                )
            await trio.sleep_until(min(deadline, now + backoff * (0.5 + random.random())))
            backoff = min(backoff * 2, OVERLOADED_BACKOFF_MAX)
            found = self.directory.get(peer.actr_id)
            if found is None:
                return pending
            peer = found
            if peer.immediate:
                if not tell:
                    await trio.lowlevel.checkpoint_if_cancelled()
                verdicts = peer.accept_now(self.me, pending)
            else:
                verdicts = await peer.accept(self.me, pending)


def _settle(envs: list[Envelope], verdicts: Verdicts) -> list[Envelope]:
    """The envelopes refused as overloaded; raises the first other refusal."""
    retry: list[Envelope] = []
    for env, verdict in zip(envs, verdicts, strict=True):
        if verdict is None:
            continue
        if verdict.kind != Overloaded.wire_kind:
            raise verdict.to_exception()
        retry.append(env)
    return retry
