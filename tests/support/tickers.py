"""Exchanges' public tickers on the local exchange (tests/support/exchange_server.py), in their recorded shapes.

Each market answers its ticker endpoint with the shape recorded in tests/vectors/tickers/<market>.json
(from the exchange's documentation), with the symbol, last price, 24 h quote volume and book a test sets:

    tickers = Tickers(server, "binance", "kucoin")
    tickers.set("binance", "BTCUSDT", price="50000", quote_volume="900000000")
    config extra: tickers.config()     # [market.urls] pointing each market at the local server
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.market import SOURCES
from support.exchange_server import ExchangeServer, Family, Received
from support.reference import SoftwareCredential

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "tickers"


def recorded(market: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{market}.json").read_text())


def _fill(market: str, shape: Any, symbol: str, price: str, volume: str, bid: str, ask: str) -> Any:
    """The recorded answer with SYMBOL, PRICE, VOLUME (quote currency) and the top of the book (BID, ASK)
    where the exchange puts them (a ticker without a book, as Binance USD-M's, keeps none). Where the
    exchange counts volume in the base currency (Kraken, Coinbase), it is VOLUME / PRICE."""
    answer = copy.deepcopy(shape)
    base_volume = str(Decimal(volume) / Decimal(price))
    if market in ("binance", "binanceus", "mexc"):
        answer.update(symbol=symbol, lastPrice=price, quoteVolume=volume, bidPrice=bid, askPrice=ask)
    elif market == "binanceusdm":
        answer.update(symbol=symbol, lastPrice=price, quoteVolume=volume)
    elif market == "kucoin":
        answer["data"].update(symbol=symbol, last=price, volValue=volume, buy=bid, sell=ask)
    elif market == "okx":
        answer["data"][0].update(instId=symbol, last=price, volCcy24h=volume, bidPx=bid, askPx=ask)
    elif market == "gate":
        answer[0].update(currency_pair=symbol, last=price, quote_volume=volume, highest_bid=bid, lowest_ask=ask)
    elif market in ("bybit", "bybitlinear"):
        answer["result"]["list"][0].update(symbol=symbol, lastPrice=price, turnover24h=volume, bid1Price=bid,
                                           ask1Price=ask)
    elif market in ("bitget", "bitgetusdtfutures", "bitgetusdcfutures"):
        answer["data"][0].update(symbol=symbol, lastPr=price, quoteVolume=volume, bidPr=bid, askPr=ask)
    elif market == "htx":  # JSON numbers, as HTX sends them
        answer["ch"] = f"market.{symbol}.detail.merged"
        answer["tick"].update(close=float(price), vol=float(volume), bid=[float(bid), 1.0], ask=[float(ask), 1.0])
    elif market == "cryptocom":
        answer["result"]["data"][0].update(i=symbol, a=price, vv=volume, b=bid, k=ask)
    elif market == "kraken":  # answered under Kraken's own name for the pair
        (ticker,) = answer["result"].values()
        ticker.update(c=[price, "1"], v=["0", base_volume], p=[price, price], b=[bid, "1", "1"], a=[ask, "1", "1"])
        answer["result"] = {f"X{symbol}": ticker}
    elif market == "coinbase":
        answer.update(product_id=symbol, price=price, volume_24h=base_volume)
    elif market == "gemini":  # the volume by currency names the pair: base and quote (the last three letters)
        answer["volume"] = {symbol[:-3].upper(): base_volume, symbol[-3:].upper(): volume,
                            "timestamp": answer["volume"]["timestamp"]}
        answer.update(last=price, bid=bid, ask=ask)
    elif market == "bitstamp":  # volume in the base currency, at a 24 h average price (vwap) of PRICE
        answer.update(last=price, volume=base_volume, vwap=price, bid=bid, ask=ask)
    elif market == "bitfinex":  # JSON numbers, as Bitfinex sends them; VOLUME in the base currency
        answer[0], answer[2], answer[6], answer[7] = float(bid), float(ask), float(price), float(base_volume)
    elif market == "deribit":
        answer["result"].update(instrument_name=symbol, last_price=float(price), best_bid_price=float(bid),
                                best_ask_price=float(ask))
        answer["result"]["stats"]["volume_usd"] = float(volume)
    else:
        raise KeyError(market)
    return answer


class Tickers:
    def __init__(self, server: ExchangeServer, *markets: str) -> None:
        self.server = server
        self.quotes: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self.asked: list[tuple[str, str]] = []  # (market, symbol) of every ticker request, in order
        self.markets = markets
        self._families: dict[str, Family] = {}
        for market in markets:
            vector = recorded(market)
            request = vector["request"]
            family = self._families[market] = Family(market, f"{market}.invalid")
            if "{symbol}" not in request["path"]:  # a symbol in the path is routed when it is set
                family.route(request["method"], request["path"], self._answer(market, request["symbol_param"]),
                             private=False)
            # Public routes only: no signature is ever checked against this credential.
            server.add(family, SoftwareCredential(api_key="public"))

    def _answer(self, market: str, param: str, symbol_in_path: str = ""):
        shape = recorded(market)["response"]

        def answer(received: Received) -> Any:
            symbol = symbol_in_path or received.params.get(param, "")
            self.asked.append((market, symbol))
            quote = self.quotes.get((market, symbol.upper()))
            if quote is None:  # the exchanges answer an unknown symbol with an error body
                return {"code": -1121, "msg": "Invalid symbol."}
            return _fill(market, shape, symbol, *quote)
        return answer

    def set(self, market: str, symbol: str, *, price: str, quote_volume: str, bid: str | None = None,
            ask: str | None = None) -> None:
        """The ticker of SYMBOL (as an order names it): a book at the last PRICE unless BID or ASK say otherwise."""
        self.quotes[(market, symbol.upper())] = (price, quote_volume, bid or price, ask or price)
        request = recorded(market)["request"]
        if "{symbol}" in request["path"]:  # the path as the exchange spells the symbol (Bitfinex: tBTCUSD)
            spelled = SOURCES[market].spell(symbol.upper())
            self._families[market].route(request["method"], request["path"].replace("{symbol}", quote(spelled, safe="")),
                                         self._answer(market, "", spelled), private=False)

    def config(self, *, ttl_ms: int = 200, stale_ms: int = 1500) -> str:
        urls = "".join(f'{market} = "{self.server.url(market)}"\n' for market in self.markets)
        return f"[market]\nttl_ms = {ttl_ms}\nstale_ms = {stale_ms}\ntimeout_ms = 500\n[market.urls]\n{urls}"
