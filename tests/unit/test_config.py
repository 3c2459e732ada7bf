"""Config values and identities: validation names the culprit; TOML + ACTR_* overrides."""

from __future__ import annotations

import base64
import os
import re
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest

from actr_trio import ActrId, ActrType, Config
from actr_trio._config import config_reference
from actr_trio.errors import ConfigError

REFERENCE = Path(__file__).parents[2] / "docs" / "config-reference.md"


def test_from_file_with_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text(
        '[actr]\nrealm = "prod"\nsignaling_url = "ws://127.0.0.1:8765"\nmax_attempts = 7\n'
    )
    config = Config.from_file(
        path,
        environ={
            "ACTR_REALM": "staging",
            "ACTR_ICE_ADDRESSES": "127.0.0.1, ::1",
            "ACTR_AGING": "3",
        },
    )
    assert config.realm == "staging"
    assert config.signaling_url == "ws://127.0.0.1:8765"
    assert config.max_attempts == 7
    assert config.ice_addresses == ("127.0.0.1", "::1")
    assert config.aging == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('realm = "x"\nbogus = 1\n', "Actr.toml: 'bogus' is not a Config field"),
        ("realm = \n", "cannot read config file"),
        ("max_payload = 0\n", "Actr.toml: max_payload=0 must be > 0"),
        ('mailbox_synchronous = "OFF"\n', "mailbox_synchronous"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        Config.from_file(path, environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Config.from_file("/nonexistent/Actr.toml", environ={})


def test_actr_id_round_trips_through_text_and_proto() -> None:
    actr_id = ActrId("demo", 42, ActrType("acme", "echo"))
    assert str(actr_id) == "acme:echo#42@demo"
    assert ActrId.parse(str(actr_id)) == actr_id
    assert ActrId.from_proto(actr_id.to_proto()) == actr_id
    with pytest.raises(ConfigError, match="is not an ActrId"):
        ActrId.parse("nonsense")
    with pytest.raises(ConfigError, match="realm"):
        ActrId("bad realm!", 1, ActrType("a", "b"))


def _raises_exactly(message: str) -> Any:
    """A ConfigError (not a bare ValueError/TypeError) whose whole message is ``message``."""
    return pytest.raises(ConfigError, match=f"^{re.escape(message)}$")


SHORT_SECRET = (
    "is shorter than 16 bytes: use a random secret, e.g. from "
    "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_payload": "big"}, "Config.max_payload='big' is not an integer"),
        ({"max_payload": 1.5}, "Config.max_payload=1.5 is not an integer"),
        ({"max_payload": True}, "Config.max_payload=True is not an integer"),
        ({"max_payload": 0}, "Config.max_payload=0 must be > 0"),
        ({"max_payload": 1 << 40}, "Config.max_payload=1099511627776 must be <= 536870912"),
        ({"mailbox_capacity": -1}, "Config.mailbox_capacity=-1 must be > 0"),
        ({"mailbox_sender_share": 0}, "Config.mailbox_sender_share=0.0 must be a fraction > 0 and <= 1"),
        ({"mailbox_sender_share": 1.5}, "Config.mailbox_sender_share=1.5 must be a fraction > 0 and <= 1"),
        ({"max_attempts": 0}, "Config.max_attempts=0 must be > 0"),
        ({"stream_buffer": "8"}, "Config.stream_buffer='8' is not an integer"),
        ({"aging": 0}, "Config.aging=0 must be > 0"),
        ({"default_timeout": "30"}, "Config.default_timeout='30' is not a number"),
        ({"default_timeout": 0}, "Config.default_timeout=0.0 must be a finite number of seconds > 0"),
        ({"shutdown_grace": float("inf")}, "Config.shutdown_grace=inf must be a finite number of seconds > 0"),
        ({"dedupe_window": float("nan")}, "Config.dedupe_window=nan must be a finite number of seconds > 0"),
        ({"heartbeat_interval": -1.0}, "Config.heartbeat_interval=-1.0 must be a finite number of seconds > 0"),
        ({"mailbox_synchronous": "OFF"}, "Config.mailbox_synchronous='OFF' must be 'NORMAL' or 'FULL'"),
        ({"data_dir": ""}, "Config.data_dir='' is empty (None means an in-memory mailbox)"),
        ({"data_dir": 3}, "Config.data_dir=3 is not a path"),
        ({"ice_addresses": ["127.0.0.1", "localhost"]}, "Config.ice_addresses=('127.0.0.1', 'localhost') has 'localhost', which is not an IP address"),
        ({"ice_addresses": [1]}, "Config.ice_addresses=(1,) is not a list of strings"),
        ({"ice_servers": ("stun.example.org",)}, "Config.ice_servers=('stun.example.org',) has 'stun.example.org', which is not a stun:/turn: URL"),
        ({"realm_secret": ""}, "Config.realm_secret=<hidden> is empty (None means no secret)"),
        ({"realm_secret": "s3cret"}, f"Config.realm_secret=<hidden> {SHORT_SECRET}"),
        ({"signaling_ca": ""}, "Config.signaling_ca='' is empty (None means the system trust store)"),
        ({"signaling_ca": 3}, "Config.signaling_ca=3 is not a path"),
        ({"max_links": 0}, "Config.max_links=0 must be > 0"),
        ({"max_negotiating_links": 1 << 20}, "Config.max_negotiating_links=1048576 must be <= 65536"),
        ({"max_negotiating_links": 20, "max_links": 10}, "Config.max_negotiating_links=20 must be <= max_links=10"),
        ({"offers_per_peer_rate": 0}, "Config.offers_per_peer_rate=0.0 must be a finite number of offers per second > 0"),
        ({"offers_total_rate": float("inf")}, "Config.offers_total_rate=inf must be a finite number of offers per second > 0"),
        ({"offers_per_peer_burst": 0.5}, "Config.offers_per_peer_burst=0.5 is not an integer"),
        ({"max_relay_payload": 100}, "Config.max_relay_payload=100 must be >= 1024"),
        ({"max_relay_payload": 1 << 17}, "Config.max_relay_payload=131072 must be <= 65536"),
    ],
)  # fmt: skip
def test_wrong_values_from_code_name_the_field(options: dict[str, Any], message: str) -> None:
    with _raises_exactly(message):
        Config(**options)


@pytest.mark.parametrize("secret", ["x" * 16, "é" * 8, "a-much-longer-secret-than-needed"])
def test_secrets_of_16_bytes_or_more_are_accepted(secret: str) -> None:
    assert Config(realm_secret=secret).realm_secret == secret


@pytest.mark.parametrize("secret", ["x", "x" * 15, "é" * 7 + "x"])
def test_short_secrets_are_refused_from_every_source_without_showing_them(
    tmp_path: Path, secret: str
) -> None:
    with _raises_exactly(f"Config.realm_secret=<hidden> {SHORT_SECRET}") as info:
        Config(realm_secret=secret)
    assert secret not in str(info.value)
    path = tmp_path / "Actr.toml"
    path.write_text(f'realm_secret = "{secret}"\n')
    with _raises_exactly(f"{path}: realm_secret=<hidden> {SHORT_SECRET}"):
        Config.from_file(path, environ={})
    path.write_text("")
    with _raises_exactly(f"ACTR_REALM_SECRET=<hidden> {SHORT_SECRET}"):
        Config.from_file(path, environ={"ACTR_REALM_SECRET": secret})


def test_a_secret_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match="realm_secret=<hidden> is not a string") as info:
        Config(realm_secret=b"s3cret")  # type: ignore[arg-type]
    assert "s3cret" not in str(info.value)


def test_values_of_the_right_kind_are_normalised() -> None:
    config = Config(
        default_timeout=2,
        data_dir="state",
        ice_addresses="127.0.0.1, ::1",
        ice_servers=["stun:stun.example.org:3478"],
    )
    assert config.default_timeout == 2.0
    assert type(config.default_timeout) is float
    assert config.data_dir == Path("state")
    assert config.ice_addresses == ("127.0.0.1", "::1")
    assert config.ice_servers == ("stun:stun.example.org:3478",)


def test_fields_are_annotated_with_their_real_types() -> None:
    # mypy reads these annotations; a field typed Any (or not at all) would let mistakes through.
    types = {field.name: field.type for field in attrs.fields(Config)}
    assert types == {
        "realm": "str",
        "signaling_url": "str | None",
        "signaling_ca": "Path | None",
        "realm_secret": "str | None",
        "data_dir": "Path | None",
        "trust_anchor": "str | None",
        "ice_addresses": "tuple[str, ...]",
        "ice_servers": "tuple[str, ...]",
        "listen": "str | None",
        "websocket_lane": "str",
        "default_timeout": "float",
        "shutdown_grace": "float",
        "max_payload": "int",
        "mailbox_synchronous": "Synchronous",
        "mailbox_capacity": "int",
        "mailbox_sender_share": "float",
        "max_attempts": "int",
        "dedupe_window": "float",
        "aging": "int | None",
        "stream_buffer": "int",
        "max_streams_per_peer": "int",
        "max_tracks_per_peer": "int",
        "stream_idle_timeout": "float",
        "peer_state_timeout": "float",
        "max_peer_states": "int",
        "heartbeat_interval": "float",
        "max_links": "int",
        "max_negotiating_links": "int",
        "offers_per_peer_rate": "float",
        "offers_per_peer_burst": "int",
        "offers_total_rate": "float",
        "max_relay_payload": "int",
        "acl": "Acl | None",
        "metrics": "str | None",
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('max_payload = "big"', "Actr.toml: max_payload='big' is not an integer"),
        ("default_timeout = true", "Actr.toml: default_timeout=True is not a number"),
        ('realm = "my realm!"', "Actr.toml: realm='my realm!' must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        ('signaling_url = "localhost:8765"', "Actr.toml: signaling_url='localhost:8765' has no scheme: write 'ws://localhost:8765'"),
        ('ice_addresses = "x"', "Actr.toml: ice_addresses='x' has 'x', which is not an IP address"),
        ('realmm = "prod"', "Actr.toml: 'realmm' is not a Config field; did you mean 'realm'?"),
    ],
)  # fmt: skip
def test_wrong_values_from_a_file_name_the_file_and_key(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text(f"[actr]\n{table}\n")
    with _raises_exactly(f"{tmp_path}{os.sep}{message}"):
        Config.from_file(path, environ={})


def test_file_numbers_and_lists_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('default_timeout = 3\nice_addresses = ["127.0.0.1"]\ndata_dir = "state"\n')
    config = Config.from_file(path, environ={})
    assert config.default_timeout == 3.0
    assert config.ice_addresses == ("127.0.0.1",)
    assert config.data_dir == Path("state")


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("ACTR_MAX_PAYLOAD", "big", "ACTR_MAX_PAYLOAD='big' is not an integer"),
        ("ACTR_MAX_PAYLOAD", "0", "ACTR_MAX_PAYLOAD='0' must be > 0"),
        ("ACTR_AGING", "often", "ACTR_AGING='often' is not an integer"),
        ("ACTR_DEFAULT_TIMEOUT", "soon", "ACTR_DEFAULT_TIMEOUT='soon' is not a number"),
        ("ACTR_SHUTDOWN_GRACE", "-5", "ACTR_SHUTDOWN_GRACE='-5' must be a finite number of seconds > 0"),
        ("ACTR_MAILBOX_SYNCHRONOUS", "normal", "ACTR_MAILBOX_SYNCHRONOUS='normal' must be 'NORMAL' or 'FULL'"),
        ("ACTR_REALM", "my realm!", "ACTR_REALM='my realm!' must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        ("ACTR_REALM", "", "ACTR_REALM='' must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        ("ACTR_SIGNALING_URL", "localhost:8765", "ACTR_SIGNALING_URL='localhost:8765' has no scheme: write 'ws://localhost:8765'"),
        ("ACTR_ICE_ADDRESSES", "127.0.0.1,nowhere", "ACTR_ICE_ADDRESSES='127.0.0.1,nowhere' has 'nowhere', which is not an IP address"),
        ("ACTR_OFFERS_TOTAL_RATE", "fast", "ACTR_OFFERS_TOTAL_RATE='fast' is not a number"),
    ],
)  # fmt: skip
def test_wrong_values_from_the_environment_name_the_variable(
    tmp_path: Path, variable: str, text: str, message: str
) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('realm = "prod"\n')
    with _raises_exactly(message):
        Config.from_file(path, environ={variable: text})


def test_an_empty_variable_means_none_where_none_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('aging = 3\nsignaling_url = "ws://127.0.0.1:8765"\ndata_dir = "state"\n')
    environ = {"ACTR_AGING": "", "ACTR_SIGNALING_URL": "", "ACTR_DATA_DIR": ""}
    config = Config.from_file(path, environ=environ)
    assert (config.aging, config.signaling_url, config.data_dir) == (None, None, None)


def test_unknown_variables_warn_with_the_closest_field(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('realm = "prod"\n')
    with pytest.warns(UserWarning, match="is not a Config field") as caught:
        config = Config.from_file(
            path, environ={"ACTR_REALMM": "staging", "ACTR_ZZZZZZZZ": "1", "PATH": "/bin"}
        )
    assert sorted(str(w.message) for w in caught) == [
        "ACTR_REALMM is not a Config field; did you mean ACTR_REALM?",
        "ACTR_ZZZZZZZZ is not a Config field; it is ignored",
    ]
    assert all(w.filename == __file__ for w in caught)  # points at the caller of from_file
    assert config.realm == "prod"


def test_the_projects_own_variables_do_not_warn(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('realm = "prod"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config.from_file(path, environ={"ACTR_UPDATE_GOLDEN": "1", "ACTR_REALM": "x"})


def test_unknown_mapping_keys_suggest_the_closest_field() -> None:
    with _raises_exactly("'max_paylod' is not a Config field; did you mean 'max_payload'?"):
        Config.from_mapping({"max_paylod": 5})
    with _raises_exactly("Config.max_payload='5' is not an integer"):
        Config.from_mapping({"max_payload": "5"})


@pytest.mark.parametrize("realm", ["a", "x" * 64, "my-realm_1.0", "PROD"])
def test_realm_names_the_server_accepts(realm: str) -> None:
    assert Config(realm=realm).realm == realm
    ActrId(realm, 1, ActrType("a", "b"))  # the same names identities (and the server) accept


@pytest.mark.parametrize("realm", ["", "x" * 65, "my realm!", "a/b", "réalm", "a\n", "a:b"])
def test_realm_names_are_checked_at_construction(realm: str) -> None:
    with _raises_exactly(f"Config.realm={realm!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"):
        Config(realm=realm)
    with pytest.raises(ConfigError):
        ActrId(realm, 1, ActrType("a", "b"))  # identities take the same names, no more


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("localhost:8765", "has no scheme: write 'ws://localhost:8765'"),
        ("127.0.0.1:8765", "has no scheme: write 'ws://127.0.0.1:8765'"),
        ("http://127.0.0.1:8765", "must be ws://HOST:PORT or wss://HOST:PORT, not http://"),
        ("https://example.org:443", "must be ws://HOST:PORT or wss://HOST:PORT, not https://"),
        ("ws://127.0.0.1", "must be ws://HOST:PORT (host and port both required)"),
        ("wss://example.org", "must be wss://HOST:PORT (host and port both required)"),
        ("wss://example.org:tls", "has an invalid port: write wss://HOST:PORT"),
        ("ws://:8765", "must be ws://HOST:PORT (host and port both required)"),
        ("ws://127.0.0.1:http", "has an invalid port: write ws://HOST:PORT"),
        ("", "is empty (None means no signaling server)"),
    ],
)  # fmt: skip
def test_signaling_urls_are_checked_at_construction(url: str, reason: str) -> None:
    with _raises_exactly(f"Config.signaling_url={url!r} {reason}"):
        Config(signaling_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8765",
        "ws://signal.example.org:80/actr",
        "wss://signal.example.org:443",
        "wss://127.0.0.1:8765/actr",
        None,
    ],
)
def test_signaling_urls_the_client_accepts(url: str | None) -> None:
    assert Config(signaling_url=url).signaling_url == url


def test_signaling_ca_is_a_path_from_code_file_or_environment(tmp_path: Path) -> None:
    assert Config(signaling_ca="ca.pem").signaling_ca == Path("ca.pem")
    path = tmp_path / "Actr.toml"
    path.write_text('signaling_url = "wss://127.0.0.1:8765"\nsignaling_ca = "ca.pem"\n')
    assert Config.from_file(path, environ={}).signaling_ca == Path("ca.pem")
    environ = {"ACTR_SIGNALING_CA": "/etc/actr/ca.pem"}
    assert Config.from_file(path, environ=environ).signaling_ca == Path("/etc/actr/ca.pem")
    assert Config.from_file(path, environ={"ACTR_SIGNALING_CA": ""}).signaling_ca is None


def test_the_servers_realms_variable_is_not_a_typo_of_a_field(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text('realm = "prod"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config.from_file(path, environ={"ACTR_SIGNALING_REALMS": "prod:" + "x" * 16})


def test_trust_anchor_is_a_public_key_in_hex_or_base64(tmp_path: Path) -> None:
    raw = bytes(range(32))
    assert Config(trust_anchor=raw.hex()).trust_anchor == raw.hex()
    assert Config(trust_anchor=base64.b64encode(raw).decode()).trust_anchor is not None
    for bad in ["", "abc", raw.hex()[:-2], "not a key"]:
        with pytest.raises(ConfigError, match=r"trust_anchor=.* is not an Ed25519 public key"):
            Config(trust_anchor=bad)
    toml = tmp_path / "Actr.toml"
    toml.write_text('realm = "r"')
    env = {"ACTR_TRUST_ANCHOR": raw.hex()}
    assert Config.from_file(toml, environ=env).trust_anchor == raw.hex()
    with pytest.raises(ConfigError, match="ACTR_TRUST_ANCHOR"):
        Config.from_file(toml, environ={"ACTR_TRUST_ANCHOR": "zz"})


def test_the_reference_lists_every_field() -> None:
    reference = config_reference()
    for field in attrs.fields(Config):
        row = next(
            line for line in reference.splitlines() if line.startswith(f"| `{field.name}` |")
        )
        # A structured field (the ACL) has no variable: the row says so instead.
        env = f"`ACTR_{field.name.upper()}`" if field.metadata["actr_rule"].env else "none ("
        assert env in row
        assert f"`{field.default!r}`" in row
        assert field.metadata["actr_doc"].replace("``", "`") in row
        assert f"{field.name}: {field.metadata['actr_doc']}" in " ".join(
            str(Config.__doc__).split()
        )


def test_the_committed_reference_matches_the_generator() -> None:
    if os.environ.get("ACTR_UPDATE_GOLDEN") == "1":
        REFERENCE.write_text(config_reference())
    assert REFERENCE.read_text() == config_reference(), (
        "docs/config-reference.md is out of date: regenerate it with "
        "ACTR_UPDATE_GOLDEN=1 pytest tests/unit/test_config.py -k reference"
    )


def test_link_admission_limits_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "Actr.toml"
    path.write_text("max_links = 8\n")
    environ = {
        "ACTR_MAX_NEGOTIATING_LINKS": "2",
        "ACTR_OFFERS_PER_PEER_RATE": "0.5",
        "ACTR_OFFERS_PER_PEER_BURST": "3",
        "ACTR_OFFERS_TOTAL_RATE": "4",
        "ACTR_MAX_RELAY_PAYLOAD": "16384",
    }
    config = Config.from_file(path, environ=environ)
    assert (config.max_links, config.max_negotiating_links) == (8, 2)
    assert (config.offers_per_peer_rate, config.offers_per_peer_burst) == (0.5, 3)
    assert config.offers_total_rate == 4.0
    assert config.max_relay_payload == 16384
