"""The durable mailbox's file: open it (WAL, exclusive, private), its schema and statements.

One table, ``queue``, is both the queue and the dedupe record: a row is accepted as *pending*,
becomes *done* when its handler finished (payload dropped, response and time kept) and is
pruned once ``dedupe_window`` has passed, or *dead* while it sits in ``dead_letters`` (which
holds only the order, reason and time). So an accept is one insert, a completion one update.

Why the dedupe key is a hash: a unique index on ``(caller, request_id)`` (tens of bytes of
random text per entry) made every accept dirty its own page of a wide index, which cost more
than everything else the mailbox writes; an index of 8-byte integers is several times narrower.
The key is a blake2b hash keyed with a random per-file salt (so no peer can aim collisions),
and a collision is still handled exactly: the row that could not take its key gets ``NULL``
(UNIQUE allows several) and is found through the small ``queue_collided`` index instead.

Schema migration: a version 1 file (``queue`` + ``seen`` + ``dead_letters``) is migrated in
place, in one transaction, when it is opened; a file of a newer version is refused, naming it.

This module opens files, creates or migrates the schema and holds the SQL text; the semantics
are in :mod:`actr_trio._mailbox_sqlcore`. Every ``sqlite3`` or file error becomes
:class:`~actr_trio._mailbox.MailboxError` through :func:`translate`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._datadir import make_private_dir, private_file
from ._lanes import Priority
from ._logging import MAILBOX
from ._mailbox import ACCEPTED_ATTEMPTS, DEAD, DONE, PENDING, MailboxError, MailboxStorageError

if TYPE_CHECKING:
    from ._config import Synchronous

logger = logging.getLogger(MAILBOX)

#: Version 1: ``queue`` (pending only) + ``seen`` (dedupe) + ``dead_letters`` (full rows).
#: Version 2: one ``queue`` table for all three (see the module docstring).
SCHEMA_VERSION: Final = 2

# Seconds to wait for another connection's lock when opening: a crashed process has released
# its lock already, so only a live second user of the same file waits this long, then fails.
_LOCK_TIMEOUT: Final = 1.0

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,          -- accept order, never reused
    key INTEGER,                     -- dedupe key: hash of (caller, request_id), NULL if it collided
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,          -- {PENDING} pending, {DONE} done, {DEAD} dead-lettered
    attempts INTEGER NOT NULL,
    data BLOB NOT NULL,              -- empty once done
    response BLOB,
    finished_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_key ON queue (key);
CREATE INDEX IF NOT EXISTS queue_pending ON queue (id) WHERE state = {PENDING};
CREATE INDEX IF NOT EXISTS queue_expiry ON queue (finished_at) WHERE state = {DONE};
CREATE INDEX IF NOT EXISTS queue_collided ON queue (caller, request_id) WHERE key IS NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,         -- dead-letter order
    id INTEGER NOT NULL UNIQUE,      -- the queue row, in state {DEAD}
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,         -- send order
    request_id TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    lane INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    deadline_ms INTEGER NOT NULL     -- unix ms, 0 = none
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID
"""

#: The one insert of an accept (and of a migrated or collided row). ``ON CONFLICT DO NOTHING``:
#: the key is taken, by the same request (a duplicate) or, rarely, by a collision.
INSERT: Final = (
    "INSERT INTO queue (id, key, caller, request_id, priority, state, attempts, data,"
    " response, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

# Rows per bulk statement at most (6 parameters per accepted row, far below SQLite's 32766).
# Batches are cut in powers of two, so the few statement texts stay in sqlite3's cache.
BULK: Final = 256
INSERT_COLUMNS: Final = 6

_ROW: Final = "id, caller, request_id, state, response, finished_at"
FIND: Final = f"SELECT {_ROW} FROM queue WHERE key = ?"
FIND_COLLIDED: Final = (
    f"SELECT {_ROW} FROM queue WHERE key IS NULL AND caller = ? AND request_id = ?"
)
# An expired entry of the same request: the row is accepted anew, under a new id.
REUSE: Final = (
    f"UPDATE queue SET id = ?, priority = ?, state = {PENDING}, attempts = ?, data = ?,"
    " response = NULL, finished_at = NULL WHERE id = ?"
)
COMPLETE: Final = (
    f"UPDATE queue SET state = {DONE}, data = x'', response = ?, finished_at = ?"
    f" WHERE id = ? AND state = {PENDING} RETURNING priority, caller"
)
FORGET: Final = (  # a dead letter dropped or purged: a finished entry for the window
    f"UPDATE queue SET state = {DONE}, data = x'', response = NULL, finished_at = ? WHERE id = ?"
)
DEAD_COLUMNS: Final = "q.id, q.caller, q.request_id, q.priority, q.data, q.attempts, d.reason, d.at"

DedupeKey = Callable[[str, str], int]


def dedupe_key_function(salt: int) -> DedupeKey:
    """The 64-bit signed dedupe key of ``(caller, request_id)`` for a file with this salt."""
    base = hashlib.blake2b(digest_size=8, key=salt.to_bytes(8, "big"))

    def key(caller: str, request_id: str) -> int:
        h = base.copy()
        h.update(f"{caller}\0{request_id}".encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "big", signed=True)

    return key


def connect(path: Path, synchronous: Synchronous) -> tuple[sqlite3.Connection, int]:
    """Open ``path`` (creating it 0600 in a 0700 directory), WAL, exclusive; schema current.

    Returns:
        The connection (autocommit mode: transactions are explicit) and the file's salt.

    Raises:
        MailboxError: cannot open, in use by another connection or process, not a mailbox of a
            known schema version, or ``synchronous`` is invalid.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise MailboxError(f"synchronous={synchronous!r} must be 'NORMAL' or 'FULL'")
    with translate(f"cannot open mailbox {str(path)!r}"):
        make_private_dir(path.parent)
        # SQLite creates files with the umask (often 0644); the WAL file copies the mode of the
        # database, so a database created 0600 first keeps both private.
        private_file(path)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():  # left by a crash, maybe of a version that did not tighten it
            private_file(wal)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=_LOCK_TIMEOUT
        )
        try:
            # Before the first WAL access: no shared-memory index, and the write lock taken by
            # the schema transaction below is held until close.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode != "wal":
                raise MailboxError(f"{str(path)!r}: cannot use WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            salt = _ensure_schema(conn, path)
            conn.execute("COMMIT")
            return conn, salt
        except BaseException:
            conn.close()
            raise


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Create the schema, or migrate an older one, inside the caller's transaction."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise MailboxError(
            f"{str(path)!r}: mailbox schema version {version} is newer than this actr_trio"
            f" reads (up to {SCHEMA_VERSION}); run the actr_trio that wrote it (or a newer one)"
        )
    if version == 1:
        _rename_v1(conn)
    elif version not in (0, SCHEMA_VERSION):
        raise MailboxError(f"{str(path)!r}: unknown mailbox schema version {version}")
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('salt', ?) ON CONFLICT DO NOTHING",
        (secrets.randbits(63),),
    )
    (salt,) = conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
    if version == 1:
        _migrate_v1(conn, path, dedupe_key_function(salt))
    if version != SCHEMA_VERSION:  # an unchanged file is not written to (a full disk opens)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return int(salt)


def _rename_v1(conn: sqlite3.Connection) -> None:
    # The version 1 tables whose names version 2 reuses move aside, to be copied, then dropped.
    conn.execute("ALTER TABLE queue RENAME TO v1_queue")
    conn.execute("ALTER TABLE dead_letters RENAME TO v1_dead_letters")


def _migrate_v1(conn: sqlite3.Connection, path: Path, key_of: DedupeKey) -> None:
    """Copy a version 1 mailbox into the version 2 tables (same transaction), drop the old.

    Pending and dead-lettered envelopes keep their ids, attempts and (dead) order; finished
    entries still in the table get new ids after every existing one.
    """
    cur = conn.cursor()
    rows: list[tuple[object, ...]] = []
    for id_, caller, request_id, priority, data, attempts in cur.execute(
        "SELECT id, caller, request_id, priority, data, attempts FROM v1_queue"
    ):
        rows.append((id_, caller, request_id, priority, PENDING, attempts, data, None, None))
    dead = cur.execute(
        "SELECT seq, id, caller, request_id, priority, data, attempts, reason, at"
        " FROM v1_dead_letters ORDER BY seq"
    ).fetchall()
    for _, id_, caller, request_id, priority, data, attempts, _, _ in dead:
        rows.append((id_, caller, request_id, priority, DEAD, attempts, data, None, None))
    (last_id,) = cur.execute(
        "SELECT max(coalesce((SELECT value FROM meta WHERE key = 'last_id'), 0),"
        " coalesce((SELECT max(id) FROM v1_queue), 0),"
        " coalesce((SELECT max(id) FROM v1_dead_letters), 0))"
    ).fetchone()
    done = cur.execute(
        f"SELECT caller, request_id, response, finished_at FROM seen WHERE state = {DONE}"
        " ORDER BY finished_at"
    ).fetchall()
    for caller, request_id, response, finished_at in done:
        last_id += 1
        rows.append(
            (last_id, caller, request_id, int(Priority.NORMAL), DONE, 0, b"", response, finished_at)
        )
    for row in rows:
        key = key_of(str(row[1]), str(row[2]))
        if not cur.execute(INSERT, (row[0], key, *row[1:])).rowcount:
            cur.execute(INSERT, (row[0], None, *row[1:]))  # a collision: found by its text
    cur.executemany(
        "INSERT INTO dead_letters (seq, id, reason, at) VALUES (?, ?, ?, ?)",
        [(seq, id_, reason, at) for seq, id_, *_, reason, at in dead],
    )
    cur.execute(
        "INSERT INTO meta (key, value) VALUES ('last_id', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (last_id,),
    )
    for table in ("v1_queue", "v1_dead_letters", "seen"):
        cur.execute(f"DROP TABLE {table}")
    logger.info(
        "mailbox %s: schema 1 migrated to %d (%d pending, %d dead letters, %d finished)",
        path,
        SCHEMA_VERSION,
        len(rows) - len(dead) - len(done),
        len(dead),
        len(done),
    )


def sizes(n: int) -> Iterator[int]:
    """``n`` as chunks of at most :data:`BULK`, each a power of two (largest first)."""
    while n >= BULK:
        yield BULK
        n -= BULK
    size = BULK
    while n:
        size >>= 1
        if n >= size:
            yield size
            n -= size


@functools.cache
def bulk_insert(rows: int) -> str:
    values = ",".join([f"(?, ?, ?, ?, ?, {PENDING}, {ACCEPTED_ATTEMPTS}, ?)"] * rows)
    return (
        "INSERT INTO queue (id, key, caller, request_id, priority, state, attempts, data)"
        f" VALUES {values} ON CONFLICT DO NOTHING"
    )


@functools.cache
def bulk_complete(rows: int) -> str:
    # The VALUES rows drive the join: one rowid lookup each. Only pending rows change.
    values = ",".join(["(?, ?)"] * rows)
    return (
        f"UPDATE queue SET state = {DONE}, data = x'', response = v.column2, finished_at = ?"
        f" FROM (VALUES {values}) AS v WHERE queue.id = v.column1 AND queue.state = {PENDING}"
        " RETURNING queue.priority, queue.caller"
    )


# Primary SQLite result codes of a write the storage could not take (extended codes keep
# the primary one in their low byte: SQLITE_IOERR_WRITE is 10 | 3 << 8).
_SQLITE_IOERR: Final = 10
_SQLITE_FULL: Final = 13
# The same from the file system, for what we write ourselves.
_STORAGE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT})


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full or failed (a condition to wait out)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
        return "disk is full" in str(exc) or "disk I/O error" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn ``sqlite3`` (and file system) errors into :class:`MailboxError`, once, here: a
    full or failing disk into :class:`MailboxStorageError`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        cls = MailboxStorageError if is_storage_error(exc) else MailboxError
        raise cls(f"{what}: {exc}") from exc
