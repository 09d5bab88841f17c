"""Notional budgets over time, exact across every agent process sharing the state dir.

Each scope (a key, a bot, a key's symbol) has a ledger: per budget window, the notional signed in
each of 60 buckets of window/60 seconds (1 s for "1m", 1 min for "1h", 24 min for "24h"). What a
window has used is the sum of its buckets that overlap the last WINDOW seconds, so an order counts
for its window and up to one bucket longer: the budget errs towards refusing, never towards letting
more through. Sums are Decimals written as strings: no float rounding, ever.

On disk, every scope's ledger is one append-only journal (state/budgets/journal.jsonl): a line per
charge, naming each (scope, window, bucket, amount) it adds. Every process keeps the sums in memory
and reads only the lines other processes appended since it last looked, so a charge costs one stat,
one small append and (by default) one fdatasync, whatever the number of scopes or buckets. When the
journal has grown past COMPACT_BYTES it is rewritten as one line per live bucket (temporary file,
fsync, rename, fsync of the directory), forgetting buckets that left their window.

Across workers: every charge runs under one exclusive flock (state/budgets/.lock), catches up with
the journal, checks every window of every scope the request touches, and only when all pass appends
its line, before the request is signed. A refusal writes nothing: it spends nothing. A request that
is charged and then fails to sign (token gone) stays charged, which errs the same way.

Crashes: a charge returns only once its line is written, and with sync on (the default, `[state]
sync_budgets`) only once it is on disk, so an order signed is counted after a crash of the process
or of the host. A process killed in the middle of an append leaves a line without its newline: it
was never charged (its order was not signed); readers ignore it and the next writer cuts it off.
With sync off, a power loss may forget the last orders' spending (not a process crash).

Time is the wall clock (a 24 h budget outlives a reboot); a clock stepped back leaves buckets "in
the future", still counted until the clock passes them.

A damaged journal (a line that does not parse, other than a torn last one) refuses every budgeted
order (fail closed) with a message naming the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Sequence

from agent.limits import Budget

BUCKETS = 60
# The journal is compacted past this size (about 10,000 charges of one scope and three windows), or past
# four times its last compacted size, so that many live buckets do not make every charge compact.
COMPACT_BYTES = 1 << 20


class LedgerDamaged(Exception):
    """The journal cannot be read: no budgeted order is signed until it is fixed or removed."""


@dataclass(frozen=True)
class Charge:
    """NOTIONAL against SCOPE's BUDGETS; DESCRIBE names the scope for a person ("key 'bn-main'")."""

    scope: str
    describe: str
    budgets: tuple[Budget, ...]
    notional: Decimal


@dataclass(frozen=True)
class Overspent:
    charge: Charge
    budget: Budget
    used: Decimal  # before this request


def bucket_seconds(budget: Budget) -> int:
    return max(1, budget.seconds // BUCKETS)


Ledger = dict[int, dict[int, Decimal]]  # window seconds -> bucket index -> notional


class Ledgers:
    def __init__(self, state_dir: Path, *, sync: bool = True) -> None:
        self._dir = state_dir / "budgets"
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self._dir / "journal.jsonl"
        self._sync = sync
        self._lock_fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._thread_lock = threading.Lock()  # flock is per open file, not per thread
        # The journal as this process has read it: which file (a compaction renames a new one into place),
        # how many bytes of whole lines, and the sums they add up to.
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._compacted_size = 0
        self._ledgers: dict[str, Ledger] = {}
        # An earlier version's ledger that cannot be read: every budgeted order is refused, naming it.
        self._unadopted: LedgerDamaged | None = None
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._adopt_scope_files()
            except LedgerDamaged as exc:
                self._unadopted = exc
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def charge(self, charges: Sequence[Charge], now: float) -> Overspent | None:
        """Add every charge, or none: the first window any of them would overspend, or None once all are
        written (and synced, with sync on). Raises LedgerDamaged (nothing written) when the journal
        cannot be read, OSError when it cannot be written."""
        charges = [c for c in charges if c.budgets and c.notional > 0]
        if not charges:
            return None
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                fd = self._catch_up(writing=True)
                for c in charges:  # every check before any write
                    ledger = self._ledgers.get(c.scope, {})
                    for budget in c.budgets:
                        used = _used(ledger, budget, now)
                        if used + c.notional > budget.limit:
                            return Overspent(c, budget, used)
                adds = [(c.scope, seconds, bucket, c.notional)
                        for c in charges for seconds, bucket in _current_buckets(c.budgets, now)]
                line = json.dumps([[scope, seconds, bucket, str(amount)] for scope, seconds, bucket, amount in adds],
                                  separators=(",", ":")).encode() + b"\n"
                self._append(fd, line)
                for scope, seconds, bucket, amount in adds:
                    _add(self._ledgers.setdefault(scope, {}), seconds, bucket, amount, now)
                if self._offset > max(COMPACT_BYTES, 4 * self._compacted_size):
                    self._compact(now)
                return None
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def used(self, scope: str, budgets: Iterable[Budget], now: float) -> dict[str, Decimal]:
        """What each window of SCOPE has used (for `status` and tests)."""
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                self._catch_up(writing=False)
                ledger = self._ledgers.get(scope, {})
                return {b.window: _used(ledger, b, now) for b in budgets}
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- the journal (every method below runs under the flock) ------------------------------------------

    def _catch_up(self, *, writing: bool) -> int:
        """Apply the lines other processes appended since this one last read; the journal's descriptor.
        WRITING (the exclusive flock held): a torn last line, left by a process killed mid-append, is cut
        off so the next line starts clean."""
        if self._unadopted is not None:
            raise self._unadopted
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if self._fd is None or st is None or (st.st_dev, st.st_ino) != self._identity or st.st_size < self._offset:
            self._reopen()  # first use, a compaction elsewhere, or an operator removed the file: read it whole
            st = os.fstat(self._fd)  # type: ignore[arg-type]
        fd: int = self._fd  # type: ignore[assignment]
        if st.st_size > self._offset:
            tail = os.pread(fd, st.st_size - self._offset, self._offset)
            whole = tail.rfind(b"\n") + 1
            self._apply(tail[:whole])
            self._offset += whole
            if whole < len(tail) and writing:
                os.ftruncate(fd, self._offset)
        return fd

    def _reopen(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(self._fd)
        self._identity, self._offset, self._ledgers = (st.st_dev, st.st_ino), 0, {}
        self._compacted_size = st.st_size

    def _apply(self, lines: bytes) -> None:
        try:
            for line in lines.splitlines():
                for scope, seconds, bucket, amount in json.loads(line):
                    if not (isinstance(scope, str) and type(seconds) is int and type(bucket) is int):
                        raise ValueError("an entry is not [scope, window, bucket, amount]")
                    ledger = self._ledgers.setdefault(scope, {}).setdefault(seconds, {})
                    ledger[bucket] = ledger.get(bucket, Decimal(0)) + Decimal(amount)
        except (ValueError, TypeError, InvalidOperation) as exc:
            self._fd_reset()  # read it whole again next time, in case it was fixed
            raise LedgerDamaged(f"the notional ledger {self.path} is unreadable ({type(exc).__name__}): budgeted "
                                "orders are refused until it is fixed or removed (removing it forgets what every "
                                "budget has used)") from None

    def _fd_reset(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity, self._offset, self._ledgers = None, None, 0, {}

    def _append(self, fd: int, line: bytes) -> None:
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "a short write to the notional ledger (is the disk full?)")
            if self._sync:
                os.fdatasync(fd)  # on disk before the order is signed: a crash of the host forgets no spending
        except OSError:
            os.ftruncate(fd, self._offset)  # nothing half-written stays behind a refused charge
            raise
        self._offset += len(line)

    def _adopt_scope_files(self) -> None:
        """Earlier versions kept one JSON file per scope ({"scope", "windows": {seconds: {bucket: "sum"}}}),
        renamed into place per charge. An upgrade must not forget what their budgets have used: their buckets
        become the journal's first lines (written, synced and renamed into place before the files go)."""
        old = sorted(self._dir.glob("*.json"))
        if not old or self.path.exists():
            return
        lines = []
        for path in old:
            try:
                raw = json.loads(path.read_bytes())
                lines += [[[raw["scope"], int(seconds), int(bucket), str(Decimal(amount))]]
                          for seconds, buckets in raw["windows"].items() for bucket, amount in buckets.items()]
            except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
                raise LedgerDamaged(f"the notional ledger {path} (of an earlier version) is unreadable "
                                    f"({type(exc).__name__}): budgeted orders are refused until it is fixed or "
                                    "removed and the agent restarted (removing it forgets what its budget has "
                                    "used)") from None
        self._write_whole(b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines))
        for path in old:
            path.unlink()

    def _write_whole(self, data: bytes) -> None:
        """DATA as the whole journal: a temporary file, synced, renamed into place, and the rename synced."""
        tmp = self._dir / "journal.compacting"  # under the flock: one writer at a time, any leftover overwritten
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            if self._sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)  # a reader sees the old journal or the new one, whole
        if self._sync:
            dir_fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself survives a power loss
            finally:
                os.close(dir_fd)

    def _compact(self, now: float) -> None:
        """The journal rewritten as one line per live bucket; buckets out of their window are forgotten."""
        lines = []
        for scope, ledger in self._ledgers.items():
            for seconds, buckets in ledger.items():
                _forget_old(buckets, seconds, now)
                lines += [json.dumps([[scope, seconds, bucket, str(amount)]], separators=(",", ":"))
                          for bucket, amount in buckets.items()]
        data = "".join(line + "\n" for line in lines).encode()
        self._write_whole(data)
        kept = self._ledgers
        self._reopen()
        self._ledgers, self._offset, self._compacted_size = kept, len(data), len(data)

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        os.close(self._lock_fd)


def _first_bucket(budget: Budget, now: float) -> tuple[int, int]:
    """(bucket width, the oldest bucket index still overlapping the window ending NOW)."""
    width = bucket_seconds(budget)
    return width, int((now - budget.seconds) // width)


def _used(ledger: Ledger, budget: Budget, now: float) -> Decimal:
    _, oldest = _first_bucket(budget, now)
    buckets = ledger.get(budget.seconds)
    if not buckets:
        return Decimal(0)
    return sum((v for i, v in buckets.items() if i >= oldest), Decimal(0))


def _current_buckets(budgets: Iterable[Budget], now: float) -> list[tuple[int, int]]:
    """(window seconds, the bucket NOW falls in), once per window: two budgets of one length ("60m", "1h")
    share their buckets and must not count an order twice."""
    found: dict[int, int] = {}
    for budget in budgets:
        found.setdefault(budget.seconds, int(now // bucket_seconds(budget)))
    return list(found.items())


def _forget_old(buckets: dict[int, Decimal], seconds: int, now: float) -> None:
    width = max(1, seconds // BUCKETS)
    oldest = int((now - seconds) // width)
    for index in [i for i in buckets if i < oldest]:  # out of the window: forgotten
        del buckets[index]


def _add(ledger: Ledger, seconds: int, bucket: int, amount: Decimal, now: float) -> None:
    buckets = ledger.setdefault(seconds, {})
    if bucket not in buckets:  # a new bucket: the time to forget those that left the window
        _forget_old(buckets, seconds, now)
    buckets[bucket] = buckets.get(bucket, Decimal(0)) + amount
