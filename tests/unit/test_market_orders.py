"""Market orders under a notional budget or a price band (agent.guardrails): priced at the top of the
book the exchange's own ticker shows (the best ask for a buy, the best bid for a sell), so a market
order by quantity counts price x quantity against the budget; refused, naming what to send, only when
no fresh ticker exists or the order's side or type cannot be read. Amends of the price only (OKX, Kraken,
Bybit) held to the band like new orders, failing closed where the new price or symbol is unread.
Real Guardrails, ledgers in a
temporary state dir, the ticker from the local exchange server (never the internet)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from agent.exchanges import exchange_for
from agent.guardrails import Guardrails
from agent.market import MarketSettings, Ticker
from agent.policy import Refusal, evaluate, parse_policy
from agent.rates import SharedBuckets
from signing_agent_client.request import RawBody, UnsignedRequest
from support.exchange_server import ExchangeServer
from support.tickers import Tickers

POLICY = b"""
[bots.b]
keys = ["budget", "band", "okx-budget", "okx-band", "kraken-band", "bybit-band", "bitget-band", "gemini-band"]
[keys.budget]
endpoints = ["POST /api/v3/order", "POST /dapi/v1/order"]
max_notional = { "1h" = "1000" }
[keys.band]
endpoints = ["POST /api/v3/order"]
price_band_pct = "2"
[keys.okx-budget]
endpoints = ["POST /api/v5/trade/order"]
max_notional = { "1h" = "1000" }
[keys.okx-band]
endpoints = ["POST /api/v5/trade/amend-order", "POST /api/v5/trade/amend-batch-orders"]
price_band_pct = "2"
[keys.kraken-band]
endpoints = ["POST /0/private/EditOrder", "POST /0/private/AmendOrder"]
timestamps = "any"
price_band_pct = "2"
[keys.bybit-band]
endpoints = ["POST /v5/order/amend"]
price_band_pct = "2"
[keys.bitget-band]
endpoints = ["POST /api/v2/mix/order/place-order"]
price_band_pct = "2"
[keys.gemini-band]
endpoints = ["POST /v1/order/new"]
timestamps = "any"
price_band_pct = "2"
"""


class Rig:
    def __init__(self, state: Path, server: ExchangeServer) -> None:
        self.policy = parse_policy(POLICY)
        markets = ("binance", "okx", "kraken", "bybit", "bitgetusdtfutures", "gemini")
        self.tickers = Tickers(server, *markets)
        self.guard = Guardrails(state, buckets=SharedBuckets(state / "rates.bin"),
                                market=MarketSettings(ttl=0.2, stale=1.0, timeout=0.5,
                                                      urls={m: server.url(m) for m in markets}))

    def check(self, key: str, exchange: str, method: str, path: str, body) -> None:
        """Raise the guardrails' Refusal, or charge the order (the rules must pass first)."""
        verdict = evaluate(self.policy.keys[key], exchange_for(exchange),
                           UnsignedRequest(method, path, body=body).validated(), created="2026-12-01T00:00:00Z",
                           timestamp_ms=0, now_ms=int(time.time() * 1000))
        assert verdict.refusal is None, verdict.refusal
        self.guard.check(bot=self.policy.bots["b"], bot_name="b", key_policy=self.policy.keys[key],
                         exchange=exchange_for(exchange), verdict=verdict, now=time.time())

    def used(self, key: str) -> Decimal:
        return self.guard.used(f"key:{key}", self.policy.keys[key].limits, time.time())["1h"]


@pytest.fixture
def rig(tmp_path: Path):
    with ExchangeServer() as server:
        r = Rig(tmp_path, server)
        yield r
        r.guard.close()


def binance_market(side: str, quantity: str, symbol: str = "BTCUSDT"):
    return (("symbol", symbol), ("side", side), ("type", "MARKET"), ("quantity", quantity))


def test_a_market_buy_counts_at_the_best_ask_and_a_sell_at_the_best_bid(rig: Rig):
    rig.tickers.set("binance", "BTCUSDT", price="50000", quote_volume="1", bid="49900", ask="50100")
    rig.check("budget", "binance", "POST", "/api/v3/order", binance_market("BUY", "0.01"))
    assert rig.used("budget") == Decimal("501.00")  # 0.01 x the ask 50100, not the last 50000
    rig.check("budget", "binance", "POST", "/api/v3/order", binance_market("SELL", "0.005"))
    assert rig.used("budget") == Decimal("750.50")  # + 0.005 x the bid 49900
    with pytest.raises(Refusal) as refused:  # 0.01 x 50100 more would pass 1000
        rig.check("budget", "binance", "POST", "/api/v3/order", binance_market("BUY", "0.01"))
    assert refused.value.rule == "notional-budget" and "adds 501" in str(refused.value)


def test_an_okx_market_sell_by_base_size_counts_at_the_bid(rig: Rig):
    rig.tickers.set("okx", "ETH-USDT", price="3000", quote_volume="1", bid="2990", ask="3010")
    body = RawBody('{"instId":"ETH-USDT","tdMode":"cash","side":"sell","ordType":"market","sz":"0.1"}')
    rig.check("okx-budget", "okx", "POST", "/api/v5/trade/order", body)
    assert rig.used("okx-budget") == Decimal("299.0")


def test_a_market_order_with_no_fresh_ticker_is_refused_naming_what_to_send(rig: Rig):
    with pytest.raises(Refusal) as refused:  # the exchange does not know the symbol: no ticker at all
        rig.check("budget", "binance", "POST", "/api/v3/order", binance_market("BUY", "1", "NOSUCHUSDT"))
    assert refused.value.rule == "notional-budget"
    assert "no fresh binance ticker for NOSUCHUSDT" in str(refused.value)
    assert "send a limit price, or size the order in the quote asset" in str(refused.value)
    assert rig.used("budget") == 0
    # A limit order needs no ticker under a budget alone: it is counted at its own price.
    rig.check("budget", "binance", "POST", "/api/v3/order",
              (("symbol", "NOSUCHUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
               ("quantity", "2"), ("price", "10")))
    assert rig.used("budget") == 20


def test_a_market_order_on_an_exchange_without_a_ticker_source_is_refused(rig: Rig):
    # Binance COIN-M has no ticker source in this version; under a budget its market order cannot be priced.
    with pytest.raises(Refusal) as refused:
        rig.check("budget", "binance", "POST", "/dapi/v1/order", binance_market("BUY", "1", "BTCUSD_PERP"))
    assert refused.value.rule == "notional-budget" and "reads no Binance ticker" in str(refused.value)
    assert "send a limit price" in str(refused.value)


def test_a_market_order_whose_side_or_type_cannot_be_read_is_refused_naming_the_field(rig: Rig):
    rig.tickers.set("binance", "BTCUSDT", price="50000", quote_volume="1")
    with pytest.raises(Refusal) as refused:  # STOP_LOSS: a market order later, at an unknown price
        rig.check("budget", "binance", "POST", "/api/v3/order",
                  (("symbol", "BTCUSDT"), ("side", "SELL"), ("type", "STOP_LOSS"), ("quantity", "0.01"),
                   ("stopPrice", "45000")))
    assert refused.value.rule == "notional-budget"
    assert "its limit price and order type could not be read" in str(refused.value)
    with pytest.raises(Refusal) as refused:  # no side: which side of the book it takes is unknown
        rig.check("budget", "binance", "POST", "/api/v3/order", (("symbol", "BTCUSDT"), ("type", "MARKET"),
                                                                 ("quantity", "0.01")))
    assert refused.value.rule == "notional-budget" and "(field 'side')" in str(refused.value)
    assert rig.used("budget") == 0


def test_a_market_order_is_held_to_the_band_where_it_would_fill(rig: Rig):
    # A thin book: the last trade at 50000, the best ask 10 % above it. A market buy would pay the ask.
    rig.tickers.set("binance", "BTCUSDT", price="50000", quote_volume="1", bid="49950", ask="55000")
    with pytest.raises(Refusal) as refused:
        rig.check("band", "binance", "POST", "/api/v3/order", binance_market("BUY", "0.01"))
    message = str(refused.value)
    assert refused.value.rule == "price-band"
    assert "a market buy, which would fill from the best ask 55000," in message and "no higher than 51000" in message
    # The sell side of the same book is inside the band: signed.
    rig.check("band", "binance", "POST", "/api/v3/order", binance_market("SELL", "0.01"))


def test_a_ticker_without_a_book_prices_at_the_last_trade():
    # Binance USD-M's 24 h ticker shows no bid or ask (tests/vectors/tickers/binanceusdm.json).
    ticker = Ticker("binanceusdm", "BTCUSDT", Decimal("50000"), None, 0.0)
    assert (ticker.fill_price("buy"), ticker.fill_price("sell")) == (Decimal("50000"), Decimal("50000"))
    booked = Ticker("binance", "BTCUSDT", Decimal("50000"), None, 0.0, bid=Decimal("49990"), ask=Decimal("50010"))
    assert (booked.fill_price("buy"), booked.fill_price("sell")) == (Decimal("50010"), Decimal("49990"))


# -- amends of the price only: the new price is held to the band as a new order's -------------------------


def okx_amend(price: str, symbol: str = "BTC-USDT") -> RawBody:
    return RawBody(f'{{"instId":"{symbol}","ordId":"590909145319051264","newPx":"{price}"}}')


def test_an_okx_price_amend_inside_the_band_passes_and_outside_it_is_refused_either_way(rig: Rig):
    rig.tickers.set("okx", "BTC-USDT", price="30000", quote_volume="1")
    rig.check("okx-band", "okx", "POST", "/api/v5/trade/amend-order", okx_amend("30550"))  # +1.8 %: either side
    for price in ("30700", "29300"):  # +2.3 %, -2.3 %: a buy above or a sell below, and the amend has no side
        with pytest.raises(Refusal) as refused:
            rig.check("okx-band", "okx", "POST", "/api/v5/trade/amend-order", okx_amend(price))
        assert refused.value.rule == "price-band"
        text = str(refused.value)
        assert f"the new price of an amend on BTC-USDT, {price}, is more than 2 % from the last price 30000" in text
        assert "29400 to 30600" in text and "does not say its side" in text
        assert "amend within the band, or cancel the order and place a new one with its side" in text
    batch = RawBody('[{"instId":"BTC-USDT","ordId":"1","newPx":"30100"},'
                    '{"instId":"BTC-USDT","ordId":"2","newPx":"31000"}]')
    with pytest.raises(Refusal, match="31000"):  # one amend of a batch out of the band refuses the batch
        rig.check("okx-band", "okx", "POST", "/api/v5/trade/amend-batch-orders", batch)


def test_a_kraken_edit_is_band_checked_and_an_unreadable_price_or_pair_fails_closed(rig: Rig):
    rig.tickers.set("kraken", "XBTUSD", price="45000", quote_volume="1")
    edit = "nonce=1&txid=OHYO67-6LP66-HMQ437&pair=XBTUSD&price="
    rig.check("kraken-band", "kraken", "POST", "/0/private/EditOrder", RawBody(edit + "45500"))
    with pytest.raises(Refusal, match="price-band.*46500"):
        rig.check("kraken-band", "kraken", "POST", "/0/private/EditOrder", RawBody(edit + "46500"))
    with pytest.raises(Refusal) as refused:  # "+5": relative to the market, not a price the band can read
        rig.check("kraken-band", "kraken", "POST", "/0/private/EditOrder", RawBody(edit + "%2B5"))
    assert refused.value.rule == "price-band" and "whose new price could not be read" in str(refused.value)
    assert "send the symbol and a plain limit price with the amend" in str(refused.value)
    with pytest.raises(Refusal) as refused:  # AmendOrder names no pair: the band cannot find the market
        rig.check("kraken-band", "kraken", "POST", "/0/private/AmendOrder",
                  RawBody('{"nonce":1,"txid":"OHYO67-6LP66-HMQ437","limit_price":"45000"}'))
    assert refused.value.rule == "price-band" and "whose symbol could not be read" in str(refused.value)


def test_a_bybit_price_amend_is_band_checked_on_its_category_market(rig: Rig):
    rig.tickers.set("bybit", "BTCUSDT", price="30000", quote_volume="1")
    amend = '{{"category":"spot","symbol":"BTCUSDT","orderId":"c6f055d9","price":"{}"}}'
    rig.check("bybit-band", "bybit", "POST", "/v5/order/amend", RawBody(amend.format("29500")))
    with pytest.raises(Refusal, match="price-band.*28000"):
        rig.check("bybit-band", "bybit", "POST", "/v5/order/amend", RawBody(amend.format("28000")))


# -- markets whose tickers came later: Bitget USDT futures (by productType), Gemini ----------------------


def test_a_bitget_usdt_futures_order_is_band_checked_against_the_futures_ticker(rig: Rig):
    rig.tickers.set("bitgetusdtfutures", "ETHUSDT", price="2000", quote_volume="1")
    order = ('{{"symbol":"ETHUSDT","productType":"USDT-FUTURES","marginMode":"isolated","marginCoin":"USDT",'
             '"size":"0.6","price":"{}","side":"buy","tradeSide":"open","orderType":"limit","force":"gtc"}}')
    rig.check("bitget-band", "bitget", "POST", "/api/v2/mix/order/place-order", RawBody(order.format("2030")))
    with pytest.raises(Refusal) as refused:
        rig.check("bitget-band", "bitget", "POST", "/api/v2/mix/order/place-order", RawBody(order.format("2100")))
    assert refused.value.rule == "price-band" and "on bitgetusdtfutures" in str(refused.value)
    assert "no higher than 2040" in str(refused.value)


def test_a_gemini_limit_order_is_band_checked_against_geminis_ticker(rig: Rig):
    rig.tickers.set("gemini", "BTCUSD", price="3600", quote_volume="1")
    order = ('{{"request":"/v1/order/new","nonce":"1700000000000","symbol":"btcusd","amount":"5","price":"{}",'
             '"side":"sell","type":"exchange limit"}}')
    rig.check("gemini-band", "gemini", "POST", "/v1/order/new", RawBody(order.format("3550")))
    with pytest.raises(Refusal, match="price-band.*a sell at 3500 on BTCUSD.*no lower than 3528"):
        rig.check("gemini-band", "gemini", "POST", "/v1/order/new", RawBody(order.format("3500")))
    assert ("gemini", "btcusd") in rig.tickers.asked  # Gemini's own spelling, in the path
