"""ccxt with one market and placeholder credentials: the requests its private calls build, as the
agent would get them from the ccxt bridge, nothing being sent.

One home for the call builder the rules tests (tests/unit/test_rules.py) and the adversarial
parameter tests (tests/adversarial/test_unbound_params.py) both drive: ccxt is the source of truth
for what an ordinary trading call sends.
"""

from __future__ import annotations

from collections.abc import Callable

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE

from agent.schemes import UnsignedRequest
from signing_agent_client.ccxt_bridge import bridge_module


class _Sent(Exception):
    """Raised by the captured exchange's fetch: the request was built, nothing leaves the machine."""


def ccxt_calls(exchange_id: str, market: dict, options: dict | None = None):
    """(exchange, calls): a ccxt EXCHANGE_ID with the one MARKET given (id, symbol; type, settle,
    linear, inverse, contractSize, subType, info and extra fields where they matter) and OPTIONS;
    `calls(method, *args, **kwargs)` returns the agent requests that ccxt method builds."""
    bridge = bridge_module(exchange_id)
    captured: list[UnsignedRequest] = []

    class Captured(getattr(ccxt, exchange_id)):
        def sign(self, path, api="public", method="GET", params={}):  # noqa: B006 (ccxt's signature)
            built = super().sign(path, api, method, params)
            unsigned = bridge.unsign(self, built, api)
            if unsigned is not None:
                captured.append(unsigned.request)
            return built

        def fetch(self, url, method="GET", headers=None, body=None):
            raise _Sent()

    exchange = Captured({**bridge.PLACEHOLDER, "enableRateLimit": False, "options": options or {}})
    tick = exchange.precisionMode == TICK_SIZE
    kind = market.get("type", "spot")
    symbol = market["symbol"]
    base, rest = symbol.split("/")
    quote = rest.split(":")[0]
    limits = {"min": None, "max": None}
    exchange.set_markets([{
        "id": market["id"], "symbol": symbol, "base": base, "quote": quote, "baseId": base, "quoteId": quote,
        "settle": market.get("settle"), "settleId": market.get("settle"), "type": kind, "spot": kind == "spot",
        "margin": False, "swap": kind == "swap", "future": False, "option": False, "contract": kind != "spot",
        "linear": market.get("linear"), "inverse": market.get("inverse"), "contractSize": market.get("contractSize"),
        "active": True, "expiry": None, "expiryDatetime": None, "strike": None, "optionType": None,
        "precision": {"amount": 0.0001 if tick else 4, "price": 0.01 if tick else 2},
        "limits": {"amount": limits, "price": limits, "cost": limits, "leverage": limits, "market": limits},
        "taker": 0.001, "maker": 0.001, "subType": market.get("subType"), "lowercaseId": market["id"].lower(),
        "info": market.get("info", {}), **market.get("extra", {}),
    }])

    def calls(method: str, *args, **kwargs) -> list[UnsignedRequest]:
        captured.clear()
        try:
            getattr(exchange, method)(*args, **kwargs)
        except _Sent:
            pass
        return list(captured)

    return exchange, calls


Calls = Callable[..., list[UnsignedRequest]]


# exchange -> (market id, market type, quote, amount): a synthetic market in ccxt's unified shape.
MARKETS = {
    "binance": ("BTCUSDT", "spot", "USDT", 0.001), "binanceus": ("BTCUSDT", "spot", "USDT", 0.001),
    "binanceusdm": ("BTCUSDT", "swap", "USDT", 0.001), "bitfinex": ("tBTCUSD", "spot", "USD", 0.001),
    "bitget": ("BTCUSDT", "spot", "USDT", 0.001), "bitstamp": ("btcusd", "spot", "USD", 0.001),
    "bybit": ("BTCUSDT", "spot", "USDT", 0.001), "coinbase": ("BTC-USD", "spot", "USD", 0.001),
    "cryptocom": ("BTC_USD", "spot", "USD", 0.001), "deribit": ("BTC-PERPETUAL", "swap", "USD", 10),
    "gate": ("BTC_USDT", "spot", "USDT", 0.001), "gemini": ("btcusd", "spot", "USD", 0.001),
    "htx": ("btcusdt", "spot", "USDT", 0.001), "kraken": ("XBTUSD", "spot", "USD", 0.001),
    "kucoin": ("BTC-USDT", "spot", "USDT", 0.001), "kucoinfutures": ("XBTUSDTM", "swap", "USDT", 1),
    "mexc": ("BTCUSDT", "spot", "USDT", 0.001), "okx": ("BTC-USDT", "spot", "USDT", 0.001),
}


def unified_market(exchange, exchange_id: str) -> dict:
    """EXCHANGE_ID's one synthetic market (MARKETS) as ccxt EXCHANGE holds it after load_markets."""
    market_id, kind, quote, _ = MARKETS[exchange_id]
    swap = kind == "swap"
    tick = exchange.precisionMode == TICK_SIZE
    return {
        "id": market_id, "symbol": f"BTC/{quote}" + (f":{quote}" if swap else ""), "base": "BTC", "quote": quote,
        "settle": quote if swap else None, "baseId": "BTC", "quoteId": quote, "settleId": quote if swap else None,
        "type": kind, "spot": not swap, "swap": swap, "future": False, "option": False, "margin": False,
        "contract": swap, "linear": True if swap else None, "inverse": False if swap else None,
        "contractSize": 1 if swap else None, "active": True,
        "precision": {"amount": 0.0001 if tick else 8, "price": 0.01 if tick else 5},
        "limits": {"amount": {"min": 0.0001}, "price": {}, "cost": {}, "leverage": {}},
        "info": {"orderTypes": ["LIMIT", "MARKET"], "altname": market_id, "wsname": "XBT/USD"},
    }


# Private calls ccxt 4.5's load_markets still makes with the bridge's options (no option turns them off):
# reads that the templates of these exchanges allow (tests/agent/test_ccxt_bots.py runs every exchange under its template).
LOAD_MARKETS_PRIVATE = {
    "coinbase": [("GET", "/api/v3/brokerage/transaction_summary")],
    "kucoin": [("GET", "/api/v3/margin/symbols"), ("GET", "/api/v1/isolated/symbols")],
    "kucoinfutures": [("GET", "/api/v3/margin/symbols"), ("GET", "/api/v1/isolated/symbols")],
}
