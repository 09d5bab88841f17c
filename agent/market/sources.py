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
    path: str  # "{symbol}" in it: the symbol goes in the path (percent-encoded), not the query
    symbol_param: str  # "" when the symbol is in the path
    # (the decoded JSON answer, the symbol asked for) -> what the ticker says
    parse: Callable[[Any, str], Quote]
    params: tuple[tuple[str, str], ...] = ()  # sent with every request (Bybit's category)
    spell: Callable[[str], str] = str  # the order's symbol (upper-cased by the rules) as this endpoint takes it


def _number(value: Any, what: str) -> Decimal:
    number = decimal(value)
    if number is None:
        raise TickerFormatError(f"{what} is not a decimal number")
    return number


def _book(value: Any) -> Decimal | None:
    """A best bid or ask: a positive decimal, or None (an empty book side is sent as "" or 0)."""
    number = decimal(value)
    return number if number is not None and number > 0 else None


def _only_ticker(items: Any, missing: str) -> dict:
    """The one ticker of a list that must hold exactly one (a single symbol was asked); MISSING says why not."""
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise TickerFormatError(missing)
    return items[0]


def _same_symbol(got: Any, symbol: str) -> None:
    if not isinstance(got, str) or got.upper() != symbol.upper():
        raise TickerFormatError("the ticker names another symbol")


def _binance(answer: Any, symbol: str) -> Quote:
    if not isinstance(answer, dict):
        raise TickerFormatError("not a JSON object")
    _same_symbol(answer.get("symbol"), symbol)
    return Quote(_number(answer.get("lastPrice"), "lastPrice"), _number(answer.get("quoteVolume"), "quoteVolume"),
                 _book(answer.get("bidPrice")), _book(answer.get("askPrice")))


def _kucoin(answer: Any, symbol: str) -> Quote:
    data = answer.get("data") if isinstance(answer, dict) and answer.get("code") == "200000" else None
    if not isinstance(data, dict):
        raise TickerFormatError("no data (code is not 200000)")
    _same_symbol(data.get("symbol"), symbol)
    # /market/stats: buy is the best bid, sell the best ask.
    return Quote(_number(data.get("last"), "last"), _number(data.get("volValue"), "volValue"),
                 _book(data.get("buy")), _book(data.get("sell")))


def _okx(answer: Any, symbol: str) -> Quote:
    data = answer.get("data") if isinstance(answer, dict) and answer.get("code") == "0" else None
    t = _only_ticker(data, "no single ticker in data (code is not 0)")
    _same_symbol(t.get("instId"), symbol)
    last = _number(t.get("last"), "last")
    # volCcy24h is in the quote currency for spot, in the base currency (coins) for derivatives.
    volume = _number(t.get("volCcy24h"), "volCcy24h")
    return Quote(last, volume if t.get("instType") == "SPOT" else volume * last, _book(t.get("bidPx")),
                 _book(t.get("askPx")))


def _gate(answer: Any, symbol: str) -> Quote:
    t = _only_ticker(answer, "not a list of one ticker")
    _same_symbol(t.get("currency_pair"), symbol)
    return Quote(_number(t.get("last"), "last"), _number(t.get("quote_volume"), "quote_volume"),
                 _book(t.get("highest_bid")), _book(t.get("lowest_ask")))


def _bybit(answer: Any, symbol: str) -> Quote:
    result = answer.get("result") if isinstance(answer, dict) and answer.get("retCode") == 0 else None
    tickers = result.get("list") if isinstance(result, dict) else None
    t = _only_ticker(tickers, "no single ticker in result.list (retCode is not 0)")
    _same_symbol(t.get("symbol"), symbol)
    # turnover24h is in the quote coin for spot and linear contracts alike.
    return Quote(_number(t.get("lastPrice"), "lastPrice"), _number(t.get("turnover24h"), "turnover24h"),
                 _book(t.get("bid1Price")), _book(t.get("ask1Price")))


def _bitget(answer: Any, symbol: str) -> Quote:
    data = answer.get("data") if isinstance(answer, dict) and answer.get("code") == "00000" else None
    t = _only_ticker(data, "no single ticker in data (code is not 00000)")
    _same_symbol(t.get("symbol"), symbol)
    return Quote(_number(t.get("lastPr"), "lastPr"), _number(t.get("quoteVolume"), "quoteVolume"),
                 _book(t.get("bidPr")), _book(t.get("askPr")))


def _htx(answer: Any, symbol: str) -> Quote:
    tick = answer.get("tick") if isinstance(answer, dict) and answer.get("status") == "ok" else None
    if not isinstance(tick, dict):
        raise TickerFormatError("no tick (status is not ok)")
    # The answer names its symbol in the channel: market.<symbol>.detail.merged.
    _same_symbol(str(answer.get("ch", "")).removeprefix("market.").removesuffix(".detail.merged"), symbol)
    bid, ask = tick.get("bid"), tick.get("ask")  # [price, size]
    # vol is the quote currency's 24 h turnover (amount is the base currency's).
    return Quote(_number(tick.get("close"), "close"), _number(tick.get("vol"), "vol"),
                 _book(bid[0] if isinstance(bid, list) and bid else None),
                 _book(ask[0] if isinstance(ask, list) and ask else None))


def _cryptocom(answer: Any, symbol: str) -> Quote:
    result = answer.get("result") if isinstance(answer, dict) and answer.get("code") == 0 else None
    data = result.get("data") if isinstance(result, dict) else None
    t = _only_ticker(data, "no single ticker in result.data (code is not 0)")
    _same_symbol(t.get("i"), symbol)
    # a: last, b: best bid, k: best ask, vv: 24 h value traded (the quote currency; USD for perpetuals).
    return Quote(_number(t.get("a"), "a"), _number(t.get("vv"), "vv"), _book(t.get("b")), _book(t.get("k")))


def _kraken(answer: Any, symbol: str) -> Quote:
    result = answer.get("result") if isinstance(answer, dict) and answer.get("error") == [] else None
    # Kraken names the pair its own way in the answer (XBTUSD -> XXBTZUSD): one pair asked, one answered.
    if not isinstance(result, dict) or len(result) != 1:
        raise TickerFormatError("no single pair in result (error is not empty)")
    t = next(iter(result.values()))
    try:
        last, volume, vwap = t["c"][0], t["v"][1], t["p"][1]  # last trade; 24 h base volume and its VWAP
        bid, ask = t["b"][0], t["a"][0]
    except (KeyError, IndexError, TypeError):
        raise TickerFormatError("a ticker without c, v, p, a or b") from None
    return Quote(_number(last, "c"), _number(volume, "v") * _number(vwap, "p"), _book(bid), _book(ask))


def _coinbase(answer: Any, symbol: str) -> Quote:
    if not isinstance(answer, dict):
        raise TickerFormatError("not a JSON object")
    _same_symbol(answer.get("product_id"), symbol)
    # volume_24h is in the base currency: times the price, the quote currency. The product answer shows
    # no book: a market order is priced at the last trade.
    price = _number(answer.get("price"), "price")
    return Quote(price, _number(answer.get("volume_24h"), "volume_24h") * price, None, None)


def _gemini(answer: Any, symbol: str) -> Quote:
    if not isinstance(answer, dict) or not isinstance(answer.get("volume"), dict):
        raise TickerFormatError("no volume object")
    # The answer names no symbol; its volume does, by currency: the base and the quote spell the symbol.
    currencies = {k.upper(): v for k, v in answer["volume"].items() if k != "timestamp"}
    quote = next((c for c in currencies if symbol.upper().endswith(c) and symbol.upper()[:-len(c)] in currencies), None)
    if quote is None or len(currencies) != 2:
        raise TickerFormatError("the ticker's volume names another symbol")
    return Quote(_number(answer.get("last"), "last"), _number(currencies[quote], f"volume.{quote}"),
                 _book(answer.get("bid")), _book(answer.get("ask")))


def _bitstamp(answer: Any, symbol: str) -> Quote:
    if not isinstance(answer, dict):
        raise TickerFormatError("not a JSON object")
    # One pair per path (the answer names none); volume is the base currency's, vwap its 24 h average price.
    return Quote(_number(answer.get("last"), "last"), _number(answer.get("volume"), "volume") *
                 _number(answer.get("vwap"), "vwap"), _book(answer.get("bid")), _book(answer.get("ask")))


def _bitfinex(answer: Any, symbol: str) -> Quote:
    # [BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE, LAST_PRICE, VOLUME, HIGH, LOW]; one
    # symbol per path (the answer names none). VOLUME is in the base currency: at the last price, the quote's.
    if not isinstance(answer, list) or len(answer) != 10:
        raise TickerFormatError("not the 10-field ticker array of a trading pair")
    last = _number(answer[6], "LAST_PRICE")
    return Quote(last, _number(answer[7], "VOLUME") * last, _book(answer[0]), _book(answer[2]))


def _deribit(answer: Any, symbol: str) -> Quote:
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("stats"), dict):
        raise TickerFormatError("no result with stats (a JSON-RPC error?)")
    _same_symbol(result.get("instrument_name"), symbol)
    return Quote(_number(result.get("last_price"), "last_price"),
                 _number(result["stats"].get("volume_usd"), "stats.volume_usd"),
                 _book(result.get("best_bid_price")), _book(result.get("best_ask_price")))


def _bitfinex_symbol(symbol: str) -> str:
    """Bitfinex's trading symbols start with a lower-case t (tBTCUSD); the rules upper-case the order's."""
    return "t" + symbol[1:] if symbol.startswith("T") else symbol


SOURCES: dict[str, Source] = {s.market: s for s in (
    Source("binance", "https://api.binance.com", "/api/v3/ticker/24hr", "symbol", _binance),
    Source("binanceusdm", "https://fapi.binance.com", "/fapi/v1/ticker/24hr", "symbol", _binance),
    Source("binanceus", "https://api.binance.us", "/api/v3/ticker/24hr", "symbol", _binance),
    Source("kucoin", "https://api.kucoin.com", "/api/v1/market/stats", "symbol", _kucoin),
    Source("okx", "https://www.okx.com", "/api/v5/market/ticker", "instId", _okx),
    Source("gate", "https://api.gateio.ws", "/api/v4/spot/tickers", "currency_pair", _gate),
    Source("bybit", "https://api.bybit.com", "/v5/market/tickers", "symbol", _bybit, (("category", "spot"),)),
    Source("bybitlinear", "https://api.bybit.com", "/v5/market/tickers", "symbol", _bybit, (("category", "linear"),)),
    Source("mexc", "https://api.mexc.com", "/api/v3/ticker/24hr", "symbol", _binance),
    Source("bitget", "https://api.bitget.com", "/api/v2/spot/market/tickers", "symbol", _bitget),
    # Bitget's USDT- and USDC-margined futures: sized in the base coin, so priced like spot (the same answer shape).
    Source("bitgetusdtfutures", "https://api.bitget.com", "/api/v2/mix/market/ticker", "symbol", _bitget,
           (("productType", "USDT-FUTURES"),)),
    Source("bitgetusdcfutures", "https://api.bitget.com", "/api/v2/mix/market/ticker", "symbol", _bitget,
           (("productType", "USDC-FUTURES"),)),
    Source("htx", "https://api.huobi.pro", "/market/detail/merged", "symbol", _htx, spell=str.lower),
    Source("cryptocom", "https://api.crypto.com", "/exchange/v1/public/get-tickers", "instrument_name", _cryptocom),
    Source("kraken", "https://api.kraken.com", "/0/public/Ticker", "pair", _kraken),
    Source("coinbase", "https://api.coinbase.com", "/api/v3/brokerage/market/products/{symbol}", "", _coinbase),
    Source("gemini", "https://api.gemini.com", "/v1/pubticker/{symbol}", "", _gemini, spell=str.lower),
    Source("bitstamp", "https://www.bitstamp.net", "/api/v2/ticker/{symbol}/", "", _bitstamp, spell=str.lower),
    Source("bitfinex", "https://api-pub.bitfinex.com", "/v2/ticker/{symbol}", "", _bitfinex, spell=_bitfinex_symbol),
    Source("deribit", "https://www.deribit.com", "/api/v2/public/ticker", "instrument_name", _deribit),
)}


# Markets whose orders' limit prices the order readers do not read (Deribit's sizes are contracts or USD, so no
# price is reported): their ticker serves the volume floor, and a band there refuses every order (fail closed).
PRICES_UNREAD = frozenset({"deribit"})


def market_for(exchange_id: str, key: str, category: str = "") -> str | None:
    """The market (a SOURCES name) an order on EXCHANGE_ID to path KEY trades on; None when this version
    has no ticker source for it (COIN-M, options, futures counted in contracts...). CATEGORY is Bybit's
    category (spot, linear...) or Bitget's futures productType (usdt-futures...), lower-cased, which their
    orders carry in the body where other exchanges use the path."""
    if exchange_id == "binance":
        return "binanceusdm" if key.startswith("/fapi/") else "binance" if key.startswith(("/api/", "/sapi/")) else None
    if exchange_id == "kucoin":
        return None if "/futures/" in key else "kucoin"
    if exchange_id == "gate":
        return "gate" if key.startswith("/api/v4/spot/") else None
    if exchange_id == "bybit":
        return {"spot": "bybit", "linear": "bybitlinear"}.get(category)
    if exchange_id == "mexc":
        return "mexc" if key.startswith("/api/v3/") else None  # contract orders: /api/v1/private/...
    if exchange_id == "bitget":
        if key.startswith("/api/v2/mix/order/"):  # futures: the body's productType (COIN-FUTURES: no source)
            return {"usdt-futures": "bitgetusdtfutures", "usdc-futures": "bitgetusdcfutures"}.get(category)
        return "bitget" if key.startswith(("/api/v2/spot/", "/api/spot/")) else None
    if exchange_id == "htx":
        return "htx" if key.startswith(("/v1/order/", "/v2/algo-orders")) else None  # spot: not the contract APIs
    if exchange_id == "kraken":
        return "kraken" if key.startswith("/0/private/") else None
    if exchange_id == "coinbase":
        return "coinbase" if key.startswith("/api/v3/brokerage/orders") else None
    if exchange_id == "gemini":
        return "gemini" if key.startswith("/v1/order/") else None
    if exchange_id == "bitstamp":
        return "bitstamp" if key.startswith("/api/v2/") else None
    if exchange_id == "bitfinex":
        return "bitfinex" if key.startswith("/v2/auth/w/order/") else None
    if exchange_id == "deribit":
        # Every instrument (futures, perpetuals, options) has a ticker; sizes in contracts or USD stay unpriced,
        # so the ticker serves the band and the volume floor there, not budgets.
        return "deribit" if key.startswith("/api/v2") else None
    return exchange_id if exchange_id in ("binanceusdm", "binanceus", "okx", "cryptocom") else None
