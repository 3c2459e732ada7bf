"""The signaling server's database: bindings of ActrIds to node keys, and older databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from actr_trio._ids import ActrId, ActrType
from actr_trio.signaling._store import SignalingStore

ECHO = ActrType("acme", "echo")
KEY = b"k" * 32


def test_the_first_key_stays_bound_and_serials_survive(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SignalingStore(db)
    actr_id = ActrId("r", 1, ECHO)
    store.record_registration(actr_id, KEY)
    store.record_departure(actr_id)
    store.record_registration(actr_id, b"x" * 32)  # never happens: the protocol refuses it
    assert store.binding(actr_id) == KEY
    assert store.binding(ActrId("r", 2, ECHO)) is None  # never assigned
    assert store.binding(ActrId("r", 1, ActrType("acme", "other"))) is None  # not as that type
    store.close()
    reopened = SignalingStore(db)
    assert reopened.binding(actr_id) == KEY
    assert reopened.next_serials() == {"r": 2}
    reopened.close()


def test_a_database_from_before_node_keys_is_upgraded_and_its_ids_stay_unbound(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE realms (name TEXT PRIMARY KEY, next_serial INTEGER, created_at FLOAT);"
        "CREATE TABLE registrations (realm TEXT, serial INTEGER, manufacturer TEXT, name TEXT,"
        " registered_at FLOAT, departed_at FLOAT, online INTEGER, PRIMARY KEY (realm, serial));"
        "INSERT INTO realms VALUES ('r', 4, 0);"
        "INSERT INTO registrations VALUES ('r', 3, 'acme', 'echo', 0, NULL, 1);"
    )
    conn.commit()
    conn.close()
    store = SignalingStore(db)
    assert store.binding(ActrId("r", 3, ECHO)) == b""  # registered, but by no provable key
    store.record_registration(ActrId("r", 4, ECHO), KEY)
    assert store.binding(ActrId("r", 4, ECHO)) == KEY
    assert store.next_serials() == {"r": 5}
    store.close()
