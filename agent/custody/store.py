"""The wrapped-key store: each exchange secret as a blob wrapped under the token's master key, outside it.

Two backends behind one interface (KeyStore): SQLite, a file for one host, and PostgreSQL for several
agent hosts sharing keys. A row holds a key's metadata (label, exchange, type, API key id, options,
creation time, fingerprint), the generation of the master key that wrapped it, and the blob. Nothing in
a row lets anyone sign or read the secret without the token: the blob unwraps only inside the token that
holds the master key, and only into a sensitive, non-extractable key (agent.custody.master).

Every change is also an event (key_events: a growing sequence number and the label), so that agents
that cached a key's unwrapped object learn of a revocation or a re-import by polling one index range,
whatever the key count. A label is the primary key: the database refuses a second key of the same label
even when two hosts import at once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.custody.errors import KeyExists, TokenUnavailable


class StoreUnavailable(TokenUnavailable):
    """The key store cannot be reached right now; a later call may succeed.

    A TokenUnavailable: like a missing token, it answers UNAVAILABLE (the bot retries) and exits 4 in the CLI.
    """


@dataclass(frozen=True)
class WrappedRecord:
    label: str
    exchange: str
    api_key: str
    key_type: str
    created: str
    fingerprint: str
    master: int  # the generation of the master key the blob is wrapped under
    blob: bytes = field(repr=False)
    options: dict[str, str] = field(default_factory=dict)
    # KuCoin v2/v3: base64(HMAC-SHA256(secret, passphrase)), the header value sent with every request,
    # computed in the token at import. Never a clear passphrase (those keys stay token objects).
    header: str | None = field(default=None, repr=False)


class KeyStore(Protocol):
    def get(self, label: str) -> WrappedRecord | None: ...
    def add(self, record: WrappedRecord) -> None: ...
    def revoke(self, label: str) -> WrappedRecord | None: ...
    def events_since(self, seq: int) -> tuple[list[str], int]: ...
    def head(self) -> int: ...
    def count(self) -> int: ...
    def records(self) -> list[WrappedRecord]: ...
    def present(self, labels: list[str]) -> set[str]: ...
    def count_by_master(self) -> dict[int, int]: ...
    def restore(self, records: list[WrappedRecord], *, replace: bool) -> None: ...
    def labels_under(self, generation: int, limit: int) -> list[str]: ...
    def close(self) -> None: ...


PRESENT_BATCH = 500  # labels per query of `present` (SQLite allows 32,766 parameters, PostgreSQL 65,535)
_COLUMNS = "label, exchange, api_key, key_type, created, fingerprint, master, blob, options, header"


def _record(row: Any) -> WrappedRecord:
    label, exchange, api_key, key_type, created, fingerprint, master, blob, options, header = row
    return WrappedRecord(label=label, exchange=exchange, api_key=api_key, key_type=key_type, created=created,
                         fingerprint=fingerprint, master=int(master), blob=bytes(blob),
                         options=json.loads(options), header=header)


def _values(r: WrappedRecord) -> tuple[Any, ...]:
    return (r.label, r.exchange, r.api_key, r.key_type, r.created, r.fingerprint, r.master, r.blob,
            json.dumps(r.options, sort_keys=True), r.header)


def _schema(blob: str, serial: str, stamp: str) -> str:
    """The tables, in a dialect's words for a byte string, a growing key and the current time."""
    return f"""
    CREATE TABLE IF NOT EXISTS wrapped_keys (
        label TEXT PRIMARY KEY, exchange TEXT NOT NULL, api_key TEXT NOT NULL, key_type TEXT NOT NULL,
        created TEXT NOT NULL, fingerprint TEXT NOT NULL, master INTEGER NOT NULL, blob {blob} NOT NULL,
        options TEXT NOT NULL, header TEXT);
    CREATE TABLE IF NOT EXISTS key_events (seq {serial}, label TEXT NOT NULL, kind TEXT NOT NULL, at {stamp});
    """


class _SqlStore:
    """The queries both backends share; each says how to get a transaction and what a duplicate looks like."""

    PARAM = "?"
    DUPLICATE: tuple[type[BaseException], ...] = ()

    @contextmanager
    def _tx(self) -> Iterator[Any]:  # a cursor inside one transaction
        raise NotImplementedError
        yield

    @contextmanager
    def _write_tx(self) -> Iterator[Any]:
        """A transaction that appends key_events: writers must commit in the order of their sequence
        numbers, or a poller that has read event 11 never sees event 10 committed after it (a revocation
        missed for good). SQLite has one writer at a time; PostgreSQL takes a lock first (below)."""
        with self._tx() as cur:
            yield cur

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.PARAM)

    def get(self, label: str) -> WrappedRecord | None:
        with self._tx() as cur:
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM wrapped_keys WHERE label = ?"), (label,))
            row = cur.fetchone()
        return _record(row) if row else None

    def add(self, record: WrappedRecord) -> None:
        try:
            with self._write_tx() as cur:
                cur.execute(self._q(f"INSERT INTO wrapped_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            _values(record))
                cur.execute(self._q("INSERT INTO key_events (label, kind) VALUES (?, 'add')"), (record.label,))
        except self.DUPLICATE:
            raise KeyExists(f"a key labelled {record.label!r} exists in the key store; revoke it first "
                            "or choose another label") from None

    def add_many(self, records: list[WrappedRecord]) -> None:
        """Add RECORDS in one transaction (bulk loads, restores); any label already present refuses them all."""
        try:
            with self._write_tx() as cur:
                cur.executemany(self._q(f"INSERT INTO wrapped_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                                [_values(r) for r in records])
                cur.executemany(self._q("INSERT INTO key_events (label, kind) VALUES (?, 'add')"),
                                [(r.label,) for r in records])
        except self.DUPLICATE:
            raise KeyExists("a label of the batch exists in the key store already; nothing was added") from None

    def restore(self, records: list[WrappedRecord], *, replace: bool) -> None:
        """Write RECORDS (`store restore`) in one transaction: all or none. A label present already refuses them
        all (KeyExists), unless REPLACE: then its row is overwritten, and agents drop what they unwrapped of it."""
        upsert = " ON CONFLICT (label) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[1:]) if replace else ""
        try:
            with self._write_tx() as cur:
                cur.executemany(self._q(f"INSERT INTO wrapped_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                                        + upsert), [_values(r) for r in records])
                cur.executemany(self._q("INSERT INTO key_events (label, kind) VALUES (?, 'restore')"),
                                [(r.label,) for r in records])
        except self.DUPLICATE:
            raise KeyExists("a restored label exists in the key store already; nothing was restored") from None

    def revoke(self, label: str) -> WrappedRecord | None:
        """Delete the key's row (its blob with it) and record the event, in one transaction."""
        with self._write_tx() as cur:
            cur.execute(self._q(f"DELETE FROM wrapped_keys WHERE label = ? RETURNING {_COLUMNS}"), (label,))
            row = cur.fetchone()
            if row is None:
                return None
            cur.execute(self._q("INSERT INTO key_events (label, kind) VALUES (?, 'revoke')"), (label,))
        return _record(row)

    def events_since(self, seq: int) -> tuple[list[str], int]:
        """Labels changed after event SEQ, and the newest event's number."""
        with self._tx() as cur:
            cur.execute(self._q("SELECT seq, label FROM key_events WHERE seq > ? ORDER BY seq"), (seq,))
            rows = cur.fetchall()
        return [label for _, label in rows], (int(rows[-1][0]) if rows else seq)

    def head(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM key_events")
            return int(cur.fetchone()[0])

    def count(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COUNT(*) FROM wrapped_keys")
            return int(cur.fetchone()[0])

    def present(self, labels: list[str]) -> set[str]:
        """Which of LABELS have a row (one indexed query per PRESENT_BATCH labels, blobs not read)."""
        found: set[str] = set()
        for start in range(0, len(labels), PRESENT_BATCH):
            batch = labels[start:start + PRESENT_BATCH]
            marks = ", ".join("?" * len(batch))
            with self._tx() as cur:
                cur.execute(self._q(f"SELECT label FROM wrapped_keys WHERE label IN ({marks})"), batch)
                found.update(row[0] for row in cur.fetchall())
        return found

    def count_by_master(self) -> dict[int, int]:
        """Master key generation -> how many rows are wrapped under it."""
        with self._tx() as cur:
            cur.execute("SELECT master, COUNT(*) FROM wrapped_keys GROUP BY master")
            return {int(master): int(n) for master, n in cur.fetchall()}

    def labels_under(self, generation: int, limit: int) -> list[str]:
        """Up to LIMIT labels, in order, of the rows wrapped under master key GENERATION."""
        with self._tx() as cur:
            cur.execute(self._q("SELECT label FROM wrapped_keys WHERE master = ? ORDER BY label LIMIT ?"),
                        (generation, limit))
            return [row[0] for row in cur.fetchall()]

    def records(self) -> list[WrappedRecord]:
        with self._tx() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM wrapped_keys ORDER BY label")
            return [_record(row) for row in cur.fetchall()]


class SqliteKeyStore(_SqlStore):
    """The store in one SQLite file (mode 0600): one host, any number of agent processes on it."""

    SCHEMA = _schema("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP")
    DUPLICATE = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o600)
        self._local = threading.local()  # a sqlite3 connection belongs to its thread
        with self._tx() as cur:
            cur.executescript(self.SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: transactions are the explicit BEGIN of _tx; a writer waits up to 10 s
            # for another (WAL: readers never wait).
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._conn()
        try:
            cur = conn.cursor()
            cur.execute("BEGIN")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"key store {self.path}: {exc}") from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class PostgresKeyStore(_SqlStore):
    """The store in PostgreSQL (psycopg 3): every agent host of a platform sees the same keys."""

    PARAM = "%s"
    SCHEMA = _schema("BYTEA", "BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ NOT NULL DEFAULT now()")

    def __init__(self, dsn: str, *, create: bool = True) -> None:
        import psycopg

        self.DUPLICATE = (psycopg.errors.UniqueViolation,)
        self._db = Postgres(dsn)
        if create:
            with self._db.tx() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('signing-agent schema'))")
                cur.execute(self.SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._db.tx() as cur:
            yield cur

    @contextmanager
    def _write_tx(self) -> Iterator[Any]:
        with self._db.tx() as cur:
            # Held to commit: the next writer draws its event number only after this one's is visible.
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('signing-agent key events', 0))")
            yield cur

    def close(self) -> None:
        self._db.close()


class Postgres:
    """Connections to one PostgreSQL database: one per thread, reopened after the server went away.

    Any failure to reach the server is StoreUnavailable (UNAVAILABLE to bots); the next call tries a
    fresh connection, so agents recover by themselves when the database returns.
    """

    CONNECT_TIMEOUT = 2

    def __init__(self, dsn: str, unavailable: Callable[[str], Exception] = StoreUnavailable) -> None:
        self._dsn = dsn
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._unavailable = unavailable

    def _conn(self) -> Any:
        import psycopg

        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        try:
            conn = psycopg.connect(self._dsn, connect_timeout=self.CONNECT_TIMEOUT, autocommit=True)
        except psycopg.OperationalError as exc:
            # libpq's message names host and database, never a password (it is not in the DSN: see config).
            raise self._unavailable(f"the key store database is unreachable ({_first_line(exc)})") from None
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextmanager
    def tx(self) -> Iterator[Any]:
        import psycopg

        conn = self._conn()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            try:
                conn.close()
            except psycopg.Error:
                pass
            self._local.conn = None
            raise self._unavailable(f"the key store database is unreachable ({_first_line(exc)})") from None

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing at exit, nothing to do about it
                    pass
            self._conns.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
