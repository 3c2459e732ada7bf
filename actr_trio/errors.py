"""The actr_trio error tree. Every error the library raises to users is one of these.

::

    ActrError
    ├── ConfigError (also ValueError)          invalid configuration or argument
    │   ├── DataDirInUse                       another node holds that data_dir
    │   └── MetricsUnavailable                 Config.metrics set without the `metrics` extra
    ├── CodegenError                           `actr-trio codegen` failed
    ├── ShuttingDown                           *we* are closing: nothing new accepted
    ├── Retryable                              raised by a handler: run it again (up to max_attempts)
    ├── StreamIncomplete                       a reliable stream closed with chunks unacknowledged
    ├── CallError                              a call or tell did not succeed
    │   ├── RemoteError                        the remote handler raised (code + message travel back)
    │   ├── RouteNotFound                      the target has no handler for the route key
    │   ├── DeadlineExceeded                   no answer before the deadline
    │   ├── EnvelopeTooLarge                   over Config.max_payload (either side)
    │   ├── MalformedEnvelope                  the envelope or its payload did not decode
    │   ├── WrongTarget                        wrong realm, or not addressed to that node
    │   ├── Overloaded                         receiver's mailbox full (retryable)
    │   ├── PermissionDenied                   the receiver's ACL refused this caller
    │   └── RemoteShuttingDown                 the receiver is shutting down (also ShuttingDown)
    └── TransportError                         the *world* broke something
        ├── PeerUnavailable                    cannot reach that node
        │   ├── PeerNotAuthenticated           its offer/answer did not prove its identity
        │   └── LinkRefused                    a link was not admitted (the reason travels back)
        └── SignalingError                     the signaling server failed or refused
            ├── AuthError                      realm credentials rejected
            │   ├── CredentialError            a credential is malformed, forged, foreign or expired
            │   ├── IdentityTaken              that ActrId is not this node key's to have
            │   └── IssuerKeyMismatch          the server's issuer key is not the pinned one
            ├── ServerCertificateError         the wss:// server's TLS certificate did not verify
            ├── SessionTakenOver               another connection registered with our ActrId
            ├── SignalingOverloaded            over the server's budget for this node (retry later)
            └── RelayTooLarge                  a relay payload over the server's size cap

Errors a peer sent us come from the wire as an ``ErrorPayload`` and are mapped back to the same
classes by :func:`error_from_wire`, so ``except RouteNotFound`` works for remote failures.
"""

from __future__ import annotations

from typing import Final

from ._proto.actr import wire_pb2

__all__ = [
    "ActrError",
    "AuthError",
    "CallError",
    "CodegenError",
    "ConfigError",
    "CredentialError",
    "DataDirInUse",
    "DeadlineExceeded",
    "EnvelopeTooLarge",
    "IdentityTaken",
    "IssuerKeyMismatch",
    "LinkRefused",
    "MalformedEnvelope",
    "MediaUnsupported",
    "MetricsUnavailable",
    "Overloaded",
    "PeerNotAuthenticated",
    "PeerUnavailable",
    "PermissionDenied",
    "RelayTooLarge",
    "RemoteError",
    "RemoteShuttingDown",
    "Retryable",
    "RouteNotFound",
    "ServerCertificateError",
    "SessionTakenOver",
    "ShuttingDown",
    "SignalingError",
    "SignalingOverloaded",
    "StreamIncomplete",
    "TransportError",
    "WrongTarget",
]


class ActrError(Exception):
    """Root of every error actr_trio raises."""


class ConfigError(ActrError, ValueError):
    """A configuration value or argument is invalid; the message names it."""


class MetricsUnavailable(ConfigError):
    """Metrics were asked for (``Config.metrics``, ``actr-trio signaling --metrics``) but
    ``prometheus-client`` is not installed: ``pip install 'actr-trio[metrics]'``."""


class DataDirInUse(ConfigError):
    """Another running node holds this ``data_dir`` (its ``node.lock``); the message names its pid.

    A ``data_dir`` is one node's mailbox and identity: give each node its own.
    """


class CodegenError(ActrError):
    """Code generation failed; the message carries protoc's or our file:line diagnostics."""


class ShuttingDown(ActrError):
    """The node is shutting down and refuses new work (we closed it, cf. trio.ClosedResourceError)."""


class Retryable(ActrError):
    """Raise it (or a subclass) from a handler to have the envelope run again later.

    Any other exception is final: the caller gets ``RemoteError``. A retried envelope goes to the
    back of its priority's queue; after ``Config.max_attempts`` attempts it is dead-lettered.
    """


class StreamIncomplete(ActrError):
    """A stream on a Signal/Reliable lane closed without every chunk acknowledged.

    Raised by ``close()`` (or leaving ``async with ctx.open_stream(...)``) when, by the stream's
    timeout, the receiver had not acknowledged every chunk: it vanished, stayed unreachable, or
    had no callback for the stream. A chunk not acknowledged may still have arrived (only its
    ack was lost) or arrive later; one acknowledged was taken by the receiver's stream registry.

    Attributes:
        stream_id: the stream's id.
        sent: data chunks sent (the end-of-stream marker not included).
        unacknowledged: how many of them were not acknowledged.
        end_acknowledged: whether the end-of-stream marker was.
    """

    def __init__(
        self,
        message: str,
        *,
        stream_id: str,
        sent: int,
        unacknowledged: int,
        end_acknowledged: bool,
    ) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.sent = sent
        self.unacknowledged = unacknowledged
        self.end_acknowledged = end_acknowledged


class CallError(ActrError):
    """A call or tell did not succeed.

    Attributes:
        code: application or protocol error code (may be empty).
    """

    #: ErrorKind sent on the wire for this class.
    wire_kind: int = wire_pb2.ERROR_UNSPECIFIED

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RemoteError(CallError):
    """The remote handler raised. ``code`` and ``message`` are what the handler reported.

    A handler may raise ``RemoteError(message, code=...)`` itself to choose the code its caller
    sees; any other exception reaches the caller as ``RemoteError`` with the exception's type
    name as ``code``.
    """

    wire_kind = wire_pb2.HANDLER_FAILED


class RouteNotFound(CallError):
    """The target node has no handler for that route key."""

    wire_kind = wire_pb2.ROUTE_NOT_FOUND


class DeadlineExceeded(CallError):
    """The call's deadline passed before an answer came (or before the handler finished)."""

    wire_kind = wire_pb2.DEADLINE_EXCEEDED


class EnvelopeTooLarge(CallError):
    """The payload is larger than ``Config.max_payload`` (checked before parsing)."""

    wire_kind = wire_pb2.TOO_LARGE


class MalformedEnvelope(CallError):
    """The envelope or its payload could not be decoded."""

    wire_kind = wire_pb2.MALFORMED


class WrongTarget(CallError):
    """The envelope was for another realm or another node."""

    wire_kind = wire_pb2.WRONG_TARGET


class Overloaded(CallError):
    """The receiver's mailbox is full; retry later (the sender backs off).

    ``code`` says why, where known: ``overloaded`` (that priority holds
    ``mailbox_capacity`` envelopes), ``sender_share`` (this sender holds its share of it,
    ``mailbox_sender_share``), ``storage`` (the receiver's disk is full or failing; also raised
    by a durable node whose own disk cannot record the call or tell), ``streams`` (a stream
    chunk refused because its sender has ``max_streams_per_peer`` streams open at the
    receiver). After the sender's own resends ran out of time the code is empty: the receiver
    refused until the deadline.
    """

    wire_kind = wire_pb2.OVERLOADED


class PermissionDenied(CallError):
    """The receiver refused the envelope before its mailbox accepted it: its ACL does not let
    this caller use that route (or that priority), or the envelope named another caller than
    the authenticated peer it came from (``code="caller_mismatch"``). Final: resending the
    same request is refused the same way.
    """

    wire_kind = wire_pb2.PERMISSION_DENIED


class RemoteShuttingDown(CallError, ShuttingDown):
    """The receiving node is shutting down and refused the envelope."""

    wire_kind = wire_pb2.SHUTTING_DOWN


class TransportError(ActrError):
    """Something outside this process failed (cf. trio.BrokenResourceError)."""


class PeerUnavailable(TransportError):
    """The target node cannot be reached (unknown, gone, or the link failed)."""


class PeerNotAuthenticated(PeerUnavailable):
    """No link: the peer's WebRTC offer or answer did not prove who sent it.

    Each side of a link signs the DTLS fingerprints of its own SDP with its node key and sends
    its credential along (docs/security.md, "DTLS binding"). This is raised when that proof was
    missing or did not verify: a credential that is malformed, expired, issued by another
    issuer, for another ``ActrId`` than the sender's or for another realm, or a signature that
    does not cover the fingerprints in the SDP (tampered with on the way, or made for another
    peer or role). The message says which. Something on the signaling path (or the peer
    itself) is not what it claims; the node logs it at WARNING.
    """


class LinkRefused(PeerUnavailable):
    """No link: it was not admitted (docs/security.md, "Link admission").

    Either the peer refused our WebRTC offer and said why (``reason`` ``"negotiating"``: too
    many links being negotiated; ``"links"``: too many links; ``"peer_rate"`` or
    ``"total_rate"``: too many offers; ``"too_large"``: the offer was over its size limit;
    ``"unknown"``), or this node holds ``Config.max_links`` links already (``"links"``). Nothing
    was queued: try again later. The message names the peer and the reason.

    Attributes:
        reason: the refusal's code.
    """

    def __init__(self, message: str, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.reason))


class MediaUnsupported(TransportError):
    """A media track cannot travel over this link: tracks need WebRTC, and the transport is
    a direct WebSocket one (``Config.websocket_lane``, docs/architecture.md). The message
    names the track and the peer."""


class SignalingError(TransportError):
    """The signaling server failed, refused a request, or cannot be reached."""


class AuthError(SignalingError):
    """The signaling server rejected this node's realm credentials."""


class CredentialError(AuthError):
    """A credential did not verify: malformed, signed by another issuer, tampered with, or
    expired. The message says which."""


class IdentityTaken(AuthError):
    """The server refused to register this node under the ``ActrId`` it asked for.

    An ``ActrId`` belongs to the node key that first registered it; only a signature by that
    key gets it back (after a restart or to take over a stale session), and only an id the
    server assigned can be asked for. A node whose ``identity.json`` was copied, whose
    ``node_key`` was lost, or whose server lost its database gets this (the message says
    which): remove ``identity.json`` from its ``data_dir`` to register under a new id.
    """


class IssuerKeyMismatch(AuthError):
    """The signaling server's issuer key is not the one this node trusts.

    Either ``Config.trust_anchor`` names another key, or the node pinned another key on first
    use (``issuer.pub`` in its ``data_dir``). The message names both key ids; if the server's
    key was rotated on purpose, set ``trust_anchor`` to the new key (or delete ``issuer.pub``).
    """


class ServerCertificateError(SignalingError):
    """The ``wss://`` signaling server's TLS certificate did not verify (unknown CA, expired,
    or issued for another host name): the node refuses to talk to it.

    Set ``Config.signaling_ca`` to the CA certificate that signed the server's certificate, or
    have it signed by a CA in the system trust store. The message says why it failed.
    """


class SessionTakenOver(SignalingError):
    """Another connection registered with this node's ``ActrId`` and the server closed this one.

    The node stops instead of reconnecting: two nodes sharing an identity would otherwise keep
    taking it from each other.
    """


class SignalingOverloaded(SignalingError):
    """The signaling server refused a request because this node is over one of its budgets:
    messages per second on its connection, discovery answers per second, relays to one
    target, or the target is not reading the relays already queued for it.

    Nothing was done; the request may be retried later (a node's link setup does). The
    message says which budget. See docs/operations.md ("Budgets and limits").
    """


class RelayTooLarge(SignalingError):
    """The signaling server refused a relay (offer, answer, ICE) whose payload is over its
    size cap (32 KiB by default); it was not forwarded."""


_BY_WIRE_KIND: Final[dict[int, type[CallError]]] = {
    cls.wire_kind: cls
    for cls in (
        RemoteError,
        RouteNotFound,
        DeadlineExceeded,
        EnvelopeTooLarge,
        MalformedEnvelope,
        WrongTarget,
        Overloaded,
        PermissionDenied,
        RemoteShuttingDown,
    )
}
# A dead-lettered envelope's caller gets RemoteError with code "dead_letter" (issue 6).
_BY_WIRE_KIND[wire_pb2.DEAD_LETTER] = RemoteError


def error_from_wire(kind: int, code: str, message: str) -> CallError:
    """Build the typed error for an ``ErrorPayload`` received from a peer."""
    cls = _BY_WIRE_KIND.get(kind, RemoteError)
    return cls(message, code=code)


def _fix_module() -> None:
    # Tracebacks print actr_trio.errors.X, not a private module (trio's fixup_module_metadata).
    for name in __all__:
        globals()[name].__module__ = __name__


_fix_module()
