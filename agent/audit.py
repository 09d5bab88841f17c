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


def _read_head(fd: int, size: int) -> tuple[str, int, bool]:
    """(hash of the last line, seq of the last line, the last line is torn), read from the end."""
    if size == 0:
        return ZERO_HASH, 0, False
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
            return _sha(last), int(m[1]) + counted, torn
        counted += 1
    return _sha(last), counted, torn


def read_head(path: Path) -> tuple[str, int]:
    """(hash of the last line, its seq) of the audit log at PATH, read from its end (not verified:
    `audit verify` checks the chain). An empty log: (ZERO_HASH, 0). FileNotFoundError if there is none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head, seq, _ = _read_head(fd, os.fstat(fd).st_size)
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
        body = _encode_body(event, fields)
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
                        self._append_locked(fd, st, body)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if not replaced:
                    return
                os.close(fd)
                self._fd, self._cache = None, None
            raise OSError(errno.EAGAIN, f"audit log {self.path} keeps being replaced while appending")

    def _path_replaced(self, st: os.stat_result) -> bool:
        # A deleted file is seen at once (fstat's link count); a moved one (rotation) within
        # PATH_RECHECK seconds: os.stat on every append would cost a fifth of its time.
        t = time.monotonic()
        if st.st_nlink and t - self._checked < self.PATH_RECHECK:
            return False
        self._checked = t
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            return True
        return (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino)

    def _append_locked(self, fd: int, st: os.stat_result, body: bytes) -> None:
        key = (st.st_dev, st.st_ino, st.st_size)
        if self._cache is not None and self._cache[0] == key:
            head, seq, torn = self._cache[1], self._cache[2], False
        else:
            head, seq, torn = _read_head(fd, st.st_size)
        seq += 1
        line = b'{"seq":%d,"ts":"%s",%s,"prev":"%s"}' % (seq, _utc_now().encode(), body, head.encode())
        data = (b"\n" if torn else b"") + line + b"\n"
        self._cache = None  # until the write is known complete
        _write_all(fd, data)
        self._cache = ((st.st_dev, st.st_ino, st.st_size + len(data)), _sha(line), seq)

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

KINDS = ("modified", "inserted", "deleted", "malformed", "truncated", "reordered")


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


def verify(path: Path, expect_head: str | None = None) -> VerifyReport:
    """Check the chain of the audit log at PATH. OSError if it cannot be read.

    EXPECT_HEAD: a head hash recorded earlier; it must still be a line of the chain
    (the log may have grown since), else the log was cut or that line altered.
    """
    expect_head = _check_head(expect_head)
    with open(path, "rb") as f:
        # Appends write whole lines under an exclusive lock: the size seen under a shared
        # lock ends on a line boundary, and that prefix never changes afterwards.
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        try:
            size = os.fstat(f.fileno()).st_size
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        # Fast path, in constant memory: a clean chain.
        head, seq, n, clean, head_seen = ZERO_HASH, 0, 0, True, expect_head in (None, ZERO_HASH)
        for raw, torn in _iter_lines(f, size):
            n += 1
            e = _entry(raw, torn)
            if e.state != "ok" or e.prev != head or e.seq != seq + 1:
                clean = False
                break
            head, seq = e.hash, e.seq
            head_seen = head_seen or head == expect_head
        if clean and head_seen:
            return VerifyReport(ok=True, lines=n, head=head)
        f.seek(0)
        entries = [_entry(raw, torn) for raw, torn in _iter_lines(f, size)]
    problems = _analyse(entries, expect_head)
    head = entries[-1].hash if entries else ZERO_HASH
    return VerifyReport(ok=not problems, lines=len(entries), head=head, problems=problems)


def _analyse(entries: list[_Entry], expect_head: str | None) -> list[Problem]:
    """Find and explain every break of the chain, pass by pass (see _PASSES); each pass reports what it
    recognises and marks the links it explains, so that later, more general passes skip them."""
    chain = _Chain(entries)
    for check in _PASSES:
        check(chain)
    _check_recorded_head(chain, expect_head)
    return sorted(set(chain.problems), key=lambda p: (p.line, p.kind))


class _Chain:
    """The lines under analysis and what the passes have found so far. Lines are 1-based; index 0 is
    the virtual line before the first, whose hash is ZERO_HASH."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.n = len(entries)
        self.e: list[_Entry] = [_Entry(ZERO_HASH, 0, None, "ok"), *entries]  # e[0]: never read as a line
        self.hashes = [ZERO_HASH] + [x.hash for x in entries]
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
    known: list[int | None] = [0] * (c.n + 1)
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


def _check_recorded_head(c: _Chain, expect_head: str | None) -> None:
    """7. Truncation at the end: the recorded head must still be the hash of a line of the file."""
    if expect_head is not None and expect_head != ZERO_HASH and expect_head not in c.where:
        c.report(c.n, "truncated", f"truncated: head {expect_head} not found: lines were removed from the end, "
                 "or the line with that hash was altered")


def verify_main(path: Path, out: TextIO, expect_head: str | None = None) -> int:
    """Print a report for an operator. 0: the chain is intact; 1: problems; 2: cannot check."""
    try:
        report = verify(path, expect_head=expect_head)
    except FileNotFoundError:
        print(f"audit log not found: {path}", file=out)
        return 2
    except ValueError as e:
        print(f"cannot check audit log {path}: {e}", file=out)
        return 2
    except OSError as e:
        print(f"cannot read audit log {path}: {e.strerror or e}", file=out)
        return 2
    if report.ok:
        print(f"audit log OK: {report.lines} lines, head {report.head}", file=out)
        if expect_head is not None:
            print(f"recorded head {expect_head.strip().lower()} is in the chain", file=out)
        return 0
    print(f"audit log {path} is DAMAGED: {len(report.problems)} problem(s) in {report.lines} lines", file=out)
    for p in report.problems:
        print(f"  line {p.line}: {p.kind}: {p.detail}", file=out)
    print(f"head {report.head}", file=out)
    return 1
