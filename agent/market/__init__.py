"""Reference prices and 24 h volumes from the exchanges' public tickers, cached for a second or two.

The price bands and thin-market checks (agent.guardrails) compare an order with the market as the
agent sees it, never as the bot says it is. Each process keeps its own cache: an entry younger than
`ttl` is used as it is (the hot path pays a dict lookup); an older one is fetched again, by one thread
per symbol while the others wait for it. When the exchange cannot be reached, the last ticker is used
until it is `stale` old; after that `NoTicker` is raised, the orders that need it are refused, and an
alert says which market went dark.

    [market]                       # signing-agent.toml
    ttl_ms = 1000                  # a ticker is fetched again after this
    stale_ms = 10000               # ... and orders needing it are refused once it is this old
    timeout_ms = 1000              # per fetch
    [market.urls]                  # each market's public API (tests point them at a local server)
    binance = "https://api.binance.com"
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Mapping
from urllib.parse import quote as percent_encode, urlencode

from agent.market.sources import SOURCES, Quote, TickerFormatError, market_for

__all__ = ["Market", "MarketSettings", "NoTicker", "Quote", "SOURCES", "Ticker", "market_for"]

MAX_ENTRIES = 10_000  # distinct (market, symbol) pairs kept; past this the cache starts afresh
MAX_ANSWER = 1 << 20  # bytes read from a ticker answer


@dataclass(frozen=True)
class MarketSettings:
    ttl: float = 1.0
    stale: float = 10.0
    timeout: float = 1.0
    urls: Mapping[str, str] = field(default_factory=dict)  # market -> base URL (default: the exchange's)


@dataclass(frozen=True)
class Ticker:
    market: str
    symbol: str
    price: Decimal  # the last trade
    quote_volume_24h: Decimal | None
    fetched: float  # monotonic seconds
    bid: Decimal | None = None  # the best bid and ask, where the exchange's ticker shows them
    ask: Decimal | None = None

    def fill_price(self, side: str) -> Decimal:
        """Where a market order on SIDE starts to fill: the best ask for a buy, the best bid for a sell,
        the price it meets on the book (the last trade is history, the spread can be wide on a thin
        market). The last price where the ticker shows no book."""
        book = self.ask if side == "buy" else self.bid
        return book if book is not None else self.price


class NoTicker(Exception):
    """No ticker fresh enough for the check (the message says which, how old, and why)."""


class Market:
    def __init__(self, settings: MarketSettings = MarketSettings(), *,
                 clock: Callable[[], float] = time.monotonic,
                 on_stale: Callable[[str, str, str], None] = lambda market, symbol, why: None) -> None:
        self._settings = settings
        self._clock = clock
        self._on_stale = on_stale
        self._cache: dict[tuple[str, str], Ticker] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def ticker(self, market: str, symbol: str) -> Ticker:
        """The ticker of SYMBOL on MARKET (a SOURCES name), at most `ttl` old if the exchange answers,
        at most `stale` old if not; NoTicker otherwise."""
        slot = (market, symbol)
        cached = self._cache.get(slot)
        if cached is not None and self._clock() - cached.fetched < self._settings.ttl:
            return cached
        with self._lock:
            if len(self._locks) > MAX_ENTRIES:
                self._locks.clear()
                self._cache.clear()
            lock = self._locks.setdefault(slot, threading.Lock())
        with lock:  # one fetch per symbol at a time; the others use what it got
            cached = self._cache.get(slot)
            if cached is not None and self._clock() - cached.fetched < self._settings.ttl:
                return cached
            try:
                fresh = self._fetch(market, symbol)
            except (OSError, ValueError, http.client.HTTPException, TickerFormatError) as exc:
                why = _why(exc)
                age = None if cached is None else self._clock() - cached.fetched
                if age is not None and age < self._settings.stale:
                    return cached
                self._on_stale(market, symbol, why)
                seen = "never fetched" if age is None else f"last fetched {age:.1f} s ago"
                raise NoTicker(f"no fresh {market} ticker for {symbol} ({seen}; {why})") from None
            self._cache[slot] = fresh
            return fresh

    def _fetch(self, market: str, symbol: str) -> Ticker:
        source = SOURCES[market]
        base = self._settings.urls.get(market, source.default_url).rstrip("/")
        spelled = source.spell(symbol)
        path = source.path.replace("{symbol}", percent_encode(spelled, safe=""))
        query = urlencode(source.params + (((source.symbol_param, spelled),) if source.symbol_param else ()))
        url = f"{base}{path}?{query}" if query else f"{base}{path}"
        request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       "User-Agent": "signing-agent-market/1"})
        with urllib.request.urlopen(request, timeout=self._settings.timeout) as answer:  # noqa: S310 (http(s) only)
            body = answer.read(MAX_ANSWER + 1)
        if len(body) > MAX_ANSWER:
            raise TickerFormatError("the answer is too large")
        quote = source.parse(json.loads(body, parse_float=Decimal), symbol)  # HTX sends numbers: exact
        if quote.last <= 0:
            raise TickerFormatError("the last price is not positive")
        return Ticker(market, symbol, quote.last, quote.quote_volume_24h, self._clock(), quote.bid, quote.ask)


def _why(exc: Exception) -> str:
    """The failure, for a person, without the URL's query (it names nothing secret, but stays short)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {getattr(exc.reason, 'strerror', None) or exc.reason}"
    if isinstance(exc, TickerFormatError):
        return f"unexpected answer: {exc}"
    if isinstance(exc, ValueError):
        return "unexpected answer: not JSON"
    return f"unreachable: {getattr(exc, 'strerror', None) or type(exc).__name__}"
