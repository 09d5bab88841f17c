"""State that several agent hosts share, in PostgreSQL: nonces and rate buckets.

With one host, nonces are files under a flock (agent.nonces) and rate buckets a mapped file (agent.rates).
Hosts share neither, so with `[store] backend = "postgres"` both live in the database, kept exact the way
Web3Signer's slashing protection keeps its records: ONE transaction per decision that takes a per-key
`pg_advisory_xact_lock`, reads, checks and writes; the lock is released at commit or rollback, so a host
killed in the middle holds nothing. A constraint in the table is the second guard: an update that would move
a nonce backwards matches no row and is refused, whatever the code above it did.

The clock of rate buckets is the database's (clock_timestamp()), one clock for every host: the hosts'
monotonic clocks are unrelated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.custody.store import Postgres, StoreUnavailable
from agent.logs import get_logger
from agent.nonces import NonceError, NonceStore, NonceStoreUnavailable
from agent.rates import SharedBuckets

NONCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT PRIMARY KEY,          -- exchange and hashed API key id (agent.nonces.NonceStore.file_name)
    last BIGINT NOT NULL CHECK (last > 0),
    updated TIMESTAMPTZ NOT NULL DEFAULT now());
-- The second guard, in the database itself: no statement, ours or an operator's, moves a nonce back.
CREATE OR REPLACE FUNCTION nonces_only_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.last <= OLD.last THEN
        RAISE EXCEPTION 'a nonce never moves backwards (% to %)', OLD.last, NEW.last USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER nonces_only_forward BEFORE UPDATE ON nonces FOR EACH ROW EXECUTE FUNCTION nonces_only_forward();
"""
BUCKET_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    name TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    stamp TIMESTAMPTZ NOT NULL,
    burst INTEGER NOT NULL,
    CHECK (tokens >= 0 AND tokens <= burst));
"""
# Advisory lock keys are 64-bit: a namespace prefix and hashtextextended keep nonces and buckets apart.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def _schema(db: Postgres, ddl: str) -> None:
    with db.tx() as cur:
        cur.execute(_LOCK, ("signing-agent schema",))  # concurrent first starts create the table once
        cur.execute(ddl)


def create_tables(dsn: str) -> None:
    """The nonce and rate-bucket tables (`store init`), so that agents find them ready."""
    db = Postgres(dsn)
    try:
        _schema(db, NONCE_SCHEMA + BUCKET_SCHEMA)
    finally:
        db.close()


class PostgresNonces:
    """agent.nonces.NonceStore's contract (`next`), for every host at once."""

    def __init__(self, dsn: str) -> None:
        self._db = Postgres(dsn, unavailable=NonceStoreUnavailable)
        _schema(self._db, NONCE_SCHEMA)

    def check(self) -> None:
        with self._db.tx() as cur:
            cur.execute("SELECT 1 FROM nonces LIMIT 1")

    def next(self, exchange: str, api_key: str, floor: int) -> int:
        """A nonce >= FLOOR and greater than any issued before for this key, by any host."""
        if floor < 0:
            raise NonceError("nonce floor must not be negative")
        key = NonceStore.file_name(exchange, api_key)
        with self._db.tx() as cur:
            cur.execute(_LOCK, ("nonce:" + key,))
            cur.execute("SELECT last FROM nonces WHERE key = %s", (key,))
            row = cur.fetchone()
            nonce = max(floor, (row[0] if row else 0) + 1)
            cur.execute(
                "INSERT INTO nonces (key, last) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                "SET last = EXCLUDED.last, updated = now() WHERE nonces.last < EXCLUDED.last", (key, nonce))
            if cur.rowcount != 1:  # the second guard: only reachable if the lock above was bypassed
                raise NonceError(f"nonce for {exchange} would not move forward; refused")
        return nonce

    def close(self) -> None:
        self._db.close()


class PostgresBuckets:
    """agent.rates.SharedBuckets' contract (`take`), for every host at once.

    Buckets that only matter on this host (the audit throttle of unauthenticated calls, `audit:`) stay in
    the local file: they protect this host's audit log, and must work while the database does not.
    """

    def __init__(self, dsn: str, local: SharedBuckets) -> None:
        self._db = Postgres(dsn)
        self._local = local
        _schema(self._db, BUCKET_SCHEMA)

    def take(self, name: str, rate: float, burst: int) -> bool:
        """Take one token from bucket NAME (RATE per second, up to BURST); False when it is empty."""
        return self.take_all([(name, rate, burst, 1)]) is None

    def take_all(self, takes: list[tuple[str, float, int, int]]) -> int | None:
        """SharedBuckets.take_all across hosts: COST tokens from each bucket (NAME, RATE, BURST, COST), all or
        none, in one transaction; the index of the first bucket holding fewer, or None once all are taken."""
        if all(name.startswith("audit:") for name, *_ in takes):
            return self._local.take_all(takes)
        if any(name.startswith("audit:") for name, *_ in takes):
            raise ValueError("host-local (audit:) and shared buckets are not taken together")
        with self._db.tx() as cur:
            # Locks in one order (sorted names): two hosts taking overlapping sets never wait on each other
            # in a cycle. Held to commit, so the read, the check and the write are one step for every host.
            for name in sorted({name for name, *_ in takes}):
                cur.execute(_LOCK, ("rate:" + name,))
            found = []
            for name, rate, burst, cost in takes:
                cur.execute("SELECT tokens, EXTRACT(EPOCH FROM clock_timestamp() - stamp)::float8 FROM rate_buckets "
                            "WHERE name = %s", (name,))
                row: Any = cur.fetchone()
                tokens = float(burst) if row is None else min(float(burst), row[0] + max(0.0, row[1]) * rate)
                found.append((name, burst, tokens, cost))
            short = next((i for i, (_, _, tokens, cost) in enumerate(found) if tokens < cost), None)
            for name, burst, tokens, cost in found:
                # Written even when short: the refill up to now is kept, as the local table does.
                cur.execute(
                    "INSERT INTO rate_buckets (name, tokens, stamp, burst) VALUES (%s, %s, clock_timestamp(), %s) "
                    "ON CONFLICT (name) DO UPDATE SET tokens = EXCLUDED.tokens, stamp = EXCLUDED.stamp, "
                    "burst = EXCLUDED.burst", (name, tokens - (cost if short is None else 0), burst))
        return short

    def close(self) -> None:
        self._db.close()
        self._local.close()


class DatabaseWatch:
    """READ repeated every POLL seconds on a thread of its own, and how fresh its last answer is.

    For what a host must learn from the others within a second and must stop trusting once the database
    stops answering (bot credentials: agent.bots_db; a quorum's bundles: agent.quorum_pg): `stale()` is
    true once the last READ that answered began over STALE seconds ago. READ raises StoreUnavailable when
    the database does not answer; EVENT is the log line of an outage and of the recovery, once each."""

    def __init__(self, read: Callable[[], None], *, name: str, event: str, poll: float, stale: float,
                 answered: float) -> None:
        """ANSWERED: when the read that loaded what is in force began (time.monotonic())."""
        self._read, self._name, self._event, self._poll, self._stale = read, name, event, poll, stale
        self._fresh_until = answered + stale
        self.down = False  # the last READ failed: the next one may need to read everything again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stale(self) -> bool:
        return time.monotonic() > self._fresh_until

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            self.poll()

    def poll(self) -> None:
        started = time.monotonic()
        try:
            self._read()
        except StoreUnavailable as exc:
            if not self.down:
                get_logger().error(self._event, up=False, reason=str(exc))
            self.down = True
            return
        if self.down:
            get_logger().info(self._event, up=True)
        self.down = False
        self._fresh_until = started + self._stale

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
