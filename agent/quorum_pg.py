"""Published policy bundles in the PostgreSQL database the agent hosts share ([quorum] with [store]
backend = "postgres"): one chain for every host.

The database only carries bundles; it is not trusted to say which one is in force. Every agent reads
every row and judges each bundle itself (agent.quorum.Chain) against the first operator set of its own
config, from its own recorded head (quorum-head.json in its state directory): a row whose version,
digest or previous column lies, an older bundle put back, a forged or duplicated signature, or a row
deleted or replaced, is refused by each host exactly as a file in a directory would be. The columns
beside the bundle's text are for people and for the constraints below; agents read only the text.

`policy publish` inserts a bundle in one transaction that takes an advisory lock, reads the newest row
and inserts only when the bundle's `previous` is that row's digest (computed from its text) and its
version the next one; UNIQUE(version) and UNIQUE(digest) are the second guard, so two operators
publishing at once cannot both land a bundle for one version (a fork). A trigger makes the table
append-only for every role but one that disables triggers (its owner, a superuser): a DB-level attacker
can still delete or rewrite rows, and the hosts refuse what that produces.

Each agent reads the table on a thread of its own every POLL_SECONDS (a change counter first: one
small query while nothing changed), so a published bundle is in force on every host within a second,
and a database that hangs never holds up the policy watch. While the database has not answered for
STALE_SECONDS every caller is refused UNAVAILABLE: a published revocation could be missed (the same
bound as the key store's and the bot registry's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent.custody.store import Postgres, StoreUnavailable
from agent.custody.wrapped import STORE_POLL_SECONDS, STORE_STALE_SECONDS
from agent.quorum import GENESIS, MAX_BUNDLE_BYTES, Bundle, BundleDir, QuorumError
from agent.custody.store import _first_line
from agent.shared_state import DatabaseWatch, _schema

POLL_SECONDS = STORE_POLL_SECONDS
STALE_SECONDS = STORE_STALE_SECONDS

SCHEMA = """
CREATE TABLE IF NOT EXISTS quorum_bundles (
    id BIGSERIAL PRIMARY KEY,
    version INTEGER NOT NULL CONSTRAINT quorum_bundles_version_unique UNIQUE CHECK (version >= 1),
    digest TEXT NOT NULL CONSTRAINT quorum_bundles_digest_unique UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    previous TEXT NOT NULL CHECK (previous ~ '^[0-9a-f]{64}$'),
    bundle TEXT NOT NULL,                 -- the bundle as `policy publish` checked it: what agents judge
    published_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_by TEXT NOT NULL);          -- the operating-system user who ran `policy publish`
-- Published is for good: a bundle is superseded by the next one, never edited or removed.
CREATE OR REPLACE FUNCTION quorum_bundles_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'quorum_bundles is append-only: a published bundle is superseded by the next one '
                    '(signing-agent policy propose), never edited or removed' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER quorum_bundles_append_only BEFORE UPDATE OR DELETE ON quorum_bundles
    FOR EACH ROW EXECUTE FUNCTION quorum_bundles_append_only();
CREATE OR REPLACE TRIGGER quorum_bundles_no_truncate BEFORE TRUNCATE ON quorum_bundles
    FOR EACH STATEMENT EXECUTE FUNCTION quorum_bundles_append_only();
"""
_PUBLISH_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('signing-agent quorum bundles', 0))"
# What changed in the table: an insert, a delete (count, max id) or a row rewritten (its xmin) all show.
_FINGERPRINT = ("SELECT count(*), COALESCE(max(id), 0), "
                "md5(COALESCE(string_agg(id::text || ':' || xmin::text, ',' ORDER BY id), '')) FROM quorum_bundles")
WHERE = "the quorum_bundles table of the PostgreSQL database ([store] dsn)"


def create_tables(db: Postgres) -> None:
    """The table and its trigger, once: an agent whose role may not create them (they were made by
    `store init` as another role) finds them ready and runs no DDL. QuorumError with the server's
    reason when it refuses."""
    import psycopg

    try:
        with db.tx() as cur:
            cur.execute("SELECT to_regclass('quorum_bundles') IS NOT NULL")
            if cur.fetchone()[0]:
                return
        _schema(db, SCHEMA)
    except psycopg.Error as exc:
        raise QuorumError(f"the database refused to create the quorum_bundles table ({_first_line(exc)}): run "
                          "signing-agent store init as a role that may create tables, then let the agents' "
                          "role use it") from None


def _row_name(row_id: int) -> str:
    return f"quorum_bundles row {row_id}"


def _parse(row_id: int, text: str) -> Bundle | QuorumError:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BUNDLE_BYTES:
        return QuorumError(f"{_row_name(row_id)}: larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        return Bundle.from_json(text, source=_row_name(row_id))
    except QuorumError as exc:
        return exc


class PostgresBundles:
    """agent.quorum.BundleSource in PostgreSQL. Proposals stay files under PROPOSALS (operators sign
    them offline and pass them around); only published bundles live in the database.

    What `fingerprint` and `published` return is the last snapshot read (`refresh`): the CLI reads it
    once when it opens the table, an agent on a thread of its own (`watch`)."""

    def __init__(self, dsn: str, proposals: Path) -> None:
        self.where = WHERE
        self.proposals = proposals
        self._db = Postgres(dsn)
        self._snapshot: tuple[tuple, list[tuple[str, Bundle | QuorumError]]] = ((), [])
        started = time.monotonic()
        create_tables(self._db)  # StoreUnavailable: the agent does not start, the CLI says why
        self.refresh()
        self._watch = DatabaseWatch(self.refresh, name="quorum-bundles-watch", event="policy.bundles_store",
                                    poll=POLL_SECONDS, stale=STALE_SECONDS, answered=started)
        self._watching = False  # the CLI reads once; only a watching agent has a stale bound

    # -- reads --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the table again if it changed (StoreUnavailable when the database does not answer, or
        answers with an error: a table dropped or made unreadable is a source that says nothing)."""
        import psycopg

        try:
            with self._db.tx() as cur:
                cur.execute(_FINGERPRINT)
                count, top, rows_md5 = cur.fetchone()
                fingerprint = (int(count), int(top), rows_md5)
                if fingerprint == self._snapshot[0]:
                    return
                cur.execute("SELECT id, bundle FROM quorum_bundles ORDER BY id")
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{WHERE} cannot be read ({_first_line(exc)})") from None
        # One reference assignment: a reader sees the old snapshot or the new one, whole.
        self._snapshot = (fingerprint, [(_row_name(row_id), _parse(row_id, text)) for row_id, text in rows])

    def fingerprint(self) -> tuple:
        return self._snapshot[0]

    def published(self) -> list[tuple[str, Bundle | QuorumError]]:
        return self._snapshot[1]

    def unavailable(self) -> str | None:
        if not self._watching or not self._watch.stale():
            return None
        return (f"the policy bundle database has not answered for over {STALE_SECONDS:g} s, so no credential is "
                "trusted (a published revocation could be missed); retry with backoff: the agent recovers by "
                "itself when the database answers")

    # -- the agent's poll ---------------------------------------------------------------------

    def watch(self) -> None:
        """Read the table every POLL_SECONDS on a thread of its own, from now on (the agent). Read once
        first: the stale bound counts from now, not from the agent's first read, however long its start."""
        self._watch.poll()
        self._watching = True
        self._watch.start()

    def close(self) -> None:
        self._watch.stop()
        self._db.close()

    # -- `policy publish` -------------------------------------------------------------------------

    def publish(self, bundle: Bundle, *, by: str) -> str:
        """Insert BUNDLE as the next link of the table's chain, or raise QuorumError saying why not.
        The caller judged it against the chain as agents walk it; this checks, under the lock, that
        nobody published another bundle since (the newest row's text, not its columns, is compared)."""
        import psycopg

        try:
            with self._db.tx() as cur:
                cur.execute(_PUBLISH_LOCK)
                cur.execute("SELECT id, bundle FROM quorum_bundles ORDER BY version DESC, id DESC LIMIT 1")
                row = cur.fetchone()
                newest = _parse(*row) if row is not None else None
                if isinstance(newest, QuorumError):
                    raise QuorumError(f"the newest row of {WHERE} is not a bundle ({newest}); it was not "
                                      "published by `policy publish`: find out who wrote it before publishing")
                head_version, head_digest = (newest.version, newest.digest) if newest else (0, GENESIS)
                if bundle.body["previous"] != head_digest or bundle.version != head_version + 1:
                    raise QuorumError(
                        f"the database's newest bundle is v{head_version} ({head_digest[:16]}), and this one is "
                        f"v{bundle.version} written against {bundle.body['previous'][:16]}: another bundle was "
                        "published since, or the newest row was not published by `policy publish`. Nothing was "
                        "published; run signing-agent policy status, and propose again from the version in force")
                cur.execute("INSERT INTO quorum_bundles (version, digest, previous, bundle, published_by) "
                            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                            (bundle.version, bundle.digest, bundle.body["previous"], bundle.to_json(), by[:200]))
                row_id = cur.fetchone()[0]
        except psycopg.errors.UniqueViolation as exc:
            what = "digest" if exc.diag.constraint_name == "quorum_bundles_digest_unique" else "version"
            raise QuorumError(f"{WHERE} already holds a bundle with this {what}: it was published before, or "
                              "another row claims it; nothing was published (signing-agent policy status)") from None
        except psycopg.Error as exc:  # a role without INSERT, a table altered by hand: the server's reason
            raise QuorumError(f"the database refused the publication ({_first_line(exc)}); nothing was "
                              "published") from None
        return f"{WHERE}, {_row_name(row_id)}"


def open_bundles(config: Any) -> "BundleDir | PostgresBundles":
    """Where CONFIG's agents read published bundles: the database the hosts share when [store] backend is
    "postgres", else the [quorum] bundles directory. Raises QuorumError for a config that names both
    (published bundles left in the directory would be ignored), StoreUnavailable when the database does
    not answer."""
    quorum = config.quorum
    directory = BundleDir(quorum.bundles)
    if not config.bundles_in_database:
        return directory
    left = [name for name, _ in directory.published()]
    if left:
        raise QuorumError(
            f"{quorum.bundles} holds published bundles ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}), but "
            f"with [store] backend = \"postgres\" the agents read published bundles only from {WHERE}; the "
            "directory keeps only proposals/. Move those files out of it, or remove [store] backend = \"postgres\" "
            "to keep one host reading its directory")
    return PostgresBundles(config.store.dsn, directory.proposals)
