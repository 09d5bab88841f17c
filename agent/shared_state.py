"""State that several agent hosts share, in PostgreSQL: nonces, rate buckets and notional budgets.

With one host, nonces are files under a flock (agent.nonces), rate buckets a mapped file (agent.rates) and
notional ledgers files under a flock (agent.budgets). Hosts share none of them, so with `[store] backend =
"postgres"` all three live in the database, kept exact the way
Web3Signer's slashing protection keeps its records: ONE transaction per decision that takes a per-key
`pg_advisory_xact_lock`, reads, checks and writes; the lock is released at commit or rollback, so a host
killed in the middle holds nothing. A constraint in the table is the second guard: an update that would move
a nonce backwards matches no row and is refused, whatever the code above it did.

The clock of rate buckets and budget windows is the database's (clock_timestamp()), one clock for every
host: the hosts' monotonic clocks are unrelated, and their wall clocks may disagree by more than a bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Iterable, Sequence

from agent.budgets import Charge, Overspent, bucket_seconds
from agent.custody.store import Postgres, StoreUnavailable
from agent.limits import Budget
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
LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS notional_ledgers (
    scope TEXT NOT NULL,           -- "key:LABEL", "key:LABEL:symbol:SYM", "bot:NAME" (agent.guardrails)
    window_seconds INTEGER NOT NULL CHECK (window_seconds > 0),
    bucket BIGINT NOT NULL,        -- database epoch seconds // (window_seconds / 60)
    amount NUMERIC NOT NULL CHECK (amount > 0),   -- exact: what agent.budgets keeps as Decimal strings
    PRIMARY KEY (scope, window_seconds, bucket));
"""
# Advisory lock keys are 64-bit: a namespace prefix and hashtextextended keep nonces and buckets apart.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def _schema(db: Postgres, ddl: str) -> None:
    with db.tx() as cur:
        cur.execute(_LOCK, ("signing-agent schema",))  # concurrent first starts create the table once
        cur.execute(ddl)


def create_tables(dsn: str) -> None:
    """The nonce, rate-bucket and notional-ledger tables (`store init`), so that agents find them ready."""
    db = Postgres(dsn)
    try:
        _schema(db, NONCE_SCHEMA + BUCKET_SCHEMA + LEDGER_SCHEMA)
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


class PostgresLedgers:
    """agent.budgets.Ledgers' contract (`charge` all or none, `used`), for every host at once.

    The same windows as the file ledgers (60 buckets a window, agent.budgets), as rows of NUMERIC amounts:
    one transaction per charge locks every scope it touches (advisory locks in sorted order, so hosts
    charging overlapping scopes never wait on each other in a cycle), reads their buckets, checks every
    window of every scope, and only then adds to each and forgets buckets that left their window. Two hosts
    can therefore not both spend the last of a budget. The time is the database's: the NOW callers pass
    (their wall clock) is not used, so hosts with skewed clocks still share one set of windows.

    A database that does not answer is StoreUnavailable: the guardrails refuse the order (fail closed).
    """

    def __init__(self, dsn: str) -> None:
        self._db = Postgres(dsn)
        _schema(self._db, LEDGER_SCHEMA)

    def charge(self, charges: Sequence[Charge], now: float) -> Overspent | None:
        """Add every charge, or none: the first window any of them would overspend, or None once all are
        written (committed). NOW is ignored: the database's clock decides the windows."""
        charges = [c for c in charges if c.budgets and c.notional > 0]
        if not charges:
            return None
        scopes = sorted({c.scope for c in charges})
        with self._db.tx() as cur:
            for scope in scopes:
                cur.execute(_LOCK, ("budget:" + scope,))
            clock, ledgers = self._read(cur, scopes)
            for c in charges:  # every check before any write
                for budget in c.budgets:
                    used = _window_sum(ledgers.get((c.scope, budget.seconds), {}), budget, clock)
                    if used + c.notional > budget.limit:
                        return Overspent(c, budget, used)  # nothing written: the transaction commits no change
            adds: dict[tuple[str, int, int], Decimal] = {}
            for c in charges:
                for budget in c.budgets:
                    key = (c.scope, budget.seconds, int(clock // bucket_seconds(budget)))
                    adds[key] = adds.get(key, Decimal(0)) + c.notional
            old = sorted({(c.scope, b.seconds, _oldest(b, clock)) for c in charges for b in c.budgets})
            new = sorted(adds.items())
            # One statement (a round trip counts on the hot path): buckets that left their window are forgotten,
            # as the file ledger does on each write, and the current buckets are added to. The two touch
            # different rows (the current bucket is never older than the oldest one kept).
            cur.execute(
                "WITH gone AS (DELETE FROM notional_ledgers n USING unnest(%s::text[], %s::int[], %s::bigint[]) "
                "AS o(scope, window_seconds, oldest) WHERE n.scope = o.scope AND n.window_seconds = o.window_seconds "
                "AND n.bucket < o.oldest) "
                "INSERT INTO notional_ledgers (scope, window_seconds, bucket, amount) "
                "SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::numeric[]) "
                "ON CONFLICT (scope, window_seconds, bucket) DO UPDATE "
                "SET amount = notional_ledgers.amount + EXCLUDED.amount",
                ([o[0] for o in old], [o[1] for o in old], [o[2] for o in old],
                 [k[0] for k, _ in new], [k[1] for k, _ in new], [k[2] for k, _ in new], [a for _, a in new]))
        return None

    def used(self, scope: str, budgets: Iterable[Budget], now: float) -> dict[str, Decimal]:
        """What each window of SCOPE has used, by the database's clock (for `status` and tests)."""
        with self._db.tx() as cur:
            clock, ledgers = self._read(cur, [scope])
        return {b.window: _window_sum(ledgers.get((scope, b.seconds), {}), b, clock) for b in budgets}

    @staticmethod
    def _read(cur: Any, scopes: list[str]) -> tuple[Decimal, dict[tuple[str, int], dict[int, Decimal]]]:
        """(the database's clock in epoch seconds, {(scope, window seconds): {bucket: amount}})."""
        # The clock and the rows in one round trip: the outer join keeps the clock when no row exists yet.
        cur.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::numeric, n.scope, n.window_seconds, n.bucket, "
                    "n.amount FROM (SELECT 1) AS one LEFT JOIN notional_ledgers n ON n.scope = ANY(%s)", (scopes,))
        rows = cur.fetchall()
        clock = rows[0][0]
        ledgers: dict[tuple[str, int], dict[int, Decimal]] = {}
        for _, scope, seconds, bucket, amount in rows:
            if scope is not None:
                ledgers.setdefault((scope, seconds), {})[bucket] = amount
        return Decimal(clock), ledgers

    def close(self) -> None:
        self._db.close()


def _oldest(budget: Budget, clock: Decimal) -> int:
    """The oldest bucket still overlapping BUDGET's window ending at CLOCK (agent.budgets' rule)."""
    return int((clock - budget.seconds) // bucket_seconds(budget))


def _window_sum(buckets: dict[int, Decimal], budget: Budget, clock: Decimal) -> Decimal:
    oldest = _oldest(budget, clock)
    return sum((amount for bucket, amount in buckets.items() if bucket >= oldest), Decimal(0))


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
