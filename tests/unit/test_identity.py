"""Node keys, issuer keys and credentials (actr_trio._identity)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from actr_trio._identity import (
    CLOCK_SKEW,
    NODE_KEY_FILE,
    CredentialClaims,
    IssuerKey,
    NodeKey,
    decode_public_key,
    key_id,
    registration_message,
    verify_credential,
    verify_signature,
)
from actr_trio._ids import ActrId, ActrType
from actr_trio._proto.actr import types_pb2
from actr_trio.errors import AuthError, ConfigError, CredentialError

NOW = 1_700_000_000.0
ECHO_ID = ActrId("alpha", 7, ActrType("acme", "echo"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_node_key_is_created_private_and_kept_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    first = NodeKey.load_or_create(data_dir)
    assert mode(data_dir) == 0o700
    assert mode(data_dir / NODE_KEY_FILE) == 0o600
    again = NodeKey.load_or_create(data_dir)
    assert again.public_bytes() == first.public_bytes()
    assert again.key_id == first.key_id == key_id(first.public_bytes())
    assert len(first.key_id) == 32
    assert repr(first) == f"NodeKey(key_id={first.key_id!r})"  # never the private key
    # No stray temporary file is left beside it.
    assert sorted(p.name for p in data_dir.iterdir()) == [NODE_KEY_FILE]


def test_ephemeral_node_keys_differ() -> None:
    assert (
        NodeKey.load_or_create(None).public_bytes() != NodeKey.load_or_create(None).public_bytes()
    )


def test_a_key_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    key = NodeKey.load_or_create(tmp_path)
    (tmp_path / NODE_KEY_FILE).chmod(0o644)
    assert NodeKey.load_or_create(tmp_path).public_bytes() == key.public_bytes()
    assert mode(tmp_path / NODE_KEY_FILE) == 0o600


def test_a_raw_32_byte_key_file_is_read(tmp_path: Path) -> None:
    (tmp_path / NODE_KEY_FILE).write_bytes(bytes(range(32)))
    key = NodeKey.load_or_create(tmp_path)
    assert len(key.public_bytes()) == 32


@pytest.mark.parametrize("content", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nxx\n"])
def test_a_corrupt_key_file_is_a_config_error_naming_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / NODE_KEY_FILE).write_bytes(content)
    with pytest.raises(ConfigError, match=NODE_KEY_FILE):
        NodeKey.load_or_create(tmp_path)


def test_signatures_verify_only_for_their_key_and_data() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    sig = key.sign(b"data")
    assert len(sig) == 64
    assert verify_signature(key.public_bytes(), b"data", sig)
    assert not verify_signature(key.public_bytes(), b"datA", sig)
    assert not verify_signature(other.public_bytes(), b"data", sig)
    assert not verify_signature(b"short", b"data", sig)
    assert not verify_signature(key.public_bytes(), b"data", sig[:63])


def test_registration_message_is_unambiguous() -> None:
    # Moving a byte from the nonce into the realm gives a different message.
    assert registration_message(b"ab", "c", b"k") != registration_message(b"a", "bc", b"k")


def test_issuer_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "signaling.db.issuer_key"
    issuer = IssuerKey.load_or_create(path)
    assert mode(path) == 0o600
    assert IssuerKey.load_or_create(path).public_bytes() == issuer.public_bytes()


def test_credential_round_trip() -> None:
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    raw = issuer.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=3600)
    claims = verify_credential(raw, issuer.public_bytes(), now=NOW + 10)
    assert claims == CredentialClaims(
        actr_id=ECHO_ID,
        public_key=node.public_bytes(),
        realm="alpha",
        issued_at=int(NOW),
        expires_at=int(NOW) + 3600,
        issuer_key_id=issuer.key_id,
    )
    assert claims.lifetime == 3600


def test_expired_credential_is_refused() -> None:
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    raw = issuer.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=60)
    verify_credential(raw, issuer.public_bytes(), now=NOW + 59)
    with pytest.raises(CredentialError, match="expired"):
        verify_credential(raw, issuer.public_bytes(), now=NOW + 60)


def test_credential_from_the_future_is_refused_beyond_the_clock_skew() -> None:
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    raw = issuer.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=3600)
    verify_credential(raw, issuer.public_bytes(), now=NOW - CLOCK_SKEW)
    with pytest.raises(CredentialError, match="future"):
        verify_credential(raw, issuer.public_bytes(), now=NOW - CLOCK_SKEW - 1)


def test_foreign_issuer_is_refused() -> None:
    issuer, foreign, node = IssuerKey.generate(), IssuerKey.generate(), NodeKey.generate()
    raw = foreign.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=3600)
    with pytest.raises(CredentialError, match="not by the trusted issuer"):
        verify_credential(raw, issuer.public_bytes(), now=NOW)


def test_foreign_issuer_claiming_the_trusted_key_id_is_refused() -> None:
    issuer, foreign, node = IssuerKey.generate(), IssuerKey.generate(), NodeKey.generate()
    claims = CredentialClaims(
        ECHO_ID, node.public_bytes(), "alpha", int(NOW), int(NOW) + 60, issuer.key_id
    )
    raw = foreign.sign_claims(claims)
    with pytest.raises(CredentialError, match="signature does not verify"):
        verify_credential(raw, issuer.public_bytes(), now=NOW)


def tamper(raw: bytes, **changes: object) -> bytes:
    credential = types_pb2.Credential.FromString(raw)
    claims = types_pb2.CredentialClaims.FromString(credential.claims)
    for name, value in changes.items():
        if name == "serial":
            claims.actr_id.serial = value  # type: ignore[assignment]
        else:
            setattr(claims, name, value)
    credential.claims = claims.SerializeToString()
    return credential.SerializeToString()


@pytest.mark.parametrize(
    "changes",
    [
        {"serial": 8},
        {"public_key": bytes(32)},
        {"expires_at": int(NOW) + 10**6},
        {"realm": "beta"},
    ],
    ids=["serial", "public-key", "expiry", "realm"],
)
def test_tampered_claims_are_refused(changes: dict[str, object]) -> None:
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    raw = issuer.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=3600)
    with pytest.raises(CredentialError, match="signature"):
        verify_credential(tamper(raw, **changes), issuer.public_bytes(), now=NOW)


def test_flipped_signature_is_refused() -> None:
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    credential = types_pb2.Credential.FromString(
        issuer.issue(ECHO_ID, node.public_bytes(), now=NOW, lifetime=3600)
    )
    credential.signature = bytes([credential.signature[0] ^ 1]) + credential.signature[1:]
    with pytest.raises(CredentialError):
        verify_credential(credential.SerializeToString(), issuer.public_bytes(), now=NOW)


@pytest.mark.parametrize(
    "raw", [b"", b"\xff\xff\xff", b"x" * 5000], ids=["empty", "garbage", "oversized"]
)
def test_malformed_credentials_are_credential_errors(raw: bytes) -> None:
    with pytest.raises(CredentialError):
        verify_credential(raw, IssuerKey.generate().public_bytes(), now=NOW)


def test_signed_but_invalid_claims_are_refused() -> None:
    # Only a broken issuer would sign these; verification still refuses them.
    issuer, node = IssuerKey.generate(), NodeKey.generate()
    bad = [
        CredentialClaims(ECHO_ID, b"short", "alpha", int(NOW), int(NOW) + 60, issuer.key_id),
        CredentialClaims(ECHO_ID, node.public_bytes(), "beta", int(NOW), int(NOW) + 60, issuer.key_id),
        CredentialClaims(
            ActrId("alpha", 0, ECHO_ID.type), node.public_bytes(), "alpha", int(NOW), int(NOW) + 60,
            issuer.key_id,
        ),
    ]  # fmt: skip
    for claims in bad:
        with pytest.raises(CredentialError):
            verify_credential(issuer.sign_claims(claims), issuer.public_bytes(), now=NOW)


def test_credential_error_is_an_auth_error() -> None:
    assert issubclass(CredentialError, AuthError)


def test_public_keys_decode_from_hex_and_base64() -> None:
    raw = NodeKey.generate().public_bytes()
    assert decode_public_key(raw.hex()) == raw
    assert decode_public_key(base64.b64encode(raw).decode()) == raw
    assert decode_public_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    for bad in ["", "zz", raw.hex()[:-2], "not a key at all"]:
        with pytest.raises(ConfigError, match="not an Ed25519 public key"):
            decode_public_key(bad)
