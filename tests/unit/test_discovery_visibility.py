"""Discovery visibility: a node registers what its ACLs allow, and the signaling server leaves it
out of the discovery answers of node types those ACLs refuse (sans-IO machines, by hand)."""

from __future__ import annotations

import pytest

from actr_trio import Acl, AclRule, ActrId, ActrType
from actr_trio._acl import Visibility
from actr_trio.signaling._client_protocol import (
    ClientProtocol,
    Outgoing,
    PeersFound,
    Registered,
)
from actr_trio.signaling._protocol import (
    Frame,
    encode_frame,
)
from actr_trio.signaling._server_protocol import (
    Close,
    Send,
    ServerEffect,
    ServerProtocol,
)

VAULT = ActrType("acme", "vault")
CLIENT = ActrType("acme", "client")
INTRUDER = ActrType("acme", "intruder")
STRANGER = ActrType("other", "stranger")


def _register(
    server: ServerProtocol,
    conn: int,
    actr_type: ActrType,
    visibility: tuple[Visibility, ...] = (),
) -> tuple[ClientProtocol, list[ServerEffect]]:
    client = ClientProtocol(
        realm="r", secret=None, actr_type=actr_type, previous_id=None, visibility=visibility
    )
    server.connect(conn, 0.0)
    effects: list[ServerEffect] = []
    pending = [client.hello()]
    while pending:
        out = server.receive(conn, encode_frame(pending.pop(0)), 0.0)
        effects += out
        for effect in out:
            if isinstance(effect, Send) and effect.conn == conn:
                for event in client.receive(encode_frame(effect.frame)):
                    if isinstance(event, Outgoing):
                        pending.append(event.frame)
                    else:
                        assert isinstance(event, Registered)
    return client, effects


def _discover(server: ServerProtocol, conn: int, client: ClientProtocol) -> list[ActrId]:
    _, frame = client.discover(VAULT)
    (send,) = server.receive(conn, encode_frame(frame), 0.0)
    assert isinstance(send, Send)
    (found,) = client.receive(encode_frame(send.frame))
    assert isinstance(found, PeersFound)
    return list(found.peers)


def test_the_server_hides_a_node_from_types_its_acls_refuse() -> None:
    server = ServerProtocol(realms=None, presence_timeout=10.0)
    config_acl = Acl(allow=[AclRule("acme:*")], deny=[AclRule("acme:intruder")])
    workload_acl = Acl(allow=[AclRule("acme:client"), AclRule("acme:intruder")])
    visibility = (config_acl.visibility("r"), workload_acl.visibility("r"))
    vault, _ = _register(server, 1, VAULT, visibility)
    open_vault, _ = _register(server, 2, VAULT)  # no ACL: everyone sees it
    seen = {}
    for conn, actr_type in [(3, CLIENT), (4, INTRUDER), (5, STRANGER)]:
        client, _ = _register(server, conn, actr_type)
        seen[actr_type] = _discover(server, conn, client)
    assert seen[CLIENT] == [vault.actr_id, open_vault.actr_id]
    assert seen[INTRUDER] == [open_vault.actr_id]  # allowed by one ACL, denied by the other
    assert seen[STRANGER] == [open_vault.actr_id]


@pytest.mark.parametrize(
    "visible_to",
    [
        [Frame.CallerFilter(allow=["*"])] * 5,  # more filters than a node has ACLs
        [Frame.CallerFilter(allow=["acme:*"] * 65)],  # more patterns than allowed
        [Frame.CallerFilter(allow=["acme"])],  # not manufacturer:name
        [Frame.CallerFilter(deny=["a" * 65 + ":x"])],  # a name part too long
        [Frame.CallerFilter(allow=["acme:[ab]"])],  # only "*" is special
    ],
)
def test_malformed_visibility_is_a_bad_request(visible_to: list[Frame.CallerFilter]) -> None:
    server = ServerProtocol(realms=None, presence_timeout=10.0)
    client = ClientProtocol(realm="r", secret=None, actr_type=VAULT, previous_id=None)
    server.connect(1, 0.0)
    (challenge,) = server.receive(1, encode_frame(client.hello()), 0.0)
    assert isinstance(challenge, Send)
    frames = [
        e.frame for e in client.receive(encode_frame(challenge.frame)) if isinstance(e, Outgoing)
    ]
    assert frames[-1].WhichOneof("body") == "register"
    frames[-1].register.visible_to.extend(visible_to)
    effects: list[ServerEffect] = []
    for frame in frames:
        effects += server.receive(1, encode_frame(frame), 0.0)
    errors = [e.frame.error for e in effects if isinstance(e, Send) and e.frame.HasField("error")]
    assert [e.code for e in errors] == ["bad_request"]
    assert any(isinstance(e, Close) for e in effects)
    assert server.statistics().registered == 0
