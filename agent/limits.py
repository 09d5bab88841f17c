"""The guardrails' settings in policy.toml (issue 17): limits over time and against the market.

Parsed here, next to nothing else, so agent/policy.py only lists these fields in its key and bot
schemas and keeps one `limits` value per key and bot. Pure: the state these limits need (ledgers,
order-rate buckets, the freeze file) is agent.guardrails'.

    [keys.binance-main]
    max_notional = { "1m" = "2000", "1h" = "20000", "24h" = "100000" }  # quote currency, every signed order
    max_notional_per_symbol = { "*" = { "1h" = "5000" } }                # each symbol on its own ("*": any)
    max_orders_per_minute = 120                                         # the key, every symbol together
    max_orders_per_minute_per_symbol = { "*" = 30 }                      # each symbol on its own
    price_band_pct = "2"            # limit buys at most 2 % above the exchange's last price, sells 2 % below
    min_quote_volume_24h = "1000000"  # no orders on symbols that traded less (quote currency, 24 h)

    [bots.mm-1]
    max_notional = { "24h" = "250000" }                                 # every key of the bot together
    max_orders_per_minute = 300
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from agent.toml_schema import INT, Field, Invalid, Kind, table_of

# Windows are "<n>s", "<n>m", "<n>h" or "<n>d", from 1 s to 7 days.
_WINDOW = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_SECONDS = 7 * 86400
MAX_WINDOWS = 8


@dataclass(frozen=True)
class Budget:
    """One window of a notional budget: at most LIMIT (quote currency) signed within SECONDS."""

    window: str  # as written ("1h"), for messages
    seconds: int
    limit: Decimal


@dataclass(frozen=True)
class Limits:
    max_notional: tuple[Budget, ...] = ()
    max_notional_per_symbol: Mapping[str, tuple[Budget, ...]] = field(default_factory=dict)  # "*": each symbol
    max_orders_per_minute: int | None = None
    max_orders_per_minute_per_symbol: Mapping[str, int] = field(default_factory=dict)  # "*": each symbol
    price_band_pct: Decimal | None = None  # against the exchange's own ticker (agent.market)
    min_quote_volume_24h: Decimal | None = None

    @property
    def needs_market(self) -> bool:
        return self.price_band_pct is not None or self.min_quote_volume_24h is not None

    @property
    def budgets(self) -> bool:
        return bool(self.max_notional or self.max_notional_per_symbol)

    def symbol_budgets(self, symbol: str) -> tuple[Budget, ...]:
        return self.max_notional_per_symbol.get(symbol, self.max_notional_per_symbol.get("*", ()))

    def symbol_rate(self, symbol: str) -> int | None:
        return self.max_orders_per_minute_per_symbol.get(symbol, self.max_orders_per_minute_per_symbol.get("*"))


NO_LIMITS = Limits()


def _amount(value: Any) -> Decimal | None:
    try:
        parsed = Decimal(value) if isinstance(value, str) else None
    except InvalidOperation:
        return None
    return parsed if parsed is not None and parsed.is_finite() and parsed > 0 else None


def _budgets(table: dict[str, Any]) -> tuple[Budget, ...]:
    if not table:
        raise Invalid('needs at least one window, e.g. { "1h" = "20000" }')
    if len(table) > MAX_WINDOWS:
        raise Invalid(f"has {len(table)} windows; at most {MAX_WINDOWS}")
    out = []
    for window, amount in table.items():
        match = _WINDOW.fullmatch(window)
        seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else 0
        if not 0 < seconds <= MAX_WINDOW_SECONDS:
            raise Invalid(f"has window {window[:20]!r}: write <n>s, <n>m, <n>h or <n>d, up to 7d (e.g. \"1m\", \"24h\")")
        limit = _amount(amount)
        if limit is None:
            raise Invalid(f"window {window!r} needs a positive decimal string, e.g. \"20000\" (strings keep "
                          "decimals exact)")
        if any(b.seconds == seconds for b in out):
            raise Invalid(f"has window {window!r} twice (as {next(b.window for b in out if b.seconds == seconds)!r})")
        out.append(Budget(window, seconds, limit))
    return tuple(sorted(out, key=lambda b: b.seconds))


_WINDOWS = table_of(Kind('a decimal string', lambda v: isinstance(v, str)),
                    expect='a table of WINDOW = "amount", e.g. { "1m" = "2000", "24h" = "100000" }')
_PER_SYMBOL_WINDOWS = table_of(Kind("a table of windows", lambda v: isinstance(v, dict)),
                               expect='a table of SYMBOL = { WINDOW = "amount" } ("*": each symbol)')
_PER_MINUTE = INT
_PER_SYMBOL_RATE = table_of(Kind("an integer from 1 to 100000", lambda v: isinstance(v, int) and not isinstance(
    v, bool) and 1 <= v <= 100_000), expect='a table of SYMBOL = orders per minute ("*": each symbol)')

_MAX_NOTIONAL = Field("max_notional", _WINDOWS, convert=_budgets)
_MAX_ORDERS = Field("max_orders_per_minute", _PER_MINUTE, low=1, high=100_000)
KEY_FIELDS = (
    _MAX_NOTIONAL,
    Field("max_notional_per_symbol", _PER_SYMBOL_WINDOWS,
          convert=lambda v: {s.upper(): _budgets(w) for s, w in v.items()}),
    _MAX_ORDERS,
    Field("max_orders_per_minute_per_symbol", _PER_SYMBOL_RATE, convert=lambda v: {s.upper(): n for s, n in v.items()}),
    Field("price_band_pct", Kind('a number or decimal string, e.g. "2"', lambda v: _percent(v) is not None),
          convert=lambda v: _percent(v), expect='a percentage above 0 and at most 100, e.g. "2" (or 2)'),
    Field("min_quote_volume_24h", Kind('a positive decimal string', lambda v: _amount(v) is not None),
          convert=_amount, expect='a positive decimal string in the quote currency, e.g. "1000000"'),
)
BOT_FIELDS = (_MAX_NOTIONAL, _MAX_ORDERS)


def _percent(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        parsed = Decimal(str(value))
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() and 0 < parsed <= 100 else None


def limits_of(values: Mapping[str, Any]) -> Limits:
    """The Limits of one key or bot table, from the values its schema read (KEY_FIELDS or BOT_FIELDS)."""
    found = Limits(
        max_notional=values.get("max_notional") or (),
        max_notional_per_symbol=values.get("max_notional_per_symbol") or {},
        max_orders_per_minute=values.get("max_orders_per_minute"),
        max_orders_per_minute_per_symbol=values.get("max_orders_per_minute_per_symbol") or {},
        price_band_pct=values.get("price_band_pct"),
        min_quote_volume_24h=values.get("min_quote_volume_24h"),
    )
    return NO_LIMITS if found == NO_LIMITS else found
