"""The kill switch for several hosts: freezes in the PostgreSQL database they share.

With one host a freeze is a file in the state dir (agent.freeze), which every worker polls. Hosts do not
share a state dir, so with `[store] backend = "postgres"` `signing-agent freeze` and `unfreeze` write a
`freezes` table instead, and every host reads it every POLL_SECONDS on a thread of its own: a freeze made
on any host stops orders on every host within a second, and survives restarts of all of them.

A brake must not be missed: while the table has not answered for STALE_SECONDS, every key is treated
as frozen (orders and amends refused, reads and cancels still signed, as a freeze does), and the refusal
says why. A host's own freeze file still applies beside the table (both are read; either freezes).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from agent.custody.store import Postgres, StoreUnavailable
from agent.custody.wrapped import STORE_POLL_SECONDS, STORE_STALE_SECONDS
from agent.freeze import SCOPES, Freeze, FreezeFileError, Freezes
from agent.shared_state import DatabaseWatch, _schema

POLL_SECONDS = STORE_POLL_SECONDS
STALE_SECONDS = STORE_STALE_SECONDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS freezes (
    scope TEXT NOT NULL CHECK (scope IN ('all', 'key', 'bot')),
    name TEXT NOT NULL,                -- the key label or bot name; '' for 'all'
    by_user TEXT NOT NULL,             -- the operating-system user who ran `signing-agent freeze`
    at TEXT NOT NULL,                  -- when, ISO 8601 UTC
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (scope, name));
"""
WHERE = "the freezes table of the PostgreSQL database ([store] dsn)"


def create_tables(dsn: str) -> None:
    """The freezes table (`store init`), so that agents find it ready."""
    db = Postgres(dsn)
    try:
        _schema(db, SCHEMA)
    finally:
        db.close()


class PostgresFreezes:
    """`freeze`, `unfreeze` and `read` of agent.freeze, on the table every host reads."""

    def __init__(self, dsn: str) -> None:
        self._db = Postgres(dsn)
        _schema(self._db, SCHEMA)

    def freeze(self, scope: str, name: str, *, by: str, reason: str = "") -> tuple[Freeze, bool]:
        """Add a freeze; (the freeze in force, whether it is new). Freezing what is frozen keeps the first."""
        assert scope in SCOPES
        at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            with self._db.tx() as cur:
                cur.execute("INSERT INTO freezes (scope, name, by_user, at, reason) VALUES (%s, %s, %s, %s, %s) "
                            "ON CONFLICT (scope, name) DO NOTHING RETURNING scope", (scope, name, by, at, reason))
                if cur.fetchone() is not None:
                    return Freeze(scope, name, by, at, reason), True
                cur.execute("SELECT scope, name, by_user, at, reason FROM freezes WHERE scope = %s AND name = %s",
                            (scope, name))
                return Freeze(*cur.fetchone()), False
        except StoreUnavailable as exc:
            raise FreezeFileError(f"cannot write {WHERE}: {exc}") from None

    def unfreeze(self, scope: str, name: str) -> Freeze | None:
        """Lift one freeze; the freeze lifted, or None when there was none."""
        try:
            with self._db.tx() as cur:
                cur.execute("DELETE FROM freezes WHERE scope = %s AND name = %s "
                            "RETURNING scope, name, by_user, at, reason", (scope, name))
                row = cur.fetchone()
        except StoreUnavailable as exc:
            raise FreezeFileError(f"cannot write {WHERE}: {exc}") from None
        return Freeze(*row) if row is not None else None

    def read(self) -> Freezes:
        """The freezes in the table; StoreUnavailable when the database does not answer."""
        with self._db.tx() as cur:
            cur.execute("SELECT scope, name, by_user, at, reason FROM freezes ORDER BY scope, name")
            return Freezes(tuple(Freeze(*row) for row in cur.fetchall()))

    def close(self) -> None:
        self._db.close()


class SharedFreezes:
    """What an agent host enforces from the table: read at start, then every POLL_SECONDS (agent.guardrails)."""

    def __init__(self, dsn: str) -> None:
        self._store = PostgresFreezes(dsn)
        started = time.monotonic()
        self.freezes = self._store.read()  # a database that does not answer at start stops the start
        self._watch = DatabaseWatch(self._read, name="freezes-watch", event="freezes.store", poll=POLL_SECONDS,
                                    stale=STALE_SECONDS, answered=started)
        self._watch.start()

    def _read(self) -> None:
        self.freezes = self._store.read()  # one assignment: the old list or the new one, whole

    def current(self) -> Freezes:
        if self._watch.stale():
            return Freezes((), problem=f"{WHERE} has not answered for over {STALE_SECONDS:g} s, so a freeze made on "
                                       "another host could be missed: every key is treated as frozen until it answers")
        return self.freezes

    def close(self) -> None:
        self._watch.stop()
        self._store.close()
