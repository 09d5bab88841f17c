"""Bot credentials in PostgreSQL, shared by every agent host ([store] backend = "postgres").

A row is what a [bots.NAME] table of bots.toml holds: the name, the SHA-256 of the bearer token or of the
mTLS certificate (never the token), and the creation time. Every change appends an event (bot_events:
a growing sequence number, the name, what happened and the credential's hash), in the transaction that
makes it. Each agent polls the events every POLL_SECONDS and reloads the rows they name, so an add or a
revoke on any host is in force on every host within a second.

Why polling rather than LISTEN/NOTIFY: a notification is lost while a host's connection is down (a restart,
a failover, a pooler in transaction mode that does not carry LISTEN at all), so polling would be needed
behind it anyway; and each poll that answers is what proves the credentials are current. A poll is one
indexed range read; four a second per host cost the database nothing next to the signing traffic.

Events must become visible in sequence order, or a poller that read event 11 would never see event 10
committed after it (a revocation missed for good). Every write therefore takes one advisory lock before it
draws its sequence number and holds it to commit: writers commit in the order of their numbers. Bot changes
are rare operator actions, so one lock costs nothing.

Staleness: while the database does not answer, the last credentials read stay in force for STALE_SECONDS
from the start of the last poll that answered; past that, every caller is refused UNAVAILABLE (a revocation
could be missed), until a poll answers again, which reloads every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.bots import (
    BOT_EXISTS,
    CERT_TAKEN,
    BotCredential,
    Bots,
    BotsError,
    BotsFile,
    load_bots,
    new_credential,
    validate_bot_name,
)
from agent.custody.store import Postgres
from agent.custody.wrapped import STORE_POLL_SECONDS, STORE_STALE_SECONDS
from agent.logs import get_logger
from agent.shared_state import DatabaseWatch, _schema

# The key store's figures: a revocation of a key or of a bot is in force on every host within a second.
POLL_SECONDS = STORE_POLL_SECONDS
STALE_SECONDS = STORE_STALE_SECONDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS bots (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT CONSTRAINT bots_token_unique UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    cert_sha256 TEXT CONSTRAINT bots_cert_unique UNIQUE CHECK (cert_sha256 ~ '^[0-9a-f]{64}$'),
    created TEXT NOT NULL,
    CHECK ((token_sha256 IS NULL) <> (cert_sha256 IS NULL)));
CREATE TABLE IF NOT EXISTS bot_events (
    seq BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('add', 'revoke', 'import')),
    credential TEXT NOT NULL,      -- the token's or certificate's SHA-256: a revoked one is never imported again
    at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS bot_events_credential ON bot_events (credential) WHERE kind = 'revoke';
"""
_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('signing-agent bots', 0))"
_COLUMNS = "name, token_sha256, cert_sha256, created"


def _credential(row: Any) -> BotCredential:
    name, token_sha256, cert_sha256, created = row
    return BotCredential(name=name, token_sha256=token_sha256, cert_sha256=cert_sha256, created=created)


def _digest(c: BotCredential) -> str:
    return c.token_sha256 or c.cert_sha256 or ""


class PostgresBots:
    """The registry in PostgreSQL: what `bots add/list/revoke/import-file` write, what agents poll."""

    def __init__(self, dsn: str) -> None:
        self.where = "the PostgreSQL database ([store] dsn)"
        self._db = Postgres(dsn)
        _schema(self._db, SCHEMA)

    # -- writes (the CLI) ----------------------------------------------------------------

    def add(self, name: str, *, cert_pem: bytes | None = None,
            deliver: Callable[[str], None] | None = None) -> str | None:
        """bots.add_bot's contract: the new bearer token (None for a certificate bot); DELIVER gets the
        token before the row is written, and if it raises, nothing is written."""
        import psycopg

        credential, token = new_credential(name, cert_pem)
        try:
            with self._db.tx() as cur:
                cur.execute(_WRITE_LOCK)
                cur.execute("SELECT 1 FROM bots WHERE name = %s", (name,))
                if cur.fetchone() is not None:
                    raise BotsError(BOT_EXISTS.format(name=name))
                if token is not None and deliver is not None:
                    deliver(token)
                self._insert(cur, credential, "add")
        except psycopg.errors.UniqueViolation as exc:  # only a credential can still collide, under the lock
            raise BotsError(CERT_TAKEN if exc.diag.constraint_name == "bots_cert_unique" else
                            "this credential already identifies another bot") from None
        return token

    def revoke(self, name: str) -> None:
        validate_bot_name(name)
        with self._db.tx() as cur:
            cur.execute(_WRITE_LOCK)
            cur.execute(f"DELETE FROM bots WHERE name = %s RETURNING {_COLUMNS}", (name,))
            row = cur.fetchone()
            if row is None:
                raise BotsError(f"no bot named {name!r} in {self.where}")
            self._event(cur, _credential(row), "revoke")

    def import_file(self, path: Path) -> tuple[list[str], list[str]]:
        """Move the bots of the file at PATH into the database, all or none: (names added, names that were
        there already with the same credential). A bot whose name or credential the database holds
        otherwise, or whose credential was revoked here, refuses the whole import, naming it."""
        if not path.is_file():
            raise BotsError(f"{path} does not exist: there is no bots file to import (the config's "
                            "[policy] bots_file, or --file)")
        in_file = load_bots(path)  # BotsFileError names the line of a malformed file
        wanted = sorted({*in_file.by_token.values(), *in_file.by_cert.values()}, key=lambda c: c.name)
        added, present = [], []
        with self._db.tx() as cur:
            cur.execute(_WRITE_LOCK)
            for c in wanted:
                cur.execute(f"SELECT {_COLUMNS} FROM bots WHERE name = %s OR token_sha256 = %s OR cert_sha256 = %s",
                            (c.name, _digest(c), _digest(c)))
                found = [_credential(row) for row in cur.fetchall()]
                if any(f.name == c.name and _digest(f) == _digest(c) for f in found):
                    present.append(c.name)
                    continue
                for f in found:
                    if f.name == c.name:
                        raise BotsError(f"bot {c.name!r} of {path} is in the database with another credential; "
                                        "nothing was imported (revoke it there first, or rename it in the file)")
                    raise BotsError(f"the credential of bot {c.name!r} in {path} is bot {f.name!r}'s in the "
                                    "database; nothing was imported (one credential identifies one bot)")
                cur.execute("SELECT at FROM bot_events WHERE kind = 'revoke' AND credential = %s LIMIT 1",
                            (_digest(c),))
                revoked = cur.fetchone()
                if revoked is not None:
                    raise BotsError(f"the credential of bot {c.name!r} in {path} was revoked in the database on "
                                    f"{revoked[0]:%Y-%m-%d %H:%M:%S %Z}; nothing was imported. A revoked "
                                    f"credential never comes back: remove [bots.{c.name}] from the file, import "
                                    "again, and give the bot a new credential (bots add)")
                self._insert(cur, c, "import")
                added.append(c.name)
        return added, present

    def _insert(self, cur: Any, c: BotCredential, kind: str) -> None:
        cur.execute(f"INSERT INTO bots ({_COLUMNS}) VALUES (%s, %s, %s, %s)",
                    (c.name, c.token_sha256, c.cert_sha256, c.created))
        self._event(cur, c, kind)

    @staticmethod
    def _event(cur: Any, c: BotCredential, kind: str) -> None:
        cur.execute("INSERT INTO bot_events (name, kind, credential) VALUES (%s, %s, %s)", (c.name, kind, _digest(c)))

    # -- reads (the CLI, and agents through BotsWatch) -------------------------------------

    def list(self) -> list[BotCredential]:
        return self.load()[0]

    def load(self) -> tuple[list[BotCredential], int]:
        """Every credential, and the event number they include (at least)."""
        with self._db.tx() as cur:
            # The head first: a change committed between the two reads is in the rows and after the head,
            # so the next poll applies it again, which changes nothing.
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM bot_events")
            head = int(cur.fetchone()[0])
            cur.execute(f"SELECT {_COLUMNS} FROM bots ORDER BY name")
            return [_credential(row) for row in cur.fetchall()], head

    def changes(self, seq: int) -> tuple[dict[str, BotCredential | None], int] | None:
        """The bots changed after event SEQ (name -> its credential now, None once revoked) and the newest
        event's number; None when the events went back before SEQ (a database restored from a backup):
        reload everything."""
        with self._db.tx() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM bot_events")
            head = int(cur.fetchone()[0])
            if head < seq:
                return None
            cur.execute("SELECT DISTINCT name FROM bot_events WHERE seq > %s AND seq <= %s", (seq, head))
            names = [row[0] for row in cur.fetchall()]
            if not names:
                return {}, head
            cur.execute(f"SELECT {_COLUMNS} FROM bots WHERE name = ANY(%s)", (names,))
            now = {c.name: c for c in map(_credential, cur.fetchall())}
        return {name: now.get(name) for name in names}, head

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "PostgresBots":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_registry(config: Any) -> "BotsFile | PostgresBots":
    """Where `bots add/list/revoke` write for CONFIG: the PostgreSQL database the hosts share, or the bots file
    (with a quorum, the draft bundles are made from, even with PostgreSQL: credentials then come only from
    bundles, which agent.quorum_pg keeps in the database).
    Raises StoreUnavailable when the database does not answer."""
    if config.bots_in_database:
        return PostgresBots(config.store.dsn)
    return BotsFile(config.bots_file)


class BotsWatch:
    """The credentials in force on one agent, from the database: polled every POLL_SECONDS on a thread of
    its own, so that a database that hangs never holds up the policy watch or a request.

    `current()` is what Guard.bots returns: a new Bots object at every change, and a distinct "unavailable"
    one once the last answer is older than STALE_SECONDS (so anything that re-identifies its caller when
    the object changes, as a stream does, re-identifies then too).
    """

    def __init__(self, dsn: str, *, ignored_file: Path | None = None) -> None:
        """Load every credential now (StoreUnavailable: the agent does not start without them).
        IGNORED_FILE: the config's bots file, which is not read in this mode: a warning if it holds bots."""
        self._db = PostgresBots(dsn)
        self._log = get_logger()
        started = time.monotonic()
        credentials, self._seq = self._db.load()
        self._credentials = {c.name: c for c in credentials}
        self._bots = Bots.of(credentials)
        self._watch = DatabaseWatch(self._read, name="bots-watch", event="bots.store", poll=POLL_SECONDS,
                                    stale=STALE_SECONDS, answered=started)
        self._stale = Bots(by_token={}, by_cert={}, names=(), unavailable=(
            f"the bot credentials database has not answered for over {STALE_SECONDS:g} s, so no credential is "
            "trusted (a revocation could be missed); retry with backoff: the agent recovers by itself when "
            "the database answers"))
        self._on_change: Callable[[list[str], str], None] = lambda names, reason: None
        if ignored_file is not None:
            self._warn_ignored(ignored_file)

    def _warn_ignored(self, path: Path) -> None:
        try:
            in_file = {*load_bots(path).names}
        except BotsError:
            in_file = {"?"}  # unreadable: still worth the warning
        missing = sorted(in_file - set(self._credentials))
        if missing:
            self._log.warning("bots.file_ignored", file=str(path), not_in_database=len(missing),
                              hint="with [store] backend = \"postgres\" bot credentials come from the database "
                                   "only; import the file once (signing-agent bots import-file), then remove it")

    @property
    def names(self) -> tuple[str, ...]:
        return self._bots.names

    def current(self) -> Bots:
        if self._watch.stale():
            return self._stale
        return self._bots

    def start(self, on_change: Callable[[list[str], str], None]) -> None:
        """Poll from now on; ON_CHANGE(names, reason) after each change applied (the guard logs and audits it)."""
        self._on_change = on_change
        self._watch.start()

    def poll(self) -> None:
        self._watch.poll()

    def _read(self) -> None:
        """One poll (StoreUnavailable when the database does not answer: DatabaseWatch counts it)."""
        changes = None if self._watch.down else self._db.changes(self._seq)
        if changes is None:  # after an outage, or a database that went back: every row again
            credentials, seq = self._db.load()
            fresh = {c.name: c for c in credentials}
            changed = sorted(name for name in fresh.keys() | self._credentials.keys()
                             if fresh.get(name) != self._credentials.get(name))
            reason = "database reloaded"
        else:
            named, seq = changes
            fresh = dict(self._credentials)
            for name, credential in named.items():
                if credential is None:
                    fresh.pop(name, None)
                else:
                    fresh[name] = credential
            changed = sorted(named)
            reason = "database changed"
        self._seq = seq
        if changed:
            self._credentials = fresh
            self._bots = Bots.of(list(fresh.values()))  # one reference: requests see the old or the new, whole
            self._on_change(changed, reason)

    def stop(self) -> None:
        self._watch.stop()
        self._db.close()
