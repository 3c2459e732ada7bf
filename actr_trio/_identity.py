"""Node keys, issuer keys and credentials (docs/security.md, "Registration and credentials").

* :class:`NodeKey`: a node's Ed25519 key pair. Registration proves possession of it (the node
  signs the server's nonce), and the server binds the node's ``ActrId`` to its public key.
* :class:`IssuerKey`: the signaling server's Ed25519 key. It signs *credentials*: "this ActrId,
  in this realm, is held by the node with this public key, until then".
* :func:`verify_credential`: what any node does with a peer's (or its own) credential, against
  the issuer key it pinned.

Every signature is over a domain-separated message (a fixed ``actr-...-v1\\0`` prefix), so a
signature made for one purpose (a registration, a credential, a DTLS fingerprint) can never be
replayed as another.

Key files hold an unencrypted PKCS#8 PEM (a raw 32-byte private key is read too), mode 0600:
the file system is what protects them, as it protects the mailbox.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Final, final

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from google.protobuf.message import DecodeError

from ._ids import ActrId
from ._proto.actr import types_pb2
from .errors import ConfigError, CredentialError

__all__ = [
    "CREDENTIAL_DOMAIN",
    "ISSUER_PUB_FILE",
    "NODE_KEY_FILE",
    "REGISTER_DOMAIN",
    "CredentialClaims",
    "IssuerKey",
    "NodeKey",
    "decode_public_key",
    "key_id",
    "read_pinned_issuer",
    "registration_message",
    "verify_credential",
    "verify_signature",
    "write_pinned_issuer",
]

#: The node key's file name in ``data_dir``.
NODE_KEY_FILE: Final = "node_key"
#: The issuer public key a node pinned on first use, in ``data_dir`` (hex, one line).
ISSUER_PUB_FILE: Final = "issuer.pub"

#: Prefix of the message an issuer signs: the serialized ``CredentialClaims`` follow.
CREDENTIAL_DOMAIN: Final = b"actr-credential-v1\0"
#: Prefix of the message a node signs at registration (see :func:`registration_message`).
REGISTER_DOMAIN: Final = b"actr-register-v1\0"

PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
# A credential is a few hundred bytes; anything much larger is not one (checked before parsing).
MAX_CREDENTIAL_SIZE: Final = 2048
# Seconds a credential's issued_at may lie in our future: the server's clock may run ahead.
CLOCK_SKEW: Final = 300
_MAX_U63: Final = 2**63 - 1
_PRIVATE_KEY_SIZE: Final = 32


def key_id(public_key: bytes) -> str:
    """A short stable name of an Ed25519 public key: the first 16 bytes of its SHA-256, hex."""
    return hashlib.sha256(public_key).digest()[:16].hex()


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``data``.

    Never raises: a malformed key or signature is simply not a valid signature.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def registration_message(nonce: bytes, realm: str, public_key: bytes) -> bytes:
    """What a node signs to register: the server's fresh nonce, the realm and its public key.

    Fields are length-prefixed so no two different triples give the same bytes.
    """
    parts = (nonce, realm.encode(), public_key)
    return REGISTER_DOMAIN + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def decode_public_key(text: str) -> bytes:
    """A raw 32-byte Ed25519 public key from hex (64 digits) or base64 (standard or urlsafe).

    Raises:
        ConfigError: ``text`` is neither, or not 32 bytes.
    """
    text = text.strip()
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        standard = text.replace("-", "+").replace("_", "/")  # urlsafe alphabet too
        try:
            raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except ValueError:
            raw = None
    if raw is None or len(raw) != PUBLIC_KEY_SIZE:
        raise ConfigError(
            f"{text[:80]!r} is not an Ed25519 public key (64 hex digits or 44 base64 characters)"
        )
    return raw


def read_pinned_issuer(data_dir: Path | None) -> bytes | None:
    """The issuer key pinned on first use in ``data_dir/issuer.pub``, if any.

    Raises:
        ConfigError: the file exists but does not hold a public key (the message says how to
            re-pin).
    """
    if data_dir is None:
        return None
    path = data_dir / ISSUER_PUB_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable pinned issuer key ({exc})") from exc
    try:
        return decode_public_key(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; delete it to pin the server's key again") from None


def write_pinned_issuer(data_dir: Path, public_key: bytes) -> None:
    """Pin ``public_key`` in ``data_dir/issuer.pub`` (hex, mode 0600, atomically).

    Raises:
        ConfigError: the file cannot be written.
    """
    path = data_dir / ISSUER_PUB_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, public_key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot pin the issuer key ({exc})") from exc


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key ({exc})") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            # Only key files need PEM: cryptography's serialization is ~10 ms of node start.
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == _PRIVATE_KEY_SIZE:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            raise ValueError("neither PEM nor a raw 32-byte key")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not an Ed25519 private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: holds a {type(key).__name__}, not an Ed25519 private key")
    _tighten(path)
    return key


def _tighten(path: Path) -> None:
    # A key readable by others is as good as published; an older file may predate mode 0600.
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot restrict the key file to mode 0600 ({exc})") from exc


def _write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Create ``path`` (mode 0600, never overwriting) holding ``key`` as PEM, atomically."""
    from cryptography.hazmat.primitives import serialization  # as in _load_private_key

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() fails if another process created the key meanwhile: never replace a key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the key file ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _load_or_create_private_key(path: Path | None) -> Ed25519PrivateKey:
    if path is None:
        return Ed25519PrivateKey.generate()
    if not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{path.parent}: cannot create the directory ({exc})") from exc
        _write_private_key(path, Ed25519PrivateKey.generate())
    return _load_private_key(path)


class _KeyPair:
    """An Ed25519 private key with the operations both key kinds share."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self._public = private_key.public_key().public_bytes_raw()

    def public_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @property
    def key_id(self) -> str:
        """:func:`key_id` of the public key."""
        return key_id(self._public)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data`` (callers prefix their own domain)."""
        return self._private.sign(data)

    def __repr__(self) -> str:  # never the private key
        return f"{type(self).__name__}(key_id={self.key_id!r})"


@final
class NodeKey(_KeyPair):
    """This node's Ed25519 key: registration proves possession of it, and credentials and
    DTLS bindings name it."""

    @classmethod
    def load_or_create(cls, data_dir: Path | None) -> NodeKey:
        """Load ``data_dir/node_key``, creating it (mode 0600, directory 0700) on first start.

        ``data_dir=None``: a fresh key for this run only.

        Raises:
            ConfigError: the file cannot be read or created, or holds no Ed25519 private key.
        """
        path = None if data_dir is None else data_dir / NODE_KEY_FILE
        return cls(_load_or_create_private_key(path))

    @classmethod
    def generate(cls) -> NodeKey:
        """A fresh ephemeral key."""
        return cls(Ed25519PrivateKey.generate())


@final
@attrs.frozen
class CredentialClaims:
    """What a credential says: ``actr_id`` (in ``realm``) is held by the node whose key is
    ``public_key``, from ``issued_at`` until ``expires_at`` (Unix seconds), as vouched for by
    the issuer key ``issuer_key_id``."""

    actr_id: ActrId
    public_key: bytes
    realm: str
    issued_at: int
    expires_at: int
    issuer_key_id: str

    def to_proto(self) -> types_pb2.CredentialClaims:
        return types_pb2.CredentialClaims(
            actr_id=self.actr_id.to_proto(),
            public_key=self.public_key,
            realm=self.realm,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            issuer_key_id=self.issuer_key_id,
        )

    @property
    def lifetime(self) -> int:
        """Seconds between issue and expiry."""
        return self.expires_at - self.issued_at


@final
class IssuerKey(_KeyPair):
    """A signaling server's Ed25519 issuer key: it signs the credentials of registered nodes."""

    @classmethod
    def load_or_create(cls, path: Path | None) -> IssuerKey:
        """Load the key file at ``path``, creating it (mode 0600) if missing.

        ``path=None``: a fresh key for this run only (nodes that pinned it will refuse the next
        one: persist it for anything but development).

        Raises:
            ConfigError: the file cannot be read or created, or holds no Ed25519 private key.
        """
        return cls(_load_or_create_private_key(path))

    @classmethod
    def generate(cls) -> IssuerKey:
        """A fresh ephemeral key."""
        return cls(Ed25519PrivateKey.generate())

    def issue(self, actr_id: ActrId, public_key: bytes, *, now: float, lifetime: float) -> bytes:
        """A serialized ``Credential`` for ``actr_id`` held by ``public_key``, valid from ``now``
        for ``lifetime`` seconds."""
        issued_at = int(now)
        claims = CredentialClaims(
            actr_id=actr_id,
            public_key=public_key,
            realm=actr_id.realm,
            issued_at=issued_at,
            expires_at=issued_at + max(1, int(lifetime)),
            issuer_key_id=self.key_id,
        )
        return self.sign_claims(claims)

    def sign_claims(self, claims: CredentialClaims) -> bytes:
        """Serialize and sign ``claims`` as they are (tests use it to forge odd credentials)."""
        body = claims.to_proto().SerializeToString(deterministic=True)
        signature = self.sign(CREDENTIAL_DOMAIN + body)
        return types_pb2.Credential(claims=body, signature=signature).SerializeToString()


def verify_credential(raw: bytes, issuer_public_key: bytes, *, now: float) -> CredentialClaims:
    """The claims of the serialized credential ``raw`` once verified against the issuer key.

    Checks, in order: it decodes; it names ``issuer_public_key`` as issuer; the signature is
    that key's, over exactly these claims; every field is in range; ``now`` lies between issue
    (less :data:`CLOCK_SKEW`) and expiry.

    Raises:
        CredentialError: saying which check failed.
    """
    credential = _decode_credential(raw)
    try:
        msg = types_pb2.CredentialClaims.FromString(credential.claims)
    except DecodeError as exc:
        raise CredentialError(f"malformed credential claims ({exc})") from None
    expected = key_id(issuer_public_key)
    if msg.issuer_key_id != expected:
        raise CredentialError(
            f"credential issued by key {msg.issuer_key_id[:32]!r}, not by the trusted issuer"
            f" {expected}"
        )
    if not verify_signature(
        issuer_public_key, CREDENTIAL_DOMAIN + credential.claims, credential.signature
    ):
        raise CredentialError(f"credential signature does not verify against issuer {expected}")
    claims = _claims_from_proto(msg)
    if now >= claims.expires_at:
        raise CredentialError(
            f"credential of {claims.actr_id} expired {now - claims.expires_at:.0f} s ago"
        )
    if now + CLOCK_SKEW < claims.issued_at:
        raise CredentialError(f"credential of {claims.actr_id} is issued in the future")
    return claims


def _decode_credential(raw: bytes) -> types_pb2.Credential:
    if not raw:
        raise CredentialError("no credential")
    if len(raw) > MAX_CREDENTIAL_SIZE:
        raise CredentialError(f"credential of {len(raw)} bytes (max {MAX_CREDENTIAL_SIZE})")
    try:
        return types_pb2.Credential.FromString(raw)
    except DecodeError as exc:
        raise CredentialError(f"malformed credential ({exc})") from None


def _claims_from_proto(msg: types_pb2.CredentialClaims) -> CredentialClaims:
    # Signed by the issuer, so well-formed unless the issuer is broken; checked anyway, since a
    # bad value here would otherwise surface far from its cause.
    if not msg.HasField("actr_id"):
        raise CredentialError("credential names no ActrId")
    try:
        actr_id = ActrId.from_proto(msg.actr_id)
    except ConfigError as exc:
        raise CredentialError(f"credential names an invalid ActrId ({exc})") from None
    if not 1 <= actr_id.serial <= _MAX_U63:
        raise CredentialError(f"credential serial {actr_id.serial} out of range")
    if msg.realm != actr_id.realm:
        raise CredentialError(f"credential realm {msg.realm!r} is not its ActrId's")
    if len(msg.public_key) != PUBLIC_KEY_SIZE:
        raise CredentialError("credential public key is not 32 bytes")
    if not 0 <= msg.issued_at <= msg.expires_at <= _MAX_U63:
        raise CredentialError("credential times out of range")
    return CredentialClaims(
        actr_id=actr_id,
        public_key=bytes(msg.public_key),
        realm=msg.realm,
        issued_at=msg.issued_at,
        expires_at=msg.expires_at,
        issuer_key_id=msg.issuer_key_id,
    )
