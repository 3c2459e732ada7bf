"""DTLS binding: an offer or answer proves that its DTLS certificate belongs to its sender.

Sans-IO (no aiortc, no Trio): ``_webrtc.py`` seals every SDP it sends and opens every SDP it
receives through here. What travels in a relay's payload is a ``SignedDescription`` (see
``protos/actr/binding.proto``): the SDP, the sender's credential (issued by signaling) and the
sender's node-key signature over the set of ``a=fingerprint`` values of that SDP, its own
``ActrId``, the intended peer's ``ActrId`` and the kind (offer/answer).

Invariants:

* :func:`open_description` returns only if every check passed: the credential verifies against
  the pinned issuer key and is current; it names the relay's source and our realm; the
  signature by the credential's key covers exactly the fingerprints of the SDP handed back, for
  this signer, this receiver and this kind. Anything else raises ``PeerNotAuthenticated``.
* The fingerprints are read from the SDP the way aiortc reads them (every ``a=fingerprint:``
  line, session or media level), so the certificate aiortc then holds the DTLS handshake to is
  one the sender signed; aiortc fails the handshake for any other certificate
  (``RTCDtlsTransport._validate_peer_identity``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Final, Literal, final

import attrs
from google.protobuf.message import DecodeError

from .._identity import CredentialClaims, verify_credential, verify_signature
from .._ids import ActrId
from .._proto.actr import binding_pb2
from ..errors import CredentialError, PeerNotAuthenticated

__all__ = [
    "BINDING_DOMAIN",
    "MAX_SIGNED_DESCRIPTION",
    "Kind",
    "VerifiedDescription",
    "binding_message",
    "open_description",
    "sdp_fingerprints",
    "seal_description",
]

Kind = Literal["offer", "answer"]

#: Prefix of every binding signature: a node key's signature for anything else never verifies.
BINDING_DOMAIN: Final = b"actr-dtls-binding-v1\0"
#: Largest relay payload ever opened (base64 text), whatever ``max_size`` says. A signaling
#: frame is at most 64 KiB, and the in-memory service has no frame limit: bound the work before
#: decoding anything. Nodes use ``Config.max_relay_payload`` (32 KiB by default) below it.
MAX_SIGNED_DESCRIPTION: Final = 64 * 1024
#: Digest algorithms aiortc checks a peer certificate with (``X509_DIGEST_ALGORITHMS``): an SDP
#: with none of them binds nothing, since aiortc would accept no certificate for it.
CHECKED_ALGORITHMS: Final = frozenset({"sha-256", "sha-384", "sha-512"})
# A fingerprint line's value is an algorithm name and ~100 hex digits and colons.
_MAX_FINGERPRINT: Final = 256
_MAX_FINGERPRINTS: Final = 64
_SIGNATURE_SIZE: Final = 64
_KINDS: Final = ("offer", "answer")


@final
@attrs.frozen
class VerifiedDescription:
    """An SDP whose DTLS fingerprints its sender proved to be its own.

    Attributes:
        sdp: the SDP, unchanged (hand it to aiortc).
        claims: the sender's verified credential claims (``claims.actr_id`` is the sender).
        fingerprints: the signed fingerprints, as :func:`sdp_fingerprints` returns them.
    """

    sdp: str
    claims: CredentialClaims
    fingerprints: tuple[str, ...]


def sdp_fingerprints(sdp: str) -> tuple[str, ...]:
    """The distinct ``a=fingerprint`` values of ``sdp`` as ``"algorithm VALUE"``, sorted.

    Lines are found as aiortc's ``SessionDescription.parse`` finds them (``splitlines``, lines
    starting with ``a=`` whose attribute is ``fingerprint``), so nothing aiortc would use is
    missed. The algorithm is lower-cased and the value upper-cased, as aiortc compares them.

    Raises:
        PeerNotAuthenticated: a fingerprint line is malformed, there are too many, or none
            uses an algorithm aiortc checks (such an SDP binds no certificate).
    """
    found: set[str] = set()
    for line in sdp.splitlines():
        if not line.startswith("a="):
            continue
        attribute, sep, value = line[2:].partition(":")
        if attribute != "fingerprint":
            continue
        parts = value.split()
        if not sep or len(parts) != 2 or len(value) > _MAX_FINGERPRINT:
            raise PeerNotAuthenticated(f"malformed fingerprint line {line[:80]!r} in the SDP")
        found.add(f"{parts[0].lower()} {parts[1].upper()}")
        if len(found) > _MAX_FINGERPRINTS:
            raise PeerNotAuthenticated(f"more than {_MAX_FINGERPRINTS} fingerprints in the SDP")
    if not any(fp.split(" ", 1)[0] in CHECKED_ALGORITHMS for fp in found):
        raise PeerNotAuthenticated(
            "the SDP has no DTLS fingerprint with an algorithm the handshake checks"
            f" ({', '.join(sorted(CHECKED_ALGORITHMS))})"
        )
    return tuple(sorted(found))


def binding_message(
    kind: Kind, *, signer: ActrId, peer: ActrId, fingerprints: tuple[str, ...]
) -> bytes:
    """The bytes a node signs for an SDP of ``kind`` that ``signer`` sends to ``peer``.

    Length-prefixed fields after :data:`BINDING_DOMAIN`, so no two different inputs give the
    same bytes; the kind and both ids are in it, so a signature cannot be replayed to another
    peer, by another sender, or as the other half of the exchange.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} must be 'offer' or 'answer'")
    fields = (
        kind.encode(),
        str(signer).encode(),
        str(peer).encode(),
        "\n".join(fingerprints).encode(),
    )
    return BINDING_DOMAIN + b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def seal_description(
    kind: Kind,
    sdp: str,
    *,
    signer: ActrId,
    peer: ActrId,
    credential: bytes,
    sign: Callable[[bytes], bytes],
) -> str:
    """The relay payload for our own ``sdp``: the SDP, our credential and our signature.

    Args:
        kind: "offer" or "answer".
        sdp: our local description, as aiortc wrote it.
        signer: our ``ActrId`` (the one ``credential`` names).
        peer: the node the description is for.
        credential: our current serialized credential.
        sign: our node key's ``sign``.

    Raises:
        PeerNotAuthenticated: ``sdp`` has no usable fingerprint (aiortc always writes some).
    """
    fingerprints = sdp_fingerprints(sdp)
    signature = sign(binding_message(kind, signer=signer, peer=peer, fingerprints=fingerprints))
    message = binding_pb2.SignedDescription(sdp=sdp, credential=credential, signature=signature)
    return base64.b64encode(message.SerializeToString()).decode("ascii")


def open_description(
    payload: str,
    *,
    kind: Kind,
    source: ActrId,
    local: ActrId,
    issuer_key: bytes,
    now: float,
    max_size: int = MAX_SIGNED_DESCRIPTION,
) -> VerifiedDescription:
    """Verify a relayed offer or answer; return its SDP only if its binding holds.

    Args:
        payload: the relay's payload, as :func:`seal_description` made it.
        kind: the relay's kind ("offer" or "answer").
        source: the relay's source, as signaling reported it: the credential must name it.
        local: our own ``ActrId`` (the signature must be for us; the credential for our realm).
        issuer_key: the issuer public key we pinned.
        now: wall-clock Unix seconds (credential expiry).
        max_size: the longest ``payload`` read (characters; ``Config.max_relay_payload``): a
            longer one is refused before anything is decoded.

    Raises:
        PeerNotAuthenticated: saying which check failed (the module docstring lists them).
    """
    message = _decode(payload, max_size)
    try:
        claims = verify_credential(message.credential, issuer_key, now=now)
    except CredentialError as exc:
        raise PeerNotAuthenticated(f"credential refused: {exc}") from exc
    if claims.realm != local.realm or claims.actr_id.realm != local.realm:
        raise PeerNotAuthenticated(
            f"credential is for realm {claims.realm!r}, not ours ({local.realm!r})"
        )
    if claims.actr_id != source:
        raise PeerNotAuthenticated(
            f"credential is for {claims.actr_id}, not for the sender {source}"
        )
    fingerprints = sdp_fingerprints(message.sdp)
    signed = binding_message(kind, signer=source, peer=local, fingerprints=fingerprints)
    if not verify_signature(claims.public_key, signed, message.signature):
        raise PeerNotAuthenticated(
            f"the {kind}'s signature does not cover the DTLS fingerprints of its SDP for"
            f" {source} -> {local} (SDP or signature altered, or made for another peer or role)"
        )
    return VerifiedDescription(sdp=message.sdp, claims=claims, fingerprints=fingerprints)


def _decode(payload: str, max_size: int) -> binding_pb2.SignedDescription:
    if len(payload) > min(max_size, MAX_SIGNED_DESCRIPTION):
        raise PeerNotAuthenticated(
            f"signed description of {len(payload)} characters"
            f" (max {min(max_size, MAX_SIGNED_DESCRIPTION)})"
        )
    try:
        raw = base64.b64decode(payload.encode("ascii"), validate=True)
        message = binding_pb2.SignedDescription.FromString(raw)
    except (UnicodeError, binascii.Error, DecodeError) as exc:
        # UnicodeDecodeError: invalid UTF-8 in the sdp field with the pure-Python protobuf.
        raise PeerNotAuthenticated(f"not a signed description ({exc})") from None
    if len(message.signature) != _SIGNATURE_SIZE:
        raise PeerNotAuthenticated("the description carries no signature")
    return message
