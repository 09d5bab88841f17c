"""The audit of several hosts in PostgreSQL: each host's chain shipped to the shared database, and one
verification of them all.

Each host keeps writing its own hash-chained file (agent.audit): a decision is audited there before it
is answered, whether or not the database answers, so the database is never on the signing path. A
shipper thread copies the file's complete lines to the `audit_lines` table every SHIP_SECONDS, in file
order, one transaction per batch. A line is identified by (host, its SHA-256), which is what the next
line's `prev` names: shipping again (a restart reads the file from its start; a second worker of the
same host ships the same file) inserts nothing twice, and the rows of one host read back in `id` order
are its chain, across rotations (the closing `audit.rotate` record is shipped before the new file's
`audit.continue`). One process per host ships at a time (a session advisory lock per host; another
takes over when that process dies).

`signing-agent audit verify --all` reads every host's rows and runs the file verifier over each chain:
modified, inserted, deleted, reordered lines are reported per host, with each host's head hash and the
time of its last shipped line (a host that stopped shipping shows an old one).

What this gives and does not: lines reach the database within a second or so of being written; a host
whose disk is lost loses at most that last second. The database adds a copy an attacker on one host
cannot rewrite without the database's write access; it does not add a key to the chain (see agent.audit,
Limits). HOST names must be unique per host: two hosts under one name interleave two chains, which
verify reports as broken.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.audit import _sha, verify
from agent.custody.store import Postgres, StoreUnavailable
from agent.logs import get_logger

SHIP_SECONDS = 0.5
BATCH_LINES = 2000  # one transaction's worth; a long backlog ships over several ticks
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_lines (
    id BIGSERIAL PRIMARY KEY,         -- shipping order: a host's rows by id are its chain
    host TEXT NOT NULL,
    sha TEXT NOT NULL,                -- SHA-256 of the line's bytes, what the next line's prev names
    line BYTEA NOT NULL,              -- the line as written, without its newline
    shipped TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (host, sha));
"""
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"


def _schema(db: Postgres) -> None:
    with db.tx() as cur:
        cur.execute(_LOCK, ("signing-agent schema",))
        cur.execute(SCHEMA)


class AuditShipper:
    """Copies PATH's complete lines to the database as HOST's chain, every SHIP_SECONDS, in a thread."""

    def __init__(self, path: Path, dsn: str, host: str) -> None:
        self._path, self._host = path, host
        self._db = Postgres(dsn)
        self._fd: int | None = None
        self._offset = 0
        self._partial = b""
        self._retired: list[int] = []  # rotated files read to their end, closed once their lines are in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-ship", daemon=True)
        self._up = True
        self._schema_done = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.ship_once()  # what the last requests wrote, if the database answers
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._db.close()

    def _run(self) -> None:
        while not self._stop.wait(SHIP_SECONDS):
            self.ship_once()

    def ship_once(self) -> int:
        """Ship what is new; the number of lines inserted (0 when the database does not answer)."""
        try:
            if not self._schema_done:
                _schema(self._db)
                self._schema_done = True
            shipped = self._ship()
        except StoreUnavailable as exc:
            if self._up:
                get_logger().error("audit.ship", up=False, reason=str(exc))
            self._up = False
            return 0
        if not self._up:
            get_logger().info("audit.ship", up=True)
        self._up = True
        return shipped

    def _lines(self) -> list[bytes]:
        """The complete lines written since the last call, following a rotation (agent.audit.rotate): the
        old file is read to its end before the new one is opened, so the chain is shipped in order."""
        lines: list[bytes] = []
        while True:
            if self._fd is None:
                try:
                    self._fd = os.open(self._path, os.O_RDONLY)
                except FileNotFoundError:
                    return lines
                self._offset, self._partial = 0, b""
            data = os.pread(self._fd, 1 << 20, self._offset)
            while data:
                self._offset += len(data)
                *complete, self._partial = (self._partial + data).split(b"\n")
                lines.extend(line for line in complete if line)
                if len(lines) >= BATCH_LINES:
                    return lines
                data = os.pread(self._fd, 1 << 20, self._offset)
            try:
                replaced = os.stat(self._path).st_ino != os.fstat(self._fd).st_ino
            except FileNotFoundError:
                replaced = False  # between rotate's rename and the new file: look again next tick
            if not replaced:
                return lines
            self._retired.append(self._fd)  # read to its end: the next file continues the chain
            self._fd = None

    def _ship(self) -> int:
        # Where the file was read to, kept until the lines are committed: a failed insert reads them again.
        before = (self._fd, self._offset, self._partial)
        try:
            with self._db.tx() as cur:
                # One shipper per host: the others wait their turn (a lock held for the transaction).
                cur.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", ("audit-ship:" + self._host,))
                if not cur.fetchone()[0]:
                    return 0
                lines = self._lines()
                if lines:
                    cur.executemany(
                        "INSERT INTO audit_lines (host, sha, line) VALUES (%s, %s, %s) "
                        "ON CONFLICT (host, sha) DO NOTHING",
                        [(self._host, _sha(line), line) for line in lines])
        except BaseException:
            if self._fd is not None and self._fd != before[0]:
                os.close(self._fd)  # the next file, opened in this attempt
            for fd in self._retired:
                if fd != before[0]:
                    os.close(fd)
            self._retired.clear()
            self._fd, self._offset, self._partial = before
            raise
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()
        return len(lines)


@dataclass
class HostReport:
    host: str
    lines: int
    head: str
    last_shipped: str
    problems: list[str]


def verify_all(dsn: str) -> list[HostReport]:
    """Every host's shipped chain, verified as agent.audit.verify verifies a file."""
    db = Postgres(dsn)
    try:
        _schema(db)
        with db.tx() as cur:
            cur.execute("SELECT DISTINCT host FROM audit_lines ORDER BY host")
            hosts = [row[0] for row in cur.fetchall()]
        return [_verify_host(db, host) for host in hosts]
    finally:
        db.close()


def _verify_host(db: Postgres, host: str) -> HostReport:
    with db.tx() as cur:
        cur.execute("SELECT line, shipped FROM audit_lines WHERE host = %s ORDER BY id", (host,))
        rows: list[Any] = cur.fetchall()
    with tempfile.TemporaryDirectory(prefix="audit-verify-") as tmp:
        path = Path(tmp) / "chain.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            for line, _ in rows:
                f.write(bytes(line) + b"\n")
        report = verify(path)
    return HostReport(host=host, lines=len(rows), head=_sha(bytes(rows[-1][0])) if rows else "",
                      last_shipped=rows[-1][1].isoformat(timespec="seconds") if rows else "",
                      problems=[f"line {p.line}: {p.kind}: {p.detail}" for p in report.problems])


def verify_all_main(dsn: str, out: TextIO) -> int:
    """`audit verify --all`: 0 when every host's chain verifies, 1 otherwise."""
    try:
        reports = verify_all(dsn)
    except StoreUnavailable as exc:
        out.write(f"cannot read the shared audit: {exc}\n")
        return 2
    if not reports:
        out.write("no host has shipped audit lines to this database yet\n")
        return 1
    for r in reports:
        state = "OK" if not r.problems else f"BROKEN ({len(r.problems)} problems)"
        out.write(f"{r.host}: {state}, {r.lines} lines, head {r.head}, last shipped {r.last_shipped}\n")
        for problem in r.problems:
            out.write(f"  {problem}\n")
    return 0 if all(not r.problems for r in reports) else 1
