"""The sans-IO DTLS binding (transport/_binding.py): every way a relay or an impostor could put
another certificate, credential or signature behind an identity is refused with
``PeerNotAuthenticated``; an honest description opens. No aiortc, no event loop."""

from __future__ import annotations

import base64
import time
from typing import Final

import pytest

from actr_trio._identity import CredentialClaims, IssuerKey, NodeKey
from actr_trio._ids import ActrId, ActrType
from actr_trio._proto.actr import binding_pb2
from actr_trio.errors import PeerNotAuthenticated, PeerUnavailable
from actr_trio.transport._binding import (
    MAX_SIGNED_DESCRIPTION,
    Kind,
    binding_message,
    open_description,
    sdp_fingerprints,
    seal_description,
)

REALM: Final = "binding"
NOW: Final = 1_800_000_000.0
FP_A: Final = ":".join(["AB"] * 32)
FP_B: Final = ":".join(["CD"] * 32)
FP_A_384: Final = ":".join(["EF"] * 48)


def _sdp(fingerprint: str = FP_A, *, extra: str = "") -> str:
    """An SDP shaped as aiortc writes one (bundled media + data, fingerprints per section)."""
    media = []
    for kind, proto in (("video", "UDP/TLS/RTP/SAVPF 97"), ("application", "DTLS/SCTP 5000")):
        media += [
            f"m={kind} 9 {proto}",
            "c=IN IP4 127.0.0.1",
            "a=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:0123456789abcdef0123456789",
            f"a=fingerprint:sha-256 {fingerprint}",
            f"a=fingerprint:sha-384 {FP_A_384}",
            "a=setup:actpass",
        ]
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1", *media]
    return "\r\n".join(lines) + "\r\n" + extra


class Node:
    """A node as signaling sees it: id, node key and a credential from ``issuer``."""

    def __init__(
        self,
        serial: int,
        issuer: IssuerKey,
        *,
        realm: str = REALM,
        now: float = NOW,
        lifetime: float = 3600,
    ) -> None:
        self.actr_id = ActrId(realm, serial, ActrType("acme", "node"))
        self.key = NodeKey.generate()
        self.credential = issuer.issue(
            self.actr_id, self.key.public_bytes(), now=now, lifetime=lifetime
        )

    def seal(self, kind: Kind, sdp: str, peer: ActrId) -> str:
        return seal_description(
            kind,
            sdp,
            signer=self.actr_id,
            peer=peer,
            credential=self.credential,
            sign=self.key.sign,
        )


@pytest.fixture
def issuer() -> IssuerKey:
    return IssuerKey.generate()


@pytest.fixture
def alice(issuer: IssuerKey) -> Node:
    return Node(1, issuer)


@pytest.fixture
def bob(issuer: IssuerKey) -> Node:
    return Node(2, issuer)


@pytest.fixture
def mallory(issuer: IssuerKey) -> Node:
    """A realm member: a genuine credential of its own, nothing else."""
    return Node(3, issuer)


def _open(
    payload: str,
    *,
    source: Node,
    local: Node,
    issuer: IssuerKey,
    kind: Kind = "offer",
    now: float = NOW + 10,
) -> str:
    return open_description(
        payload,
        kind=kind,
        source=source.actr_id,
        local=local.actr_id,
        issuer_key=issuer.public_bytes(),
        now=now,
    ).sdp


def _refused(
    match: str,
    payload: str,
    *,
    source: Node,
    local: Node,
    issuer: IssuerKey,
    kind: Kind = "offer",
) -> None:
    with pytest.raises(PeerNotAuthenticated, match=match):
        _open(payload, source=source, local=local, issuer=issuer, kind=kind)


def _rewrap(payload: str, **fields: object) -> str:
    message = binding_pb2.SignedDescription.FromString(base64.b64decode(payload))
    for name, value in fields.items():
        setattr(message, name, value)
    return base64.b64encode(message.SerializeToString()).decode()


# -------------------------------------------------------------------------------- honest


@pytest.mark.parametrize("kind", ["offer", "answer"])
def test_an_honest_description_opens_with_the_senders_claims(
    kind: Kind, issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    sdp = _sdp()
    payload = alice.seal(kind, sdp, bob.actr_id)
    verified = open_description(
        payload,
        kind=kind,
        source=alice.actr_id,
        local=bob.actr_id,
        issuer_key=issuer.public_bytes(),
        now=NOW + 10,
    )
    assert verified.sdp == sdp
    assert verified.claims.actr_id == alice.actr_id
    assert verified.claims.public_key == alice.key.public_bytes()
    assert verified.fingerprints == (f"sha-256 {FP_A}", f"sha-384 {FP_A_384}")
    assert len(payload) < 4 * 1024  # far inside a 64 KiB signaling frame


def test_peer_not_authenticated_is_a_peer_unavailable() -> None:
    # The runtime fails calls at once on PeerUnavailable from a link that never opened.
    assert issubclass(PeerNotAuthenticated, PeerUnavailable)


# -------------------------------------------------------------------------------- the SDP


def test_a_swapped_fingerprint_is_refused(issuer: IssuerKey, alice: Node, bob: Node) -> None:
    payload = alice.seal("offer", _sdp(FP_A), bob.actr_id)
    message = binding_pb2.SignedDescription.FromString(base64.b64decode(payload))
    swapped = _rewrap(payload, sdp=message.sdp.replace(FP_A, FP_B))
    _refused(
        "does not cover the DTLS fingerprints", swapped, source=alice, local=bob, issuer=issuer
    )


def test_one_fingerprint_swapped_in_one_section_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    sdp = _sdp(FP_A)
    payload = alice.seal("offer", sdp, bob.actr_id)
    # Only the last media section's line changes: aiortc would check that section's list.
    head, _, tail = sdp.rpartition(f"a=fingerprint:sha-256 {FP_A}")
    tampered = _rewrap(payload, sdp=f"{head}a=fingerprint:sha-256 {FP_B}{tail}")
    _refused("does not cover", tampered, source=alice, local=bob, issuer=issuer)


@pytest.mark.parametrize(
    "extra",
    [
        f"a=fingerprint:sha-256 {FP_B}\r\n",  # an extra certificate
        f"a=fingerprint:sha-1 {FP_B[:59]}\r\n",  # an algorithm aiortc ignores: still a change
    ],
)
def test_an_added_fingerprint_is_refused(
    extra: str, issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    payload = alice.seal("offer", _sdp(), bob.actr_id)
    tampered = _rewrap(payload, sdp=_sdp(extra=extra))
    _refused("does not cover", tampered, source=alice, local=bob, issuer=issuer)


def test_a_description_re_signed_by_another_key_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node, mallory: Node
) -> None:
    # Mallory puts her certificate behind Alice's credential: she can sign, but not as Alice.
    forged = seal_description(
        "offer",
        _sdp(FP_B),
        signer=alice.actr_id,
        peer=bob.actr_id,
        credential=alice.credential,
        sign=mallory.key.sign,
    )
    _refused("does not cover", forged, source=alice, local=bob, issuer=issuer)


# -------------------------------------------------------------------------------- credentials


def test_a_swapped_credential_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node, mallory: Node
) -> None:
    # The relay swaps in Mallory's genuine credential and signature, still "from" Alice.
    payload = mallory.seal("offer", _sdp(FP_B), bob.actr_id)
    _refused(
        rf"credential is for {mallory.actr_id}, not for the sender {alice.actr_id}",
        payload,
        source=alice,
        local=bob,
        issuer=issuer,
    )
    # Alice's SDP and signature with Mallory's credential: the signature is not Mallory's.
    honest = alice.seal("offer", _sdp(FP_A), bob.actr_id)
    _refused(
        "not for the sender",
        _rewrap(honest, credential=mallory.credential),
        source=alice,
        local=bob,
        issuer=issuer,
    )


def test_the_credential_of_another_peer_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node, mallory: Node
) -> None:
    # Mallory relays her own offer with Alice's credential (she has seen it on the relay path).
    stolen = seal_description(
        "offer",
        _sdp(FP_B),
        signer=alice.actr_id,
        peer=bob.actr_id,
        credential=alice.credential,
        sign=mallory.key.sign,
    )
    _refused("not for the sender", stolen, source=mallory, local=bob, issuer=issuer)


def test_an_expired_credential_is_refused(issuer: IssuerKey, bob: Node) -> None:
    old = Node(5, issuer, now=NOW - 7200, lifetime=3600)
    payload = old.seal("offer", _sdp(), bob.actr_id)
    _refused(r"credential refused: .*expired", payload, source=old, local=bob, issuer=issuer)


def test_a_foreign_issuers_credential_is_refused(issuer: IssuerKey, bob: Node) -> None:
    # A node whose credential another server (another issuer key) issued: a relay's own issuer.
    outsider = Node(6, IssuerKey.generate())
    payload = outsider.seal("offer", _sdp(), bob.actr_id)
    _refused(
        r"credential refused: .*not by the trusted issuer",
        payload,
        source=outsider,
        local=bob,
        issuer=issuer,
    )


def test_a_forged_credential_is_refused(issuer: IssuerKey, alice: Node, bob: Node) -> None:
    # Right issuer key id, claims edited after signing (Mallory names her key as Alice's).
    forger = IssuerKey.generate()
    claims = CredentialClaims(
        actr_id=alice.actr_id,
        public_key=NodeKey.generate().public_bytes(),
        realm=REALM,
        issued_at=int(NOW),
        expires_at=int(NOW) + 3600,
        issuer_key_id=issuer.key_id,
    )
    payload = alice.seal("offer", _sdp(), bob.actr_id)
    forged = _rewrap(payload, credential=forger.sign_claims(claims))
    _refused("credential refused: .*signature", forged, source=alice, local=bob, issuer=issuer)


def test_a_wrong_realm_peer_is_refused(issuer: IssuerKey, bob: Node) -> None:
    # Same issuer (one server, several realms), but the peer belongs to another realm.
    stranger = Node(7, issuer, realm="elsewhere")
    payload = stranger.seal("offer", _sdp(), bob.actr_id)
    _refused(
        r"realm 'elsewhere', not ours \('binding'\)",
        payload,
        source=stranger,
        local=bob,
        issuer=issuer,
    )


def test_no_credential_is_refused(issuer: IssuerKey, alice: Node, bob: Node) -> None:
    payload = _rewrap(alice.seal("offer", _sdp(), bob.actr_id), credential=b"")
    _refused("credential refused: no credential", payload, source=alice, local=bob, issuer=issuer)


# -------------------------------------------------------------------------------- replays


def test_a_signature_replayed_to_another_peer_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node, mallory: Node
) -> None:
    # Alice's offer to Mallory, forwarded by Mallory (or the relay) to Bob as Alice's.
    to_mallory = alice.seal("offer", _sdp(), mallory.actr_id)
    _refused("does not cover", to_mallory, source=alice, local=bob, issuer=issuer)
    assert _open(to_mallory, source=alice, local=mallory, issuer=issuer)


@pytest.mark.parametrize(("signed", "replayed"), [("offer", "answer"), ("answer", "offer")])
def test_a_signature_replayed_in_the_other_role_is_refused(
    signed: Kind, replayed: Kind, issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    payload = alice.seal(signed, _sdp(), bob.actr_id)
    _refused("does not cover", payload, source=alice, local=bob, issuer=issuer, kind=replayed)


def test_messages_differ_in_every_field() -> None:
    a, b = ActrId(REALM, 1, ActrType("m", "n")), ActrId(REALM, 2, ActrType("m", "n"))
    fps = (f"sha-256 {FP_A}",)
    base = binding_message("offer", signer=a, peer=b, fingerprints=fps)
    variants = [
        binding_message("answer", signer=a, peer=b, fingerprints=fps),
        binding_message("offer", signer=b, peer=a, fingerprints=fps),
        binding_message("offer", signer=a, peer=a, fingerprints=fps),
        binding_message("offer", signer=a, peer=b, fingerprints=(f"sha-256 {FP_B}",)),
    ]
    assert len({base, *variants}) == 5
    with pytest.raises(ValueError, match="kind"):
        binding_message("ice", signer=a, peer=b, fingerprints=fps)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_sdp(), "not a signed description"),  # a bare SDP, as before the binding
        ("!!!!", "not a signed description"),
        ("é", "not a signed description"),
        (base64.b64encode(b"\xff\xff\xff").decode(), "not a signed description"),
        ("A" * (MAX_SIGNED_DESCRIPTION + 4), "max"),
    ],
)
def test_malformed_payloads_are_refused(
    payload: str, match: str, issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    _refused(match, payload, source=alice, local=bob, issuer=issuer)


def test_a_description_without_signature_is_refused(
    issuer: IssuerKey, alice: Node, bob: Node
) -> None:
    payload = _rewrap(alice.seal("offer", _sdp(), bob.actr_id), signature=b"")
    _refused("no signature", payload, source=alice, local=bob, issuer=issuer)


# -------------------------------------------------------------------------------- fingerprints


def test_fingerprints_are_read_as_aiortc_reads_them() -> None:
    sdp = (
        "v=0\r\n"
        f"a=fingerprint:SHA-256 {FP_A.lower()}\r\n"  # session level, odd case
        "m=application 9 DTLS/SCTP 5000\r\n"
        f"a=fingerprint:sha-256 {FP_A}\r\n"  # the same one again, media level
        "a=fingerprints:sha-256 00\r\n"  # another attribute
        "b=fingerprint:sha-256 00\r\n"  # not an attribute line
        f"a=fingerprint:sha-512 {FP_B}\n"  # bare LF: splitlines() splits it too
    )
    assert sdp_fingerprints(sdp) == (f"sha-256 {FP_A}", f"sha-512 {FP_B}")


@pytest.mark.parametrize(
    ("sdp", "match"),
    [
        ("v=0\r\na=fingerprint\r\n", "malformed fingerprint"),
        ("v=0\r\na=fingerprint:sha-256\r\n", "malformed fingerprint"),
        (f"v=0\r\na=fingerprint:sha-256 {FP_A} x\r\n", "malformed fingerprint"),
        ("v=0\r\n", "no DTLS fingerprint"),
        (f"v=0\r\na=fingerprint:sha-1 {FP_A}\r\n", "no DTLS fingerprint"),
    ],
)
def test_sdps_that_bind_nothing_are_refused(sdp: str, match: str) -> None:
    with pytest.raises(PeerNotAuthenticated, match=match):
        sdp_fingerprints(sdp)


def test_sealing_real_time_credentials(issuer: IssuerKey, alice: Node, bob: Node) -> None:
    # The clock the transport uses: time.time(). A fresh credential opens now.
    fresh = Node(8, issuer, now=time.time())
    payload = fresh.seal("answer", _sdp(), bob.actr_id)
    assert _open(payload, source=fresh, local=bob, issuer=issuer, kind="answer", now=time.time())
