"""Tickers (agent.market): each exchange's recorded ticker shape read by its parser, the cache, the
staleness bound, and the failures, against the local exchange server (never the internet)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from agent.market import SOURCES, Market, MarketSettings, NoTicker, market_for
from agent.market.sources import TickerFormatError
from support.exchange_server import ExchangeServer
from support.tickers import Tickers, recorded


@pytest.mark.parametrize("market", sorted(SOURCES))
def test_each_recorded_ticker_shape_reads_as_documented(market: str):
    vector = recorded(market)
    source = SOURCES[market]
    request = vector["request"]
    assert (request["path"], request["symbol_param"], tuple(map(tuple, request["params"]))) == (
        source.path, source.symbol_param, source.params)
    symbol = vector["symbol"].upper()  # as the rules read an order's symbol; the source spells it its way
    assert source.spell(symbol) == vector["symbol"]
    answer = json.loads(json.dumps(vector["response"]), parse_float=Decimal)  # as Market reads an answer
    quote = source.parse(answer, symbol)
    assert (quote.last, quote.quote_volume_24h) == (Decimal(vector["price"]), Decimal(vector["quote_volume_24h"]))
    # The top of the book, where the ticker carries it: a market order is priced there.
    book = [None if vector[side] is None else Decimal(vector[side]) for side in ("bid", "ask")]
    assert [quote.bid, quote.ask] == book
    # Kraken answers under its own name for the pair (XXBTZUSD), Bitstamp and Bitfinex name none (the path
    # does): one pair asked, one read.
    if market not in ("kraken", "bitstamp", "bitfinex"):
        with pytest.raises(TickerFormatError):  # an answer about another symbol is never used
            source.parse(answer, "OTHERUSDT")
    with pytest.raises(TickerFormatError):
        source.parse({"code": -1121, "msg": "Invalid symbol."}, symbol)


def test_okx_derivative_volume_is_converted_to_the_quote_currency():
    answer = json.loads(json.dumps(recorded("okx")["response"]))
    answer["data"][0].update(instType="SWAP", instId="BTC-USDT-SWAP", last="50000", volCcy24h="10")
    quote = SOURCES["okx"].parse(answer, "BTC-USDT-SWAP")
    assert (quote.last, quote.quote_volume_24h) == (Decimal(50000), Decimal(500000))


@pytest.mark.parametrize("exchange, path, market", [
    ("binance", "/api/v3/order", "binance"), ("binance", "/fapi/v1/order", "binanceusdm"),
    ("binance", "/dapi/v1/order", None), ("binanceusdm", "/fapi/v1/order", "binanceusdm"),
    ("kucoin", "/api/v1/hf/orders", "kucoin"), ("kucoinfutures", "/api/v1/orders", None),
    ("gate", "/api/v4/spot/orders", "gate"), ("gate", "/api/v4/futures/usdt/orders", None),
    ("kraken", "/0/private/addorder", "kraken"), ("mexc", "/api/v3/order", "mexc"),
    ("mexc", "/api/v1/private/order/submit", None), ("bitget", "/api/v2/spot/trade/place-order", "bitget"),
    ("bitget", "/api/v2/mix/order/place-order", None),  # no productType: no market ("htx", "/v1/order/orders/place", "htx"),
    ("htx", "/linear-swap-api/v1/swap_cross_order", None), ("cryptocom", "/exchange/v1/private/create-order", "cryptocom"),
    ("coinbase", "/api/v3/brokerage/orders", "coinbase"), ("deribit", "/api/v2/private/buy", "deribit"),
    ("deribit", "/api/v2", "deribit"), ("gemini", "/v1/order/new", "gemini"), ("gemini", "/v1/balances", None),
    ("bitstamp", "/api/v2/buy/btcusd/", "bitstamp"), ("bitfinex", "/v2/auth/w/order/submit", "bitfinex"),
    ("bitfinex", "/v2/auth/r/wallets", None),
])
def test_each_order_is_checked_against_the_market_it_goes_to(exchange, path, market):
    assert market_for(exchange, path) == market


@pytest.mark.parametrize("category, market", [("spot", "bybit"), ("linear", "bybitlinear"), ("inverse", None),
                                              ("option", None), ("", None)])
def test_a_bybit_order_goes_to_the_market_of_its_category(category, market):
    # Bybit puts spot and linear orders on one path; the body's category says which ticker prices them.
    assert market_for("bybit", "/v5/order/create", category) == market


@pytest.mark.parametrize("market", sorted(SOURCES))
def test_each_source_reads_its_exchange_over_http(market: str):
    # The request as the exchange takes it (path, query, the symbol spelled its way), the answer in its
    # recorded shape, through Market's fetch: what a deployment does, against the local exchange.
    symbol = recorded(market)["symbol"].upper()
    with ExchangeServer() as server:
        tickers = Tickers(server, market)
        tickers.set(market, symbol, price="50000", quote_volume="900000000", bid="49990", ask="50010")
        ticker = Market(MarketSettings(urls={market: server.url(market)})).ticker(market, symbol)
        assert (ticker.price, ticker.quote_volume_24h) == (Decimal(50000), Decimal(900000000))
        book = (ticker.bid, ticker.ask)
        assert book == ((None, None) if market in ("binanceusdm", "coinbase") else (Decimal(49990), Decimal(50010)))
        (received,) = [r for r in server.log if r.exchange == market]
        source = SOURCES[market]
        assert received.http.path == source.path.replace("{symbol}", source.spell(symbol))
        assert received.params == dict(source.params) | ({source.symbol_param: source.spell(symbol)}
                                                         if source.symbol_param else {})


@pytest.fixture
def local():
    with ExchangeServer() as server:
        tickers = Tickers(server, "binance", "kucoin")
        yield server, tickers


def settings(server: ExchangeServer, **kw) -> MarketSettings:
    return MarketSettings(urls={m: server.url(m) for m in ("binance", "kucoin")}, **kw)


def test_a_ticker_is_cached_for_its_ttl_then_fetched_again(local):
    server, tickers = local
    tickers.set("binance", "BTCUSDT", price="50000", quote_volume="123456789.5")
    now = [100.0]
    market = Market(settings(server, ttl=1.0, stale=5.0), clock=lambda: now[0])
    first = market.ticker("binance", "BTCUSDT")
    assert (first.price, first.quote_volume_24h) == (Decimal(50000), Decimal("123456789.5"))
    tickers.set("binance", "BTCUSDT", price="51000", quote_volume="1")
    now[0] += 0.9
    assert market.ticker("binance", "BTCUSDT").price == 50000  # cached: no request
    assert tickers.asked == [("binance", "BTCUSDT")]
    now[0] += 0.2
    assert market.ticker("binance", "BTCUSDT").price == 51000
    assert len(tickers.asked) == 2


def test_a_dark_market_is_used_until_stale_then_refused_and_alerted(local):
    server, tickers = local
    tickers.set("kucoin", "BTC-USDT", price="50000", quote_volume="5000000")
    now = [100.0]
    stale: list[tuple[str, str, str]] = []
    market = Market(settings(server, ttl=1.0, stale=5.0), clock=lambda: now[0],
                    on_stale=lambda *args: stale.append(args))
    assert market.ticker("kucoin", "BTC-USDT").price == 50000
    server.fail("kucoin", 503, body={"code": "503000", "msg": "Service unavailable"}, times=100)
    now[0] += 4.0  # past the ttl, within the staleness bound: the last ticker still serves
    assert market.ticker("kucoin", "BTC-USDT").price == 50000 and not stale
    now[0] += 1.5
    with pytest.raises(NoTicker, match=r"no fresh kucoin ticker for BTC-USDT \(last fetched 5.5 s ago; HTTP 503\)"):
        market.ticker("kucoin", "BTC-USDT")
    assert stale == [("kucoin", "BTC-USDT", "HTTP 503")]


def test_unknown_symbols_slow_and_unreachable_markets_are_refused(local):
    server, tickers = local
    market = Market(settings(server, timeout=0.3))
    with pytest.raises(NoTicker, match="never fetched; unexpected answer: the ticker names another symbol"):
        market.ticker("binance", "NOSUCHUSDT")
    tickers.set("binance", "ETHUSDT", price="3000", quote_volume="1")
    server.delay("binance", 1.0)
    started = time.monotonic()
    with pytest.raises(NoTicker, match="unreachable"):
        market.ticker("binance", "ETHUSDT")
    assert time.monotonic() - started < 0.9  # the timeout, not the exchange, bounds the wait
    closed = Market(MarketSettings(urls={"binance": "http://127.0.0.1:9"}))
    with pytest.raises(NoTicker, match="unreachable"):
        closed.ticker("binance", "ETHUSDT")


def test_a_symbol_is_sent_encoded_never_as_url_syntax(local):
    server, tickers = local
    market = Market(settings(server))
    with pytest.raises(NoTicker):
        market.ticker("binance", "BTCUSDT&symbol=ETHUSDT")
    assert tickers.asked[-1] == ("binance", "BTCUSDT&symbol=ETHUSDT")


@pytest.mark.parametrize("product_type, market", [("usdt-futures", "bitgetusdtfutures"),
                                                  ("usdc-futures", "bitgetusdcfutures"), ("coin-futures", None)])
def test_a_bitget_futures_order_goes_to_the_market_of_its_product_type(product_type, market):
    # Bitget puts every futures order on one path; productType says which ticker prices it (coin-margined: none).
    assert market_for("bitget", "/api/v2/mix/order/place-order", product_type) == market
