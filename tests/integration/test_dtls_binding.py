"""A hostile relay on the signaling path cannot put another certificate behind an identity.

A real signaling server on 127.0.0.1, three nodes in this process linked by real WebRTC:
``victim`` calls ``service``; ``other`` is an honest realm member (whose genuine messages the
relay replays). Between the server and the victim sits :class:`HostileRelay`: it rewrites the
relays the victim receives, as a modified server (or anything on its path) would. Each attack
makes the victim's call fail with ``PeerNotAuthenticated`` naming the reason and a WARNING on
``actr_trio.transport``; the victim's other link, and the service's links, keep working; once
the relay stops tampering the victim reaches the service.

The relay's material is what such a relay could hold: messages it carried, a credential for
that node from an earlier run (minted here with the issuer key to stand in for one), its own
key and its own issuer.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actr_trio import ActrId, ActrRef, ActrSystem, ActrType, Context, Workload, route
from actr_trio._identity import IssuerKey, NodeKey, verify_credential
from actr_trio._proto.actr import binding_pb2
from actr_trio.errors import PeerNotAuthenticated, PeerUnavailable
from actr_trio.signaling import serve
from actr_trio.signaling._client import SignalingClient
from actr_trio.testing import network_config
from actr_trio.transport import Relay, SignalingConnector, SignalingSession
from actr_trio.transport._binding import seal_description
from actr_trio.transport._webrtc import WebRTCTransport

pytestmark = pytest.mark.integration

BOUND = 60  # seconds for a whole scenario; links open in well under a second on loopback
REALM = "binding"
ECHO = "demo.Echo.Echo"

Tamper = Callable[[Relay], Relay]


class Echo(Workload):
    actr_type = ActrType("acme", "echo")

    @route(ECHO)
    async def echo(self, request: bytes, ctx: Context) -> bytes:
        return request


class Caller(Workload):
    actr_type = ActrType("acme", "caller")


class Other(Echo):
    actr_type = ActrType("acme", "other")


# ------------------------------------------------------------------------------ the relay


class _Started:
    """Stands in for the node's ``task_status``: hands it the wrapped session."""

    def __init__(self, outer: Any, wrap: Callable[[SignalingSession], SignalingSession]) -> None:
        self._outer = outer
        self._wrap = wrap

    def started(self, value: SignalingSession) -> None:
        self._outer.started(self._wrap(value))


class _RewrittenRelays(trio.abc.ReceiveChannel[Relay]):
    def __init__(self, inner: trio.abc.ReceiveChannel[Relay], relay: HostileRelay) -> None:
        self._inner = inner
        self._relay = relay

    async def receive(self) -> Relay:
        relay = await self._inner.receive()
        self._relay.seen.append(relay)
        tamper = self._relay.tamper
        if tamper is None or relay.kind not in ("offer", "answer"):
            return relay
        return tamper(relay)

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define(eq=False)
class _Session:
    """The node's session, except that relays to it come through the hostile relay."""

    inner: SignalingSession
    relays: _RewrittenRelays

    @property
    def actr_id(self) -> ActrId:
        return self.inner.actr_id

    @property
    def node_key(self) -> NodeKey:
        return self.inner.node_key

    @property
    def credential(self) -> bytes:
        return self.inner.credential

    @property
    def issuer_key(self) -> bytes:
        return self.inner.issuer_key

    async def discover(self, actr_type: ActrType) -> list[ActrId]:
        return await self.inner.discover(actr_type)

    async def send_relay(self, target: ActrId, kind: str, payload: str) -> None:
        await self.inner.send_relay(target, kind, payload)


@attrs.define(eq=False)
class HostileRelay:
    """A ``SignalingConnector`` whose relays to the node pass through ``tamper`` (when set)."""

    inner: SignalingConnector
    tamper: Tamper | None = None
    seen: list[Relay] = attrs.field(factory=list)

    async def run(
        self,
        actr_type: ActrType,
        previous_id: ActrId | None,
        node_key: NodeKey | None = None,
        *,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        def wrap(session: SignalingSession) -> SignalingSession:
            return _Session(session, _RewrittenRelays(session.relays, self))

        await self.inner.run(
            actr_type, previous_id, node_key, task_status=_Started(task_status, wrap)
        )

    def captured(self, source: ActrId, kind: str) -> Relay:
        return next(r for r in self.seen if r.source == source and r.kind == kind)


def _unwrap(payload: str) -> binding_pb2.SignedDescription:
    return binding_pb2.SignedDescription.FromString(base64.b64decode(payload))


def _wrap(message: binding_pb2.SignedDescription) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def _rewrite(relay: Relay, **fields: Any) -> Relay:
    message = _unwrap(relay.payload)
    for name, value in fields.items():
        setattr(message, name, value)
    return attrs.evolve(relay, payload=_wrap(message))


# ------------------------------------------------------------------------------ the attacks


@attrs.define(eq=False)
class World:
    """What a scenario's attack may use."""

    service: ActrId
    other: ActrId
    relay: HostileRelay
    issuer: IssuerKey


def forge_fingerprints(relay: Relay) -> Relay:
    """The relay with every DTLS fingerprint of its SDP replaced by another certificate's."""
    sdp = _unwrap(relay.payload).sdp
    forged = _FINGERPRINT.sub(_other_digest, sdp)
    assert forged != sdp
    return _rewrite(relay, sdp=forged)


_FINGERPRINT = re.compile(r"(a=fingerprint:\S+ )([0-9A-F:]+)")


def _other_digest(match: re.Match[str]) -> str:
    value = match.group(2)
    return match.group(1) + ("00" if not value.startswith("00") else "11") + value[2:]


def swap_fingerprint(world: World) -> Tamper:
    """Replace the service's DTLS fingerprints in its answer by another certificate's."""
    return forge_fingerprints


def swap_sdp(world: World) -> Tamper:
    """Put another node's SDP (its answer to the victim, carried earlier) in the answer."""
    other_sdp = _unwrap(world.relay.captured(world.other, "answer").payload).sdp

    def tamper(relay: Relay) -> Relay:
        return _rewrite(relay, sdp=other_sdp)

    return tamper


def swap_credential(world: World) -> Tamper:
    """Hand the victim another member's genuine answer as the service's (an impostor)."""
    impostor = world.relay.captured(world.other, "answer").payload

    def tamper(relay: Relay) -> Relay:
        return attrs.evolve(relay, payload=impostor)

    return tamper


def _claims(relay: Relay, world: World) -> Any:
    return verify_credential(
        _unwrap(relay.payload).credential, world.issuer.public_bytes(), now=time.time()
    )


def expired_credential(world: World) -> Tamper:
    """The service's answer with an old (expired) credential of the service's own key."""

    def tamper(relay: Relay) -> Relay:
        claims = _claims(relay, world)
        old = world.issuer.issue(
            claims.actr_id, claims.public_key, now=time.time() - 7200, lifetime=3600
        )
        return _rewrite(relay, credential=old)

    return tamper


def foreign_issuer(world: World) -> Tamper:
    """The relay's own issuer vouches for the service's id held by the relay's key, which signs
    the relay's certificate: a complete identity, from the wrong issuer."""
    rogue_issuer, rogue_key = IssuerKey.generate(), NodeKey.generate()

    def tamper(relay: Relay) -> Relay:
        claims = _claims(relay, world)
        sdp = _unwrap(relay.payload).sdp
        payload = seal_description(
            "answer",
            _FINGERPRINT.sub(_other_digest, sdp),
            signer=relay.source,
            peer=relay.target,
            credential=rogue_issuer.issue(
                claims.actr_id, rogue_key.public_bytes(), now=time.time(), lifetime=3600
            ),
            sign=rogue_key.sign,
        )
        return attrs.evolve(relay, payload=payload)

    return tamper


def wrong_realm(world: World) -> Tamper:
    """The service's key and signature, with a credential for the same serial in another realm
    (what a node of another realm on the same server holds)."""

    def tamper(relay: Relay) -> Relay:
        claims = _claims(relay, world)
        stranger = ActrId("elsewhere", claims.actr_id.serial, claims.actr_id.type)
        credential = world.issuer.issue(stranger, claims.public_key, now=time.time(), lifetime=3600)
        return _rewrite(relay, credential=credential)

    return tamper


ATTACKS: dict[str, tuple[Callable[[World], Tamper], str]] = {
    "fingerprint": (swap_fingerprint, "does not cover the DTLS fingerprints"),
    "sdp": (swap_sdp, "does not cover the DTLS fingerprints"),
    "credential": (swap_credential, "credential is for .*, not for the sender"),
    "expired": (expired_credential, "credential refused: .*expired"),
    "foreign-issuer": (foreign_issuer, "credential refused: .*not by the trusted issuer"),
    "wrong-realm": (wrong_realm, "credential is for realm 'elsewhere', not ours"),
}


def _transport(ref: ActrRef) -> WebRTCTransport:
    # The node's default transport is a DualTransport: its WebRTC side is the one under test.
    transport = getattr(ref._core.transport, "webrtc", ref._core.transport)
    assert isinstance(transport, WebRTCTransport)
    return transport


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_relay_that_swaps_the_answer_gets_no_link(
    attack: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_tamper, reason = ATTACKS[attack]
    issuer_path = tmp_path / "issuer_key"
    issuer = IssuerKey.load_or_create(issuer_path)
    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio.transport"):
        async with serve(host="127.0.0.1", port=0, issuer_key_path=issuer_path) as server:
            config = network_config(server.url, realm=REALM)
            relay = HostileRelay(SignalingClient(config))
            async with (
                ActrSystem(config, direct=False).attach(Echo()).start() as service,
                ActrSystem(config, direct=False).attach(Other()).start() as other,
                ActrSystem(config, signaling=relay, direct=False)
                .attach(Caller())
                .start() as victim,
            ):
                # An honest link first: the relay carries (and keeps) the other's answer.
                assert await victim.call(other.actr_id, ECHO, b"hello") == b"hello"
                world = World(service.actr_id, other.actr_id, relay, issuer)
                relay.tamper = make_tamper(world)

                with pytest.raises(PeerNotAuthenticated, match=reason) as refused:
                    await victim.call(service.actr_id, ECHO, b"to the service?")
                assert str(service.actr_id) in str(refused.value)
                assert _transport(victim).statistics().bindings_refused == 1

                # Honest links are untouched: the victim's own, and the service's.
                assert await victim.call(other.actr_id, ECHO, b"still") == b"still"
                assert await other.call(service.actr_id, ECHO, b"fine") == b"fine"

                # With an honest path again, the victim reaches the real service.
                relay.tamper = None
                assert await victim.call(service.actr_id, ECHO, b"now") == b"now"
    warnings = [
        r
        for r in caplog.records
        if r.name == "actr_trio.transport"
        and r.levelno == logging.WARNING
        and "refused the answer" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert str(service.actr_id) in warnings[0].getMessage()
    assert re.search(reason, warnings[0].getMessage())


async def test_a_tampered_offer_is_not_answered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay rewrites the caller's offer on its way to the service: the service refuses it
    (WARNING, no answer, its links untouched); the caller's link never opens."""
    with trio.fail_after(BOUND), caplog.at_level(logging.WARNING, logger="actr_trio.transport"):
        async with serve(host="127.0.0.1", port=0, issuer_key_path=tmp_path / "issuer") as server:
            config = network_config(server.url, realm=REALM)
            relay = HostileRelay(SignalingClient(config))
            service_transport = WebRTCTransport(config)
            async with (
                ActrSystem(config, signaling=relay, transport=service_transport, direct=False)
                .attach(Echo())
                .start() as service,
                ActrSystem(config, direct=False).attach(Other()).start() as other,
                ActrSystem(
                    config, transport=WebRTCTransport(config, connect_timeout=2.0), direct=False
                )
                .attach(Caller())
                .start() as caller,
            ):
                assert await other.call(service.actr_id, ECHO, b"before") == b"before"
                relay.tamper = forge_fingerprints
                with pytest.raises(PeerUnavailable, match="did not connect"):
                    await caller.call(service.actr_id, ECHO, b"let me in")
                stats = service_transport.statistics()
                assert stats.bindings_refused == 1
                assert stats.links_failed == 0  # refused before any link existed
                # The service's link to the other node survived the forged offer.
                assert await other.call(service.actr_id, ECHO, b"after") == b"after"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"refused the offer relayed as from {caller.actr_id}" in m and "does not cover" in m
        for m in messages
    ), messages
