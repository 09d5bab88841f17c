"""The exchange's own rate limits, read from its answers: when it says a budget is spent, Send holds
what that budget covers instead of letting bots run into the exchange's ban.

An exchange counts requests per IP, per account, or per account and endpoint, and answers each one
with how much is used (Binance, Bybit), or with a 429 (Binance's 418: the IP is banned) and a
Retry-After once a limit is broken. Breaking it again after that escalates: Binance bans the IP for
minutes to days, Bybit for at least ten minutes. So after such an answer the agent refuses (rule
`rate:exchange`, RESOURCE_EXHAUSTED, naming the exchange's limit and when to retry) the Sends the
spent budget covers, until it renews:

    IP        every key sending to that host           Binance request weight (X-MBX-USED-WEIGHT-1M), 429, 418
    ORDERS    the key's orders (not reads or cancels)  Binance order count (X-MBX-ORDER-COUNT-10S, -1M, -1D)
    ENDPOINT  the key, at that endpoint                Bybit (X-Bapi-Limit-Status 0, until X-Bapi-Limit-Reset-Timestamp)
    KEY       every request of the key                 any other exchange's 429 or 418 with a Retry-After

A budget that is spent (used at or over the limit) is held until its window ends; a hold is bounded by
MAX_HOLD_S, as a clock in a header is the exchange's, not the operator's. Binance's counters are fixed
windows (a minute, ten seconds, a UTC day). The limits used are those Binance documents in
exchangeInfo's `rateLimits` (BINANCE_LIMITS); an account with others still gets the 429 hold. Holds are
per agent process: each worker learns from the answers it gets.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

IP, ORDERS, ENDPOINT, KEY = "ip", "orders", "endpoint", "key"
MAX_HOLD_S = 300.0
MAX_HOLDS = 10_000  # bounded: labels and paths come from policies and bots, but stay safe

# REQUEST_WEIGHT and ORDERS in GET /api/v3/exchangeInfo (spot) and /fapi/v1/exchangeInfo (USD-M), by
# path prefix: the headers' names are the same on both, the limits are not. Checked against what Binance
# publishes (developers.binance.com; its binance-spot-api-docs repository):
#   spot   REQUEST_WEIGHT 6000 per MINUTE 1 (enums.md, "Rate limiters"; rest-api limits' exchangeInfo
#          sample); ORDERS 100 per SECOND 10 (faqs/order_count_decrement.md, "Spot Unfilled Order Count
#          Rules") and 200000 per DAY 1 (the ORDERS sample of the same enums). ORDERS counts *unfilled*
#          orders: a fill takes one off the count, so X-MBX-ORDER-COUNT-* is the count now, and holding
#          while it is at the limit is right. Older samples (50 per 10 s, 160000 a day, 1200 weight) are
#          superseded.
#   USD-M  REQUEST_WEIGHT 2400 per MINUTE 1 (the futures docs' rateLimits samples); ORDERS 1200 per
#          MINUTE 1 and 300 per SECOND 10 (the /fapi/v1/exchangeInfo sample).
# Binance says the live configuration may differ from the samples: where a limit is lower, the weight's
# 429 carries Retry-After and holds the sends; the order count's 429 (-1015 "Too many new orders") is
# documented without Retry-After, so there the bot sees the exchange's answer and no hold is made.
BINANCE_LIMITS: dict[str, dict[str, int]] = {
    "/api/": {"USED-WEIGHT-1M": 6000, "ORDER-COUNT-10S": 100, "ORDER-COUNT-1D": 200_000},
    "/fapi/": {"USED-WEIGHT-1M": 2400, "ORDER-COUNT-10S": 300, "ORDER-COUNT-1M": 1200},
}
_BINANCE_EXCHANGES = frozenset({"binance", "binanceusdm"})
_BINANCE_HEADER = re.compile(r"x-mbx-(used-weight|order-count)-(\d{1,4})([smhd])", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Spent:
    """A budget the exchange says is spent: what it covers (SCOPE), its name, and how long to wait."""

    scope: str
    limit: str  # as the refusal names it
    wait_s: float


@dataclass(frozen=True)
class Hold:
    until: float  # time.monotonic()
    limit: str


def spent(exchange: str, status: int, headers: Iterable[tuple[str, str]], method: str, path: str,
          now: float | None = None) -> list[Spent]:
    """The budgets EXCHANGE's answer (STATUS, HEADERS) to METHOD PATH says are spent (wall clock NOW)."""
    now = time.time() if now is None else now
    named = [(n.lower(), v.strip()) for n, v in headers]
    found: list[Spent] = []
    if status in (418, 429):
        wait = _number(_first(named, "retry-after"))
        if wait is not None and wait > 0:
            ip_wide = exchange in _BINANCE_EXCHANGES  # Binance's 429 and 418 are about the IP
            found.append(Spent(IP if ip_wide else KEY, f"its rate limit (HTTP {status}, Retry-After {wait:g} s)", wait))
    if exchange in _BINANCE_EXCHANGES:
        found += _binance(named, path, now)
    elif exchange == "bybit":
        found += _bybit(named, method, path, now)
    return found


def _binance(named: list[tuple[str, str]], path: str, now: float) -> list[Spent]:
    limits = next((v for prefix, v in BINANCE_LIMITS.items() if path.startswith(prefix)), None)
    out = []
    for name, value in named:
        match = _BINANCE_HEADER.fullmatch(name)
        used = _number(value)
        if match is None or used is None or limits is None:
            continue
        kind, count, unit = match.group(1), int(match.group(2)), match.group(3)
        window = f"{kind.upper()}-{count}{unit.upper()}"
        limit = limits.get(window)
        if limit is None or used < limit or count == 0:
            continue
        period = count * _UNIT_S[unit]
        header = "X-MBX-" + window
        if kind.lower() == "used-weight":
            out.append(Spent(IP, f"the IP's request weight ({header}: {used:g} of {limit})", period - now % period))
        else:
            out.append(Spent(ORDERS, f"the account's order count ({header}: {used:g} of {limit}; reads and "
                                     "cancels still go)", period - now % period))
    return out


def _bybit(named: list[tuple[str, str]], method: str, path: str, now: float) -> list[Spent]:
    left, limit = _number(_first(named, "x-bapi-limit-status")), _first(named, "x-bapi-limit")
    reset_ms = _number(_first(named, "x-bapi-limit-reset-timestamp"))
    if left is None or left > 0 or reset_ms is None:
        return []
    wait = reset_ms / 1000 - now
    if wait <= 0:
        return []
    return [Spent(ENDPOINT, f"the limit of {method} {path} (X-Bapi-Limit-Status 0 of X-Bapi-Limit {limit})", wait)]


def _first(named: list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in named if n == name), None)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number == number and abs(number) != float("inf") else None


class Holds:
    """The spent budgets in force, by what they cover; thread-safe."""

    def __init__(self) -> None:
        self._holds: dict[tuple[str, ...], Hold] = {}
        self._lock = threading.Lock()

    def record(self, exchange: str, label: str, base_url: str, method: str, path: str,
               found: Iterable[Spent]) -> None:
        now = time.monotonic()
        with self._lock:
            for spent_budget in found:
                where = _scope(spent_budget.scope, exchange, label, base_url, method, path)
                until = now + min(spent_budget.wait_s, MAX_HOLD_S)
                if len(self._holds) >= MAX_HOLDS:
                    self._holds.clear()
                held = self._holds.get(where)
                if held is None or held.until < until:
                    self._holds[where] = Hold(until, spent_budget.limit)

    def left(self, exchange: str, label: str, base_url: str, method: str, path: str,
             order: bool) -> tuple[float, str]:
        """(seconds, the limit) of the longest hold covering this request; (0, "") when none does.
        ORDER: the request may place or change an order (neither a read nor a cancel)."""
        scopes = [IP, KEY, ENDPOINT] + ([ORDERS] if order else [])
        now = time.monotonic()
        longest = (0.0, "")
        with self._lock:
            for scope in scopes:
                where = _scope(scope, exchange, label, base_url, method, path)
                held = self._holds.get(where)
                if held is None:
                    continue
                if held.until <= now:
                    del self._holds[where]
                elif held.until - now > longest[0]:
                    longest = (held.until - now, held.limit)
        return longest


def _scope(scope: str, exchange: str, label: str, base_url: str, method: str, path: str) -> tuple[str, ...]:
    if scope == IP:
        return (IP, exchange, base_url)
    if scope == ENDPOINT:
        return (ENDPOINT, exchange, label, method, path)
    return (scope, exchange, label)
