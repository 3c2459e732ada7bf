"""The advertised WebSocket address: its check, the server keeping and returning it, the
client keeping only well-formed ones (the sans-IO machines, driven by hand)."""

from __future__ import annotations

import pytest
from test_signaling_protocol import (
    CALLER,
    ECHO,
    NONCE,
    closed,
    frames_to,
    hand_register,
    make_server,
    run_session,
)

from actr_trio._config import Config
from actr_trio._identity import NodeKey, registration_message
from actr_trio._ids import ActrId
from actr_trio.errors import ConfigError
from actr_trio.signaling._client_protocol import ClientProtocol, PeersFound
from actr_trio.signaling._protocol import Frame, encode_frame
from actr_trio.transport._websocket_address import (
    MAX_ADDRESS,
    format_address,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("node-1.lan:1", ("node-1.lan", 1)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_well_formed_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert format_address(*expected) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("127.0.0.1", "HOST:PORT"),
        (":7000", "HOST:PORT"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:-1", "not a number"),
        ("127.0.0.1:٣", "not a number"),  # a non-ASCII digit
        ("127.0.0.1:123456", "not a number"),
        ("[::1:80", "unclosed"),
        ("[nope]:80", "not an IPv6 address"),
        ("evil host:80", "not a host name"),
        ("a/b:80", "not a host name"),
        ("a..b:80", "not a host name"),
        ("-a:80", "not a host name"),
        ("a" * MAX_ADDRESS + ":80", "longer than"),
    ],
)
def test_malformed_addresses_are_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_address(text)


def test_config_listen_takes_port_zero_but_no_wildcard() -> None:
    assert Config(listen="127.0.0.1:0").listen == "127.0.0.1:0"
    with pytest.raises(ConfigError, match="wildcard"):
        Config(listen="0.0.0.0:7000")
    with pytest.raises(ConfigError, match="websocket_lane"):
        Config(websocket_lane="sometimes")


def _listening(server: object, conn: int, listen: str) -> ClientProtocol:
    client = ClientProtocol(
        realm="demo", secret="s3cret", actr_type=ECHO, previous_id=None, listen=listen
    )
    run_session(server, conn, client)  # type: ignore[arg-type]
    assert client.registered
    return client


def _peers_found(server: object, conn: int, client: ClientProtocol) -> PeersFound:
    _, frame = client.discover(ECHO)
    (answer,) = frames_to(conn, server.handle(conn, frame, 0.0))  # type: ignore[attr-defined]
    (found,) = client.receive(encode_frame(answer))
    assert isinstance(found, PeersFound)
    return found


def test_the_server_returns_advertised_addresses_in_discovery() -> None:
    server = make_server({"demo": "s3cret"})
    listening = _listening(server, 1, "127.0.0.1:7001")
    quiet = ClientProtocol(realm="demo", secret="s3cret", actr_type=ECHO, previous_id=None)
    run_session(server, 2, quiet)
    asker = ClientProtocol(realm="demo", secret="s3cret", actr_type=CALLER, previous_id=None)
    run_session(server, 3, asker)
    found = _peers_found(server, 3, asker)
    assert set(found.peers) == {listening.actr_id, quiet.actr_id}
    assert found.addresses == ((listening.actr_id, "127.0.0.1:7001"),)


def test_the_server_refuses_a_malformed_listen_address() -> None:
    server = make_server(None)
    key = NodeKey.generate()
    pub = key.public_bytes()
    frame = Frame.Register(
        actr_type=ECHO.to_proto(),
        public_key=pub,
        signature=key.sign(registration_message(NONCE, "demo", pub)),
        listen="127.0.0.1:99999",
    )
    effects = hand_register(server, 1, frame)
    (error,) = frames_to(1, effects)
    assert error.error.code == "bad_request"
    assert "listen" in error.error.message
    assert closed(1, effects)
    assert server.statistics().registered == 0


def test_the_client_drops_addresses_it_must_not_dial() -> None:
    """A hostile server's Peers: malformed addresses, and addresses of ids not on the page,
    are dropped (those peers are reached over WebRTC), the well-formed one is kept."""
    client = ClientProtocol(realm="demo", secret=None, actr_type=CALLER, previous_id=None)
    server = make_server(None)
    run_session(server, 1, client)
    on_page = ActrId("demo", 1, ECHO)
    other = ActrId("demo", 2, ECHO)
    stranger = ActrId("demo", 9, ECHO)
    peers = Frame.Peers(
        request_id=1,
        peers=[on_page.to_proto(), other.to_proto()],
        addresses=[
            Frame.PeerAddress(actr_id=on_page.to_proto(), listen="10.0.0.1:7000"),
            Frame.PeerAddress(actr_id=other.to_proto(), listen="10.0.0.2:0"),
            Frame.PeerAddress(actr_id=stranger.to_proto(), listen="10.0.0.9:7000"),
        ],
    )
    (found,) = client.receive(encode_frame(Frame(peers=peers)))
    assert isinstance(found, PeersFound)
    assert found.addresses == ((on_page, "10.0.0.1:7000"),)
