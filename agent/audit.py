"""Tamper-evident audit log: one JSON line per decision or operator action, hash-chained.

Each line is a JSON object with its keys in a fixed order::

    {"seq":7,"ts":"2025-11-21T20:01:02.123Z","event":"sign","label":"binance-main",...,"prev":"<hex>"}

`seq` counts lines from 1; `ts` is UTC with milliseconds; `prev` is the hex SHA-256
of the previous line's exact bytes (without its newline), 64 zeros on the first
line. A line's own hash is what the next line's `prev` holds, and `verify()`
checks the whole chain, naming the line where it breaks and how (modified,
deleted, inserted, reordered, malformed, truncated).

What goes in a line: only what the caller passes. Callers must pass labels,
exchange, method, the path WITHOUT its query, symbol, decision, rule, latency,
bot name and the like; never a secret, passphrase, PIN, signature, signed query
or request body (a signed query carries a signature). This module cannot tell
a secret from a label, so that rule is the caller's.

Writers. Several processes and threads may append to one file at once (agent
workers, the CLI recording operator actions). Each append takes an exclusive
`flock`, reads the chain head (the last line) from the end of the file, and
writes the whole line with one `os.write` on an O_APPEND descriptor. The head
read is skipped when the file is exactly as our own last append left it
(same device, inode and size under the lock). A deleted file is noticed at the
next append, a file moved away (log rotation) within a second (lines written in
that second go to the moved file, chained there), and the path is reopened: the
new file starts a new chain at seq 1.

Rotation. `rotate()` (`signing-agent audit rotate`) keeps one chain across files: under the
exclusive lock it appends a last record, `audit.rotate`, naming the file's new name
(PATH.<UTC time>, e.g. audit.jsonl.20261205T101300Z), gives the file that name, and replaces PATH
in one rename with a file whose first record, `audit.continue`, names the rotated file and chains
to the closing record (its prev, and seq + 1). A writer holding the old file sees the closing
record when it gets the lock and reopens PATH. `verify()` checks one file (a continuing file from
the hash its first record names); `verify_chain()` follows the `from` names back to the file that
starts the chain and reports a rotated file missing, swapped, cut or altered, and rotated files
the chain does not reach. A file moved away by other means (logrotate) is not linked: the new file
starts a new chain at seq 1, and nothing ties the two; so the audit log is never logrotate's.

Durability. No fsync per line: a SIGKILL loses nothing already written (the
page cache keeps it), but a power loss can lose the last lines. A lost tail
looks like a shorter, valid log, which `verify()` alone cannot tell from the
real thing; neither can it tell a deliberate cut at the end. Record the head
hash elsewhere (`verify_main` prints it; an operator copies it to a ticket,
another host, a printout) and verify with `expect_head=` to detect that.

Torn lines. A write cut short (a crash mid-write, a full disk) leaves a last
line without a newline. `verify()` reports it as "truncated"; the next append
first terminates it with a newline and chains to the hash of the torn bytes,
as they are, so the chain stays verifiable and the tear stays visible (it keeps
being reported, with the line number). The torn line counts as one seq.

Limits. The chain has no key: whoever can write the file can rewrite it from
some line on with freshly computed hashes, or append forged lines. What the
chain gives is that any edit of the past breaks it unless everything after
the edit is rewritten too, which a recorded head hash exposes. Without a
recorded head, edits of the LAST line itself cannot be detected when they keep
it a well-formed record. Keep the file 0600 (it is created so) and ship
recorded heads off the host.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO, TextIO

ZERO_HASH = "0" * 64
RESERVED_FIELDS = frozenset({"seq", "ts", "event", "prev", "hash"})
MAX_LINE = 64 * 1024  # bytes; an audit record is a few hundred, a bigger one is a caller's mistake
_TAIL_BLOCK = 4096
_SEQ_PREFIX = re.compile(rb'\{"seq":([1-9][0-9]{0,18}),')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIRST_KEYS = ["seq", "ts", "event"]
# Rotation (see rotate): the last record of a closed file, and the first of the file that continues it.
ROTATE_EVENT = "audit.rotate"
CONTINUE_EVENT = "audit.continue"
_CLOSING = re.compile(rb'\{"seq":[0-9]+,"ts":"[^"]*","event":"audit\.rotate",')
_ROTATED_SUFFIX = re.compile(r"\.[0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?")  # audit.jsonl.20261205T101300Z[-2]


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_second: tuple[int, str] = (-1, "")  # the formatted current second, reused within it


def _utc_now() -> str:
    global _second
    t = time.time()
    whole = int(t)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((t - whole) * 1000):03d}Z"


def _encode_body(event: str, fields: dict[str, object]) -> bytes:
    """`"event":...,<fields>` as canonical JSON bytes (no braces), or ValueError."""
    if not isinstance(event, str) or not event:
        raise ValueError("audit event must be a non-empty string")
    reserved = RESERVED_FIELDS & fields.keys()
    if reserved:
        raise ValueError(f"audit field name(s) {sorted(reserved)} are reserved by the log; rename them")
    try:
        text = _ENCODER.encode({"event": event, **fields})
        body = text.encode("utf-8")[1:-1]
    except (TypeError, ValueError) as e:  # UnicodeEncodeError (lone surrogate) is a ValueError
        # The message names the type or the problem, never the value.
        raise ValueError(f"audit fields must be JSON values (str, int, float, bool, None, lists): {e}") from None
    if len(body) > MAX_LINE - 200:
        raise ValueError(f"audit record too large ({len(body)} bytes, at most {MAX_LINE - 200}): log labels, not payloads")
    return body


def _lines_backwards(fd: int, size: int) -> Iterator[bytes]:
    """Lines of the file's first SIZE bytes, last first, without their newlines.

    The first item is what follows the last newline: b"" when the file ends with
    one, else the torn last line.
    """
    pos = size
    pending: list[bytes] = []  # pieces of the line being read, the last piece first
    while pos > 0:
        n = min(_TAIL_BLOCK, pos)
        pos -= n
        parts = os.pread(fd, n, pos).split(b"\n")
        for part in reversed(parts[1:]):
            pending.append(part)
            yield b"".join(reversed(pending))
            pending = []
        pending.append(parts[0])
    yield b"".join(reversed(pending))


def _read_head(fd: int, size: int) -> tuple[str, int, bool, bytes]:
    """(hash of the last line, seq of the last line, the last line is torn, the last line), read from the end."""
    if size == 0:
        return ZERO_HASH, 0, False, b""
    lines = _lines_backwards(fd, size)
    tail = next(lines)
    torn = tail != b""
    last = tail if torn else next(lines)
    # The torn line's own seq prefix is not trusted: it counts as the line before it + 1. Lines
    # whose seq does not parse (damaged) count as one each, so seq stays a line count.
    counted = 0
    for raw in chain([last], lines):
        m = None if (torn and counted == 0) else _SEQ_PREFIX.match(raw)
        if m:
            return _sha(last), int(m[1]) + counted, torn, last
        counted += 1
    return _sha(last), counted, torn, last


def read_head(path: Path) -> tuple[str, int]:
    """(hash of the last line, its seq) of the audit log at PATH, read from its end (not verified:
    `audit verify` checks the chain). An empty log: (ZERO_HASH, 0). FileNotFoundError if there is none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head, seq, _, _ = _read_head(fd, os.fstat(fd).st_size)
        return head, seq
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)  # one call unless the disk is full (a short write)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write to the audit log (disk full?)")
        view = view[n:]


_OPEN_LOGS: weakref.WeakSet[AuditLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log in list(_OPEN_LOGS):
        log._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


class AuditLog:
    """Appends hash-chained JSON lines to PATH; safe across threads and processes."""

    PATH_RECHECK = 1.0  # seconds between checks that PATH still names our file (see append)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._path = str(self.path)
        self._checked = time.monotonic()  # when PATH was last seen to name our open file
        self._lock = threading.Lock()  # threads of this process; flock covers other processes
        # (device, inode, size) of the file after our last append, with its head hash and seq.
        self._cache: tuple[tuple[int, int, int], str, int] | None = None
        self._fd: int | None = self._open()
        _OPEN_LOGS.add(self)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True)
            os.chmod(self.path.parent, 0o700)  # mkdir's mode is masked by the umask
        except FileExistsError:
            pass
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _forget_parent(self) -> None:
        # A forked child shares the parent's open file description, and flock locks belong to
        # the description: the two would not exclude each other. Reopen on the next append.
        self._lock = threading.Lock()
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._cache = None, None

    def append(self, event: str, /, **fields: object) -> None:
        """Write one record. ValueError for reserved names or non-JSON values (nothing written);
        OSError if the line cannot be written (a partial line is then terminated by the next append)."""
        self._append_bodies([_encode_body(event, fields)])

    def append_many(self, records: list[tuple[str, dict[str, object]]]) -> None:
        """Write several records (EVENT, FIELDS), each its own chained line, as one group: one lock,
        one head read at most, one write. A batch of decisions pays the file's cost once, not per
        line. ValueError if any record cannot be encoded (nothing written); OSError as `append`."""
        if records:
            self._append_bodies([_encode_body(event, fields) for event, fields in records])

    def _append_bodies(self, bodies: list[bytes]) -> None:
        with self._lock:
            for _ in range(5):
                if self._fd is None:
                    self._fd = self._open()
                fd = self._fd
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    st = os.fstat(fd)
                    replaced = self._path_replaced(st)
                    if not replaced:
                        replaced = not self._append_locked(fd, st, bodies)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if not replaced:
                    return
                os.close(fd)
                self._fd, self._cache = None, None
            raise OSError(errno.EAGAIN, f"audit log {self.path} keeps being replaced while appending")

    def _path_replaced(self, st: os.stat_result, now: bool = False) -> bool:
        # A deleted file is seen at once (fstat's link count); a moved one (rotation) within
        # PATH_RECHECK seconds: os.stat on every append would cost a fifth of its time.
        t = time.monotonic()
        if st.st_nlink and t - self._checked < self.PATH_RECHECK and not now:
            return False
        self._checked = t
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            return True
        return (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino)

    def _append_locked(self, fd: int, st: os.stat_result, bodies: list[bytes]) -> bool:
        """Append BODIES (each its own line, chained in order) under the lock, in one write; False
        (nothing written) when the file was closed by `rotate`."""
        key = (st.st_dev, st.st_ino, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            head, seq, torn = self._cache[1], self._cache[2], False
        else:
            head, seq, torn, last = _read_head(fd, st.st_size)
            # Closed by a rotation (which holds this lock until PATH names the new file): reopen PATH.
            # Only a cache miss can see one: the closing record changed the size.
            if not torn and _CLOSING.match(last) and self._path_replaced(st, now=True):
                return False
        ts = _utc_now().encode()  # one instant for the group: its lines are written together
        lines = [b"\n"] if torn else []
        for body in bodies:
            seq += 1
            line = b'{"seq":%d,"ts":"%s",%s,"prev":"%s"}' % (seq, ts, body, head.encode())
            head = _sha(line)
            lines.append(line + b"\n")
        data = b"".join(lines)
        self._cache = None  # until the write is known complete
        _write_all(fd, data)
        self._cache = ((st.st_dev, st.st_ino, st.st_size + len(data)), head, seq)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._cache = None, None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- verification ------------------------------------------------------------------------

KINDS = ("modified", "inserted", "deleted", "malformed", "truncated", "reordered", "unlinked")


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line number in the file as it is now
    kind: str  # one of KINDS
    detail: str


@dataclass
class VerifyReport:
    ok: bool
    lines: int
    head: str  # hash of the last line (ZERO_HASH for an empty log): record it to detect truncation
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _Entry:
    hash: str
    seq: int | None  # None: malformed or torn
    prev: str | None
    state: str  # "ok", "malformed" or "torn"
    reason: str = ""
    cut: bool = False  # malformed, but the start of a record: what a write cut short leaves


def _parse(raw: bytes) -> tuple[int, str] | str:
    """(seq, prev) of a well-formed record, or why it is not one."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "not JSON" if raw else "empty line"
    if not isinstance(obj, dict):
        return "not a JSON object"
    keys = list(obj)
    if len(keys) < 4 or keys[:3] != _FIRST_KEYS or keys[-1] != "prev":
        return "keys are not seq, ts, event, ..., prev"
    seq, prev = obj["seq"], obj["prev"]
    if type(seq) is not int or seq < 1:
        return "seq is not a positive integer"
    if not isinstance(obj["ts"], str) or not isinstance(obj["event"], str):
        return "ts or event is not a string"
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        return "prev is not a SHA-256 hex digest"
    return seq, prev


def _iter_lines(f: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """(line without newline, torn) for the file's first SIZE bytes."""
    remaining = size
    while remaining > 0:
        raw = f.readline(remaining)
        if not raw:
            return
        remaining -= len(raw)
        if raw.endswith(b"\n"):
            yield raw[:-1], False
        else:
            yield raw, True


def _entry(raw: bytes, torn: bool) -> _Entry:
    digest = _sha(raw)
    if torn:
        return _Entry(digest, None, None, "torn")
    parsed = _parse(raw)
    if isinstance(parsed, str):
        return _Entry(digest, None, None, "malformed", parsed, cut=parsed == "not JSON" and raw.startswith(b'{"seq":'))
    return _Entry(digest, parsed[0], parsed[1], "ok")


def _check_head(expect_head: str | None) -> str | None:
    if expect_head is None:
        return None
    expect_head = expect_head.strip().lower()
    if not _HEX64.fullmatch(expect_head):
        raise ValueError("the recorded head must be a SHA-256 hex digest (64 hex characters)")
    return expect_head


@dataclass
class _Scan:
    """One file, checked on its own: its report (without the recorded-head check) and what links it to
    the files before and after it."""

    report: VerifyReport
    head_seen: bool  # the recorded head is the hash of a line of this file (or the one it continues)
    start: tuple[str, int]  # (hash, seq) the first line continues: (ZERO_HASH, 0), or a rotated file's last
    continues: str | None  # the first line is an audit.continue record: the rotated file it names
    closing: tuple[str, int] | None  # the last line is an audit.rotate record: (renamed_to, seq)


def _record(raw: bytes, event: str, name_field: str) -> tuple[str, int, str] | None:
    """(the NAME_FIELD value, seq, prev) when RAW is a well-formed EVENT record naming a file, else None."""
    if isinstance(_parse(raw), str):
        return None
    obj = json.loads(raw)
    name = obj.get(name_field)
    if obj["event"] != event or not isinstance(name, str):
        return None
    return name, obj["seq"], obj["prev"]


def _scan(path: Path, expect_head: str | None) -> _Scan:
    with open(path, "rb") as f:
        # Appends write whole lines under an exclusive lock: the size seen under a shared
        # lock ends on a line boundary, and that prefix never changes afterwards.
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            size = os.fstat(f.fileno()).st_size
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        first, last, last_torn = None, b"", False
        for raw, torn in _iter_lines(f, min(size, MAX_LINE + 1)):
            first = None if torn else _record(raw, CONTINUE_EVENT, "from")
            break
        # A file that continues a rotated one starts from that file's last line, not from nothing.
        start = (first[2], first[1] - 1) if first else (ZERO_HASH, 0)
        f.seek(0)
        # Fast path, in constant memory: a clean chain.
        (head, seq), n, clean = start, 0, True
        head_seen = expect_head is None or expect_head in (ZERO_HASH, start[0])
        for raw, torn in _iter_lines(f, size):
            n += 1
            last, last_torn = raw, torn
            e = _entry(raw, torn)
            if e.state != "ok" or e.prev != head or e.seq != seq + 1:
                clean = False
                break
            head, seq = e.hash, e.seq
            head_seen = head_seen or head == expect_head
        if clean:
            report = VerifyReport(ok=True, lines=n, head=head)
        else:
            f.seek(0)
            entries = []
            for raw, torn in _iter_lines(f, size):
                entries.append(_entry(raw, torn))
                last, last_torn = raw, torn
            problems = _analyse(entries, start)
            report = VerifyReport(ok=not problems, lines=len(entries), head=entries[-1].hash, problems=problems)
            head_seen = head_seen or any(e.hash == expect_head for e in entries)
    closing = None if last_torn else _record(last, ROTATE_EVENT, "renamed_to")
    return _Scan(report, head_seen, start, first[0] if first else None, closing[:2] if closing else None)


def _head_missing(lines: int, expect_head: str) -> Problem:
    """7. Truncation at the end: the recorded head must still be the hash of a line of the log."""
    return Problem(lines, "truncated", f"truncated: head {expect_head} not found: lines were removed from the end, "
                   "or the line with that hash was altered")


def verify(path: Path, expect_head: str | None = None) -> VerifyReport:
    """Check the chain of the audit log at PATH, that file alone. OSError if it cannot be read.

    EXPECT_HEAD: a head hash recorded earlier; it must still be a line of the chain
    (the log may have grown since), else the log was cut or that line altered.
    A file that starts with an audit.continue record (see rotate) is checked from the
    hash and seq that record continues; verify_chain also checks the files before it.
    """
    expect_head = _check_head(expect_head)
    scan = _scan(path, expect_head)
    report = scan.report
    if not scan.head_seen:
        report.problems = sorted(set(report.problems) | {_head_missing(report.lines, expect_head)},
                                 key=lambda p: (p.line, p.kind))
        report.ok = False
    return report


def _analyse(entries: list[_Entry], start: tuple[str, int] = (ZERO_HASH, 0)) -> list[Problem]:
    """Find and explain every break of the chain, pass by pass (see _PASSES); each pass reports what it
    recognises and marks the links it explains, so that later, more general passes skip them."""
    chain = _Chain(entries, start)
    for check in _PASSES:
        check(chain)
    return sorted(set(chain.problems), key=lambda p: (p.line, p.kind))


class _Chain:
    """The lines under analysis and what the passes have found so far. Lines are 1-based; index 0 is
    the virtual line before the first, whose hash is ZERO_HASH (or, in a file that continues a rotated
    one, the hash of that file's last line)."""

    def __init__(self, entries: list[_Entry], start: tuple[str, int]) -> None:
        self.n = len(entries)
        self.e: list[_Entry] = [_Entry(start[0], start[1], None, "ok"), *entries]  # e[0]: never read as a line
        self.hashes = [start[0]] + [x.hash for x in entries]
        self.where: dict[str, list[int]] = {}  # hash -> the lines that have it
        for i, h in enumerate(self.hashes):
            self.where.setdefault(h, []).append(i)
        self.problems: list[Problem] = []
        self.reported: set[int] = set()
        self.explained: set[int] = set()  # j: the link from line j-1 to line j is accounted for
        _mark_terminated_tears(self)
        self.known = _expected_seqs(self)
        self.breaks = [j for j in range(1, self.n + 1) if self.is_break(j)]

    def report(self, line: int, kind: str, detail: str) -> None:
        self.problems.append(Problem(line, kind, detail))
        self.reported.add(line)

    def is_break(self, j: int) -> bool:
        """Line j does not continue line j-1: malformed, or its prev is not line j-1's hash."""
        x = self.e[j]
        return x.state == "malformed" or (x.state == "ok" and x.prev != self.hashes[j - 1])

    def target(self, j: int) -> int | None:
        """The line whose hash line j names as prev: the nearest before it, else after it."""
        found = [i for i in self.where.get(self.e[j].prev or "", []) if i != j]
        before = [i for i in found if i < j]
        after = [i for i in found if i > j]
        return max(before) if before else (min(after) if after else None)

    def seq_of(self, j: int) -> str:
        return str(self.e[j].seq) if self.e[j].seq is not None else "?"


def _mark_terminated_tears(c: _Chain) -> None:
    """The start of a record that the next line chains to was written that way: a torn write that a
    later append terminated. It keeps being reported, but it is not a break. (Other malformed lines
    that the next line chains to were damaged before it was written: reported as malformed.)"""
    for j in range(1, c.n):
        if c.e[j].cut and c.e[j + 1].state == "ok" and c.e[j + 1].prev == c.hashes[j]:
            c.e[j].state = "torn"


def _expected_seqs(c: _Chain) -> list[int | None]:
    """The seq each line should have after the one before it (torn lines count as one); None where
    it cannot be known (after a malformed line)."""
    known: list[int | None] = [c.e[0].seq] * (c.n + 1)
    for j in range(1, c.n + 1):
        x = c.e[j]
        if x.state == "ok":
            known[j] = x.seq
        else:
            known[j] = known[j - 1] + 1 if x.state == "torn" and known[j - 1] is not None else None
    return known


def _report_damaged_lines(c: _Chain) -> None:
    """1. Torn lines (truncated) and lines that are not records (malformed). A malformed line explains
    its own link, and the next line's too when that line chained to the malformed line's original bytes."""
    for j in range(1, c.n + 1):
        x = c.e[j]
        if x.state == "torn":
            if j == c.n:
                c.report(j, "truncated", f"line {j} is incomplete (no newline at the end): a write was "
                         "interrupted (crash, full disk) or the file was cut")
            else:
                c.report(j, "truncated", f"line {j} is incomplete: a write was interrupted (crash, full disk); "
                         "later lines chain over it")
        elif x.state == "malformed":
            c.report(j, "malformed", f"line {j} is not a valid audit record ({x.reason})")
            c.explained.add(j)
            if j < c.n and c.is_break(j + 1) and c.e[j + 1].state == "ok" and c.target(j + 1) in (None, j - 1):
                c.explained.add(j + 1)  # the next line chained to this line's original bytes


def _report_copies(c: _Chain) -> None:
    """2. Exact copies of a line (inserted): the copy the chain runs through is the original."""
    for i0, h in enumerate(c.hashes):
        copies = c.where[h]
        if i0 == 0 or len(copies) < 2 or copies[0] != i0:
            continue
        original = next((i for i in copies if not c.is_break(i)), copies[0])
        for i in copies:
            if i != original:
                c.report(i, "inserted", f"line {i} is a copy of line {original}")
                c.explained.add(i)


def _report_reordered(c: _Chain) -> None:
    """3. Lines out of order: a line names as prev a line that comes after it."""
    for j in c.breaks:
        if j in c.explained or c.e[j].state != "ok":
            continue
        t = c.target(j)
        if t is not None and t > j:
            c.report(j, "reordered", f"lines {j}-{t} are out of order: line {j} (seq {c.seq_of(j)}) "
                     f"continues line {t} (seq {c.seq_of(t)}), which comes after it")
            c.explained.update(range(j, t + 2))


def _report_inserted(c: _Chain) -> None:
    """4. Inserted lines: a line names as prev a line further back than the one before it. Either that
    line is a fork (the chain skips it), or the lines between its prev and it were inserted."""
    for j in c.breaks:
        if j in c.explained or c.e[j].state != "ok":
            continue
        t = c.target(j)
        if t is not None and t < j - 1 and j < c.n and c.e[j + 1].prev == c.hashes[j - 1]:
            # The chain runs t, ..., j-1, j+1: line j is a fork from line t, not the lines before it.
            c.report(j, "inserted", f"line {j} (seq {c.seq_of(j)}) is not part of the chain: it names line {t} "
                     f"as prev, and line {j + 1} continues line {j - 1}")
            c.explained.update((j, j + 1))
        elif t is not None and t < j - 1:
            start = "the start of the log" if t == 0 else f"line {t}"
            for i in range(t + 1, j):
                if i not in c.reported:
                    c.report(i, "inserted", f"line {i} (seq {c.seq_of(i)}) is not part of the chain: "
                             f"line {j} continues {start}")
            c.explained.update(range(t + 1, j + 1))


def _report_unknown_prev(c: _Chain) -> None:
    """5. The breaks left, whose prev names no line in the file: a line was altered (modified) or lines
    were removed (deleted), told apart by seq."""
    for j in c.breaks:
        if j in c.explained:
            continue
        c.explained.add(j)
        e, known = c.e, c.known
        seq, before = e[j].seq, known[j - 1]
        # (a) line j-1's seq does not fit between its neighbours, which fit each other: it was edited.
        if (j >= 2 and e[j - 1].state == "ok" and known[j - 2] is not None and seq == known[j - 2] + 2
                and e[j - 1].seq != known[j - 2] + 1):
            c.report(j - 1, "modified", f"line {j - 1} was altered: seq {e[j - 1].seq} should be "
                     f"{known[j - 2] + 1}, and line {j} no longer chains to it")
        # (b) a gap in seq: lines were removed.
        elif before is not None and seq > before + 1:
            missing = seq - before - 1
            span = f"seq {before + 1}" if missing == 1 else f"seq {before + 1}-{seq - 1}"
            where = "at the start of the log" if j == 1 else f"between line {j - 1} and line {j}"
            c.report(j, "deleted", f"{missing} line(s) missing {where} ({span})")
        # (c) seq going back with an unknown prev: a line that was never part of the chain.
        elif before is not None and seq <= before:
            c.report(j, "inserted", f"line {j} (seq {seq}) is not part of the chain: it names an unknown "
                     f"prev and its seq does not follow {before}")
        # (d) the next link is broken too: line j itself changed (its prev, and so its hash).
        elif (j < c.n and c.is_break(j + 1) and j + 1 not in c.explained and e[j + 1].state == "ok"
              and c.target(j + 1) is None):
            c.report(j, "modified", f"line {j} (seq {seq}) was altered: its prev does not match line {j - 1} "
                     f"and line {j + 1} no longer chains to it")
            c.explained.add(j + 1)
        # (e) line j-1's bytes changed: its hash no longer matches what line j recorded.
        elif j >= 2:
            c.report(j - 1, "modified", f"line {j - 1} (seq {c.seq_of(j - 1)}) was altered: its hash no longer "
                     f"matches the prev recorded by line {j}")
        else:
            c.report(j, "modified", "line 1 was altered: its prev is not the start of a chain")


def _report_seq_edits(c: _Chain) -> None:
    """6. A seq that does not follow on an intact link: the last line's seq edited, or a forged line."""
    for j in range(1, c.n + 1):
        x = c.e[j]
        if (x.state == "ok" and not c.is_break(j) and j not in c.reported and j - 1 not in c.reported
                and c.known[j - 1] is not None and x.seq != c.known[j - 1] + 1):
            c.report(j, "modified", f"line {j} was altered: seq {x.seq} does not follow {c.known[j - 1]}")


# In this order: each pass skips what an earlier, more specific one explained.
_PASSES = (_report_damaged_lines, _report_copies, _report_reordered, _report_inserted, _report_unknown_prev,
           _report_seq_edits)


# -- rotation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    rotated: Path  # the closed file's new name
    lines: int  # its seq at the closing record (the chain's line count so far)
    head: str  # the hash of its closing record: what the new file's first line names as prev


def _rotated_name(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    candidate, n = path.with_name(f"{path.name}.{stamp}"), 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}.{stamp}-{n}")
    return candidate


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate(path: Path, *, min_size: int = 0, now: float | None = None, **fields: object) -> Rotation | None:
    """Close the audit log at PATH and start a new one that continues its chain. None (nothing done)
    when the log is smaller than MIN_SIZE bytes. FileNotFoundError when there is no log.

    Under the log's exclusive lock (writers wait): the last record, audit.rotate, names the file's new
    name, PATH.<UTC time> (FIELDS, e.g. operator=, go in it too); the file gets that name; and PATH is
    replaced in one rename by a file whose first record, audit.continue, names the rotated file and
    chains to the closing record (prev = its hash, seq = its seq + 1). Writers holding the old file see
    the closing record when they get the lock and reopen PATH. `verify_chain` follows the files back.
    Rotated files are never renamed again: archive them whole, or `verify_chain` reports them missing.
    """
    path = Path(path)
    body = _encode_body(ROTATE_EVENT, {"renamed_to": "", **fields})  # checks FIELDS before anything changes
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            named = os.stat(path)
            if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
                continue  # rotated (or replaced) while we waited for the lock: take the new file
            if st.st_size < min_size:
                return None
            return _rotate_locked(path, fd, st, body, time.time() if now is None else now)
        finally:
            os.close(fd)  # also drops the lock
    raise OSError(errno.EAGAIN, f"audit log {path} keeps being replaced while rotating")


def _rotate_locked(path: Path, fd: int, st: os.stat_result, body: bytes, now: float) -> Rotation:
    head, seq, torn, _ = _read_head(fd, st.st_size)
    rotated = _rotated_name(path, now)
    name = _ENCODER.encode(rotated.name).encode()
    body = body.replace(b'"renamed_to":""', b'"renamed_to":' + name, 1)
    ts = _utc_now().encode()
    closing = b'{"seq":%d,"ts":"%s",%s,"prev":"%s"}' % (seq + 1, ts, body, head.encode())
    first = b'{"seq":%d,"ts":"%s","event":"%s","from":%s,"prev":"%s"}' % (
        seq + 2, ts, CONTINUE_EVENT.encode(), name, _sha(closing).encode())
    # 1. The new file, complete, under a temporary name.
    tmp = path.with_name(f".{path.name}.rotate-{os.getpid()}")
    new = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(new, first + b"\n")
        os.fsync(new)
    finally:
        os.close(new)
    try:
        # 2. The rotated name, a second link to the live file (refuses to replace anything).
        os.link(path, rotated)
        try:
            # 3. The closing record. Should it fail (disk full), PATH is still the only live file.
            _write_all(fd, (b"\n" if torn else b"") + closing + b"\n")
            os.fsync(fd)
        except BaseException:
            os.unlink(rotated)
            raise
        # 4. PATH becomes the new file, atomically; writers waiting on our lock reopen it.
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return Rotation(rotated=rotated, lines=seq + 1, head=_sha(closing))


# -- following rotated files -------------------------------------------------------------


@dataclass
class ChainReport:
    ok: bool
    files: list[tuple[Path, VerifyReport]]  # the files the chain runs through, oldest first
    problems: list[tuple[Path, Problem]]  # each with the file it is in (line 0: the file as a whole)
    head: str  # the live file's head

    @property
    def lines(self) -> int:
        return sum(r.lines for _, r in self.files)


def verify_chain(path: Path, expect_head: str | None = None) -> ChainReport:
    """Check the audit log at PATH and the rotated files it continues, following each file's first
    record (audit.continue) back to a file that starts the chain. Besides each file's own breaks:
    a rotated file that is missing (deleted), that holds another file's lines (swapped or renamed:
    reordered), that does not end with the closing record its successor chains to (cut: truncated, or
    altered: modified), and rotated files of PATH that the chain does not reach (unlinked).
    EXPECT_HEAD may be the hash of a line in any of the files. OSError if PATH cannot be read."""
    expect_head = _check_head(expect_head)
    path = Path(path)
    scans: list[tuple[Path, _Scan]] = [(path, _scan(path, expect_head))]
    problems: list[tuple[Path, Problem]] = []
    while scans[-1][1].continues is not None:
        cur, scan = scans[-1]
        name = scan.continues
        here = f"line 1 of {cur.name} continues {name!r}"
        if not name.startswith(path.name) or not _ROTATED_SUFFIX.fullmatch(name[len(path.name):]):
            problems.append((cur, Problem(1, "modified", f"{here}, which is not a rotated file of {path.name}")))
            break
        prev = cur.with_name(name)
        if any(prev == p for p, _ in scans):
            problems.append((cur, Problem(1, "reordered", f"{here}, which comes after it: the files loop")))
            break
        try:
            before = _scan(prev, expect_head)
        except FileNotFoundError:
            problems.append((cur, Problem(1, "deleted", f"{here}, which is missing: a rotated file was deleted "
                                          "or moved away")))
            break
        lines, closing = before.report.lines, before.closing
        if closing is None:
            problems.append((prev, Problem(lines, "truncated", f"{name} does not end with its rotation record "
                                           f"(which {cur.name} continues): lines were cut from its end")))
        elif closing[0] != name:
            problems.append((prev, Problem(0, "reordered", f"{name} holds the lines of the file rotated as "
                                           f"{closing[0]!r}: rotated files were swapped or renamed")))
        elif before.report.head != scan.start[0] or closing[1] != scan.start[1]:
            problems.append((prev, Problem(lines, "modified", f"the last line of {name} (its rotation record) was "
                                           f"altered: line 1 of {cur.name} no longer chains to it")))
        scans.append((prev, before))
    scans.reverse()
    reached = {p.name for p, _ in scans}
    for other in sorted(path.parent.iterdir()):
        suffix = other.name[len(path.name):]
        if other.name.startswith(path.name) and _ROTATED_SUFFIX.fullmatch(suffix) and other.name not in reached:
            problems.append((other, Problem(0, "unlinked", f"{other.name} is not part of the chain that "
                                            f"{path.name} ends: the file after it is missing, or it was put there")))
    for p, scan in scans:
        problems.extend((p, problem) for problem in scan.report.problems)
    report = scans[-1][1].report
    if expect_head is not None and not any(scan.head_seen for _, scan in scans):
        problems.append((path, _head_missing(report.lines, expect_head)))
    order = {p.name: i for i, (p, _) in enumerate(scans)}
    problems = sorted(set(problems), key=lambda x: (order.get(x[0].name, -1), x[0].name, x[1].line, x[1].kind))
    return ChainReport(ok=not problems, files=[(p, s.report) for p, s in scans], problems=problems,
                       head=report.head)


def verify_main(path: Path, out: TextIO, expect_head: str | None = None) -> int:
    """Print a report for an operator (the log and the rotated files it continues). 0: the chain is intact;
    1: problems; 2: cannot check."""
    try:
        report = verify_chain(path, expect_head=expect_head)
    except FileNotFoundError:
        print(f"audit log not found: {path}", file=out)
        return 2
    except ValueError as e:
        print(f"cannot check audit log {path}: {e}", file=out)
        return 2
    except OSError as e:
        print(f"cannot read audit log {path}: {e.strerror or e}", file=out)
        return 2
    single = len(report.files) == 1 and all(p == Path(path) for p, _ in report.problems)
    if report.ok:
        where = "" if single else f" in {len(report.files)} files"
        print(f"audit log OK: {report.lines} lines{where}, head {report.head}", file=out)
        if not single:
            for p, r in report.files:
                print(f"  {p.name}: {r.lines} lines", file=out)
        if expect_head is not None:
            print(f"recorded head {expect_head.strip().lower()} is in the chain", file=out)
        return 0
    where = "" if single else f" (and {len(report.files) - 1} rotated file(s))"
    print(f"audit log {path}{where} is DAMAGED: {len(report.problems)} problem(s) in {report.lines} lines", file=out)
    for p, problem in report.problems:
        at = f"line {problem.line}" if problem.line else "the file"
        print(f"  {at if single else p.name + ': ' + at}: {problem.kind}: {problem.detail}", file=out)
    print(f"head {report.head}", file=out)
    return 1
