"""Config values and identities: validation names the culprit; TOML + ACTR_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from actr_trio import ActrId, ActrType, Config
from actr_trio.errors import ConfigError


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
        ('realm = "x"\nbogus = 1\n', "unknown config keys: bogus"),
        ("realm = \n", "cannot read config file"),
        ("max_payload = 0\n", "max_payload=0 must be > 0"),
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
