"""What the signaling server keeps across restarts: realms, their serial counters, registrations.

Invariants: a realm's ``next_serial`` only grows, so an ``ActrId`` once assigned is never assigned
to another node, even after a restart; and a registration's ``public_key`` (the node key that
first registered the id) is never changed: only that key gets the id back. Realm *secrets* are not stored: they come from the
server's configuration at every start. Presence is not stored either: after a restart every
registration is offline until its node registers again.

All methods are synchronous and blocking; the server calls them through
``trio.to_thread.run_sync`` one at a time (one ``CapacityLimiter(1)``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import final

import sqlite_utils

from .._ids import ActrId, ActrType


@final
class SignalingStore:
    """A SQLite database (via sqlite-utils) of realms and registrations.

    Args:
        db_path: database file; ``None`` keeps everything in memory (lost at exit).
    """

    def __init__(self, db_path: str | os.PathLike[str] | None) -> None:
        # The server calls from worker threads, one at a time (CapacityLimiter(1)).
        conn = sqlite3.connect(
            ":memory:" if db_path is None else os.fspath(db_path), check_same_thread=False
        )
        self._db = sqlite_utils.Database(conn)
        if db_path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._db.conn:
            self._db.table("realms").create(
                {"name": str, "next_serial": int, "created_at": float},
                pk="name",
                if_not_exists=True,
            )
            self._db.table("registrations").create(
                {
                    "realm": str,
                    "serial": int,
                    "manufacturer": str,
                    "name": str,
                    "registered_at": float,
                    "departed_at": float,
                    "online": int,
                    "public_key": bytes,
                },
                pk=("realm", "serial"),
                if_not_exists=True,
            )
            registrations = self._db.table("registrations")
            if "public_key" not in registrations.columns_dict:
                # A database from before node keys: its ids stay unbound (NULL), and so cannot
                # be claimed back by anyone (ServerProtocol.binding_found).
                registrations.add_column("public_key", bytes)
            # Nobody is connected to a server that just started.
            self._db.execute("UPDATE registrations SET online = 0")

    def next_serials(self) -> dict[str, int]:
        """Realm name -> next serial to assign."""
        rows = self._db.execute("SELECT name, next_serial FROM realms").fetchall()
        return {str(name): int(serial) for name, serial in rows}

    def record_registration(self, actr_id: ActrId, public_key: bytes) -> None:
        """Record that ``actr_id`` registered with ``public_key``; its realm's serials are taken
        up to it. The first key recorded for an id stays bound to it."""
        now = time.time()
        with self._db.conn:
            self._db.execute(
                "INSERT INTO realms (name, next_serial, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET next_serial = MAX(next_serial, excluded.next_serial)",
                [actr_id.realm, actr_id.serial + 1, now],
            )
            self._db.execute(
                "INSERT INTO registrations "
                "(realm, serial, manufacturer, name, registered_at, departed_at, online, "
                "public_key) VALUES (?, ?, ?, ?, ?, NULL, 1, ?) "
                "ON CONFLICT(realm, serial) DO UPDATE SET manufacturer = excluded.manufacturer, "
                "name = excluded.name, registered_at = excluded.registered_at, "
                "departed_at = NULL, online = 1, "
                "public_key = COALESCE(registrations.public_key, excluded.public_key)",
                [
                    actr_id.realm,
                    actr_id.serial,
                    actr_id.type.manufacturer,
                    actr_id.type.name,
                    now,
                    public_key,
                ],
            )

    def binding(self, actr_id: ActrId) -> bytes | None:
        """The public key ``actr_id`` is bound to; ``b""`` if it was registered before node
        keys existed; ``None`` if it was never assigned (as that type)."""
        row = self._db.execute(
            "SELECT public_key FROM registrations "
            "WHERE realm = ? AND serial = ? AND manufacturer = ? AND name = ?",
            [actr_id.realm, actr_id.serial, actr_id.type.manufacturer, actr_id.type.name],
        ).fetchone()
        if row is None:
            return None
        return bytes(row[0]) if row[0] is not None else b""

    def record_departure(self, actr_id: ActrId) -> None:
        """Record that ``actr_id`` left (its registration stays: the id remains taken)."""
        with self._db.conn:
            self._db.execute(
                "UPDATE registrations SET online = 0, departed_at = ? WHERE realm = ? AND serial = ?",
                [time.time(), actr_id.realm, actr_id.serial],
            )

    def registrations(self) -> list[tuple[ActrId, bool]]:
        """Every registration ever recorded, with whether it is online, by realm and serial."""
        rows = self._db.execute(
            "SELECT realm, serial, manufacturer, name, online FROM registrations "
            "ORDER BY realm, serial"
        ).fetchall()
        return [(ActrId(r, int(s), ActrType(m, n)), bool(o)) for r, s, m, n, o in rows]

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.conn.close()
