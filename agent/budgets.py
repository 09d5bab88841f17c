"""Notional budgets over time, exact across every agent process sharing the state dir.

Each scope (a key, a bot, a key's symbol) has a ledger: per budget window, the notional signed in
each of 60 buckets of window/60 seconds (1 s for "1m", 1 min for "1h", 24 min for "24h"). What a
window has used is the sum of its buckets that overlap the last WINDOW seconds, so an order counts
for its window and up to one bucket longer: the budget errs towards refusing, never towards letting
more through. Sums are Decimals written as strings: no float rounding, ever.

Across workers: every charge runs under one exclusive flock (state/budgets/.lock), reads each
scope's ledger, checks every window of every scope the request touches, and only when all pass
adds the notional and writes the ledgers back (temporary file, then rename), before the request is
signed. A refusal writes nothing: it spends nothing. A request that is charged and then fails to
sign (token gone) stays charged, which errs the same way.

Time is the wall clock (a 24 h budget outlives a reboot); a clock stepped back leaves buckets "in
the future", still counted until the clock passes them.

A damaged ledger refuses the scope's orders (fail closed) with a message naming the file.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Sequence

from agent.limits import Budget

BUCKETS = 60


class LedgerDamaged(Exception):
    """A ledger file cannot be read: that scope signs no order until it is fixed or removed."""


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


class Ledgers:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "budgets"
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._thread_lock = threading.Lock()  # flock is per open file, not per thread
        # The ledger as this process last read or wrote it, by the file's identity (inode, mtime, size):
        # unchanged since, it is not read and parsed again (the hot path's common case, one worker
        # trading). Every write is a new inode (rename), so another process's write is always seen.
        self._known: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, Decimal]]]] = {}

    def path(self, scope: str) -> Path:
        return Path(self._file(scope))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one Ledgers per process, for its life)
    def _file(self, scope: str) -> str:
        name = hashlib.blake2b(scope.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
        return os.path.join(self._dir, name + ".json")

    def charge(self, charges: Sequence[Charge], now: float) -> Overspent | None:
        """Add every charge, or none: the first window any of them would overspend, or None once all are
        written. Raises LedgerDamaged (nothing written) when a ledger cannot be read."""
        charges = [c for c in charges if c.budgets and c.notional > 0]
        if not charges:
            return None
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                ledgers = {c.scope: self._read(c.scope) for c in charges}
                for c in charges:  # every check before any write
                    for budget in c.budgets:
                        used = _used(ledgers[c.scope], budget, now)
                        if used + c.notional > budget.limit:
                            return Overspent(c, budget, used)
                for c in charges:
                    ledger = ledgers[c.scope]
                    for budget in c.budgets:
                        _add(ledger, budget, now, c.notional)
                for scope, ledger in ledgers.items():
                    self._write(scope, ledger)
                return None
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def used(self, scope: str, budgets: Iterable[Budget], now: float) -> dict[str, Decimal]:
        """What each window of SCOPE has used (for `status` and tests)."""
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            try:
                ledger = self._read(scope)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return {b.window: _used(ledger, b, now) for b in budgets}

    def _read(self, scope: str) -> dict[str, dict[str, Decimal]]:
        """{window seconds: {bucket index: sum}} (a copy the caller may change)."""
        path = self._file(scope)
        try:
            st = os.stat(path)
            known = self._known.get(scope)
            if known is not None and known[0] == (st.st_ino, st.st_mtime_ns, st.st_size):
                return {w: dict(b) for w, b in known[1].items()}
            with open(path, "rb") as file:
                raw = json.loads(file.read())
            if raw.get("scope") != scope:
                raise ValueError("names another scope")
            return {str(w): {str(i): Decimal(v) for i, v in buckets.items()} for w, buckets in raw["windows"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            raise LedgerDamaged(f"the notional ledger {path} of {scope.split(':', 1)[0]} is unreadable "
                                f"({type(exc).__name__}): its orders are refused until it is fixed or "
                                "removed (removing it forgets what the budget has used)") from None

    def _write(self, scope: str, ledger: dict[str, dict[str, Decimal]]) -> None:
        path = self._file(scope)
        tmp = f"{path}.{os.getpid()}.tmp"
        data = json.dumps({"scope": scope, "windows": {w: {i: str(v) for i, v in b.items()}
                                                       for w, b in ledger.items()}}, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        # A new file renamed into place: a reader sees the old ledger or the new one, whole. Not
        # fsynced: a power loss may forget the last orders' spending (the trade-off against ~1 ms a
        # signature); a crash of the process loses nothing.
        os.replace(tmp, path)
        self._known[scope] = ((st.st_ino, st.st_mtime_ns, st.st_size), ledger)

    def close(self) -> None:
        os.close(self._lock_fd)


def _first_bucket(budget: Budget, now: float) -> tuple[int, int]:
    """(bucket width, the oldest bucket index still overlapping the window ending NOW)."""
    width = bucket_seconds(budget)
    return width, int((now - budget.seconds) // width)


def _used(ledger: dict[str, dict[str, Decimal]], budget: Budget, now: float) -> Decimal:
    _, oldest = _first_bucket(budget, now)
    buckets = ledger.get(str(budget.seconds), {})
    return sum((v for i, v in buckets.items() if int(i) >= oldest), Decimal(0))


def _add(ledger: dict[str, dict[str, Decimal]], budget: Budget, now: float, amount: Decimal) -> None:
    width, oldest = _first_bucket(budget, now)
    buckets = ledger.setdefault(str(budget.seconds), {})
    for index in [i for i in buckets if int(i) < oldest]:  # out of the window: forgotten
        del buckets[index]
    current = str(int(now // width))
    buckets[current] = buckets.get(current, Decimal(0)) + amount
