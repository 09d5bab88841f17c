"""Where each exchange publishes its ticker, and how its answer is read: one source per market.

A source is the exchange's own public 24 h ticker endpoint, read in the exchange's own format (the
shapes are recorded, from each exchange's documentation, in tests/vectors/tickers/<market>.json and
checked against these parsers). No bot supplies a reference price: a compromised bot must not be able
to say where "the market" is.

`market_for(exchange id, path key)` names the market an order goes to (None: no source in this
version, and the checks that need one refuse, fail closed). Binance's signature does not bind the
path, so its path only picks the ticker (spot or USD-M) the band is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from agent.rules.view import decimal


class TickerFormatError(Exception):
    """The exchange answered something that is not its ticker format (or names another symbol)."""


@dataclass(frozen=True)
class Quote:
    """What a ticker answer says: the last trade, the 24 h volume in the quote currency, and the top of
    the book (best bid and ask) where the exchange's ticker carries it (None where it does not)."""

    last: Decimal
    quote_volume_24h: Decimal | None
    bid: Decimal | None
    ask: Decimal | None


@dataclass(frozen=True)
class Source:
    market: str  # the name in [market] urls, and in messages
    default_url: str  # the exchange's public API host
    path: str
    symbol_param: str
    # (the decoded JSON answer, the symbol asked for) -> what the ticker says
    parse: Callable[[Any, str], Quote]


def _number(value: Any, what: str) -> Decimal:
    number = decimal(value)
    if number is None:
        raise TickerFormatError(f"{what} is not a decimal number")
    return number


def _book(value: Any) -> Decimal | None:
    """A best bid or ask: a positive decimal, or None (an empty book side is sent as "" or 0)."""
    number = decimal(value)
    return number if number is not None and number > 0 else None


def _same_symbol(got: Any, symbol: str) -> None:
    if not isinstance(got, str) or got.upper() != symbol.upper():
        raise TickerFormatError("the ticker names another symbol")


def _binance(answer: Any, symbol: str) -> tuple[Decimal, Decimal | None]:
    if not isinstance(answer, dict):
        raise TickerFormatError("not a JSON object")
    _same_symbol(answer.get("symbol"), symbol)
    return Quote(_number(answer.get("lastPrice"), "lastPrice"), _number(answer.get("quoteVolume"), "quoteVolume"),
                 _book(answer.get("bidPrice")), _book(answer.get("askPrice")))


def _kucoin(answer: Any, symbol: str) -> tuple[Decimal, Decimal | None]:
    data = answer.get("data") if isinstance(answer, dict) and answer.get("code") == "200000" else None
    if not isinstance(data, dict):
        raise TickerFormatError("no data (code is not 200000)")
    _same_symbol(data.get("symbol"), symbol)
    # /market/stats: buy is the best bid, sell the best ask.
    return Quote(_number(data.get("last"), "last"), _number(data.get("volValue"), "volValue"),
                 _book(data.get("buy")), _book(data.get("sell")))


def _okx(answer: Any, symbol: str) -> tuple[Decimal, Decimal | None]:
    data = answer.get("data") if isinstance(answer, dict) and answer.get("code") == "0" else None
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise TickerFormatError("no single ticker in data (code is not 0)")
    t = data[0]
    _same_symbol(t.get("instId"), symbol)
    last = _number(t.get("last"), "last")
    # volCcy24h is in the quote currency for spot, in the base currency (coins) for derivatives.
    volume = _number(t.get("volCcy24h"), "volCcy24h")
    return Quote(last, volume if t.get("instType") == "SPOT" else volume * last, _book(t.get("bidPx")),
                 _book(t.get("askPx")))


def _gate(answer: Any, symbol: str) -> tuple[Decimal, Decimal | None]:
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        raise TickerFormatError("not a list of one ticker")
    _same_symbol(answer[0].get("currency_pair"), symbol)
    t = answer[0]
    return Quote(_number(t.get("last"), "last"), _number(t.get("quote_volume"), "quote_volume"),
                 _book(t.get("highest_bid")), _book(t.get("lowest_ask")))


SOURCES: dict[str, Source] = {s.market: s for s in (
    Source("binance", "https://api.binance.com", "/api/v3/ticker/24hr", "symbol", _binance),
    Source("binanceusdm", "https://fapi.binance.com", "/fapi/v1/ticker/24hr", "symbol", _binance),
    Source("binanceus", "https://api.binance.us", "/api/v3/ticker/24hr", "symbol", _binance),
    Source("kucoin", "https://api.kucoin.com", "/api/v1/market/stats", "symbol", _kucoin),
    Source("okx", "https://www.okx.com", "/api/v5/market/ticker", "instId", _okx),
    Source("gate", "https://api.gateio.ws", "/api/v4/spot/tickers", "currency_pair", _gate),
)}


def market_for(exchange_id: str, key: str) -> str | None:
    """The market (a SOURCES name) an order on EXCHANGE_ID to path KEY trades on; None when this version
    has no ticker source for it (COIN-M, options, KuCoin and Gate futures...)."""
    if exchange_id == "binance":
        return "binanceusdm" if key.startswith("/fapi/") else "binance" if key.startswith(("/api/", "/sapi/")) else None
    if exchange_id == "kucoin":
        return None if "/futures/" in key else "kucoin"
    if exchange_id == "gate":
        return "gate" if key.startswith("/api/v4/spot/") else None
    return exchange_id if exchange_id in ("binanceusdm", "binanceus", "okx") else None
