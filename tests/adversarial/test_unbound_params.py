"""Signatures replayed across endpoints, on the exchanges that do not sign the path.

Binance (binance, binanceusdm, binanceus, binancetr), Bybit and MEXC sign only the parameters: a
signature a bot (or whoever holds its token) obtains for an allowed endpoint -- an order, a cancel, a
read -- is valid at ANY endpoint with the same parameters. So the agent must refuse, on every path,
the parameter sets that belong to a forbidden endpoint. Here, as tables:

  * REPLAYS: (parameters signed for an allowed endpoint) -> the forbidden endpoint where the same
    signature would be valid (leverage, margin type, position mode...), and the category
    `agent.rules.inspect` must give them on the allowed path, and on the forbidden one.
  * RESIDUAL: parameter sets that are also a legitimate request's, which the rules cannot refuse
    without refusing trading; each is named, with the endpoint it would reach.
  * TRADING: ccxt's ordinary trading calls, futures included, which must NOT be refused.
  * The guard, end to end: a key that allows account-settings (to set leverage) still refuses a
    withdrawal's parameters sent to the leverage endpoint.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.policy import Refusal
from agent.exchanges import EXCHANGES
from agent.rules import inspect
from agent.schemes import RawBody, UnsignedRequest
from support.ccxt_calls import ccxt_calls

BINANCES = ("binance", "binanceusdm", "binanceus", "binancetr")


def _query(**params: str) -> tuple:
    return tuple(params.items())


def _json(**params: object) -> RawBody:
    return RawBody(json.dumps(params))


# What a bot may legitimately get signed (the allowed endpoint), as (method, path).
BN_ORDER = ("POST", "/fapi/v1/order")
BN_SPOT_ORDER = ("POST", "/api/v3/order")
BN_CANCEL = ("DELETE", "/fapi/v1/order")
BN_READ = ("GET", "/fapi/v2/account")
BYBIT_ORDER = ("POST", "/v5/order/create")
BYBIT_CANCEL = ("POST", "/v5/order/cancel")
MEXC_FUTURES_ORDER = ("POST", "/api/v1/private/order/create")
MEXC_SPOT_ORDER = ("POST", "/api/v3/order")

# (exchange, signed for, query, body, the forbidden endpoint the same signature is valid at, category)
BINANCE_REPLAYS = [
    (BN_ORDER, _query(symbol="BTCUSDT", leverage="125"), None, "POST /fapi/v1/leverage", "account-settings"),
    (BN_CANCEL, _query(symbol="BTCUSDT", leverage="125"), None, "POST /dapi/v1/leverage", "account-settings"),
    (BN_READ, _query(symbol="BTCUSDT", leverage="125"), None, "POST /papi/v1/um/leverage", "account-settings"),
    (BN_ORDER, _query(symbol="BTCUSDT", marginType="CROSSED"), None, "POST /fapi/v1/marginType", "account-settings"),
    (BN_READ, _query(dualSidePosition="true"), None, "POST /fapi/v1/positionSide/dual", "account-settings"),
    (BN_READ, _query(dualSidePosition="false"), None, "POST /papi/v1/cm/positionSide/dual", "account-settings"),
    (BN_READ, _query(multiAssetsMargin="true"), None, "POST /fapi/v1/multiAssetsMargin", "account-settings"),
    (BN_SPOT_ORDER, _query(maxLeverage="10"), None, "POST /sapi/v1/margin/max-leverage", "account-settings"),
    (BN_READ, _query(feeBurn="true"), None, "POST /fapi/v1/feeBurn", "account-settings"),
    (BN_SPOT_ORDER, _query(spotBNBBurn="true"), None, "POST /sapi/v1/bnbBurn", "account-settings"),
    (BN_SPOT_ORDER, _query(interestBNBBurn="true"), None, "POST /sapi/v1/bnbBurn", "account-settings"),
    # An order that also carries leverage: placed at the order endpoint, it raises leverage at the other.
    (BN_ORDER, _query(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01", leverage="125"), None,
     "POST /fapi/v1/leverage", "account-settings"),
    # Spelled in capitals, in a form body: the same parameters to Binance.
    (BN_ORDER, (), RawBody("SYMBOL=BTCUSDT&LEVERAGE=125"), "POST /fapi/v1/leverage", "account-settings"),
    # Position margin: Binance's positionMargin stays `transfer` (the `amount` rule).
    (BN_ORDER, _query(symbol="BTCUSDT", amount="100", type="2"), None, "POST /fapi/v1/positionMargin", "transfer"),
    # Fund-moving parameters win over settings ones.
    (BN_ORDER, _query(symbol="BTCUSDT", leverage="5", coin="USDT", address="T9yD", amount="10"), None,
     "POST /sapi/v1/capital/withdraw/apply", "withdrawal"),
]
BYBIT_REPLAYS = [
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", buyLeverage="100", sellLeverage="100"),
     "POST /v5/position/set-leverage", "account-settings"),
    (BYBIT_CANCEL, (), _json(category="linear", symbol="BTCUSDT", tradeMode=1, buyLeverage="100",
                             sellLeverage="100"), "POST /v5/position/switch-isolated", "account-settings"),
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", mode=3), "POST /v5/position/switch-mode",
     "account-settings"),
    (BYBIT_CANCEL, (), _json(category="linear", coin="USDT", mode=0), "POST /v5/position/switch-mode",
     "account-settings"),
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", riskId=10), "POST /v5/position/set-risk-limit",
     "account-settings"),
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", autoAddMargin=1),
     "POST /v5/position/set-auto-add-margin", "account-settings"),
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", margin="-50"), "POST /v5/position/add-margin",
     "account-settings"),
    (BYBIT_ORDER, (), _json(setMarginMode="PORTFOLIO_MARGIN"), "POST /v5/account/set-margin-mode",
     "account-settings"),
    (BYBIT_ORDER, (), _json(setHedgingMode="ON"), "POST /v5/account/set-hedging-mode", "account-settings"),
    (BYBIT_ORDER, (), _json(coin="USDT", collateralSwitch="OFF"), "POST /v5/account/set-collateral-switch",
     "account-settings"),
    (BYBIT_ORDER, (), _json(spotMarginMode="1"), "POST /v5/spot-margin-trade/switch-mode", "account-settings"),
    (BYBIT_ORDER, (), _json(leverage="10"), "POST /v5/spot-margin-trade/set-leverage", "account-settings"),
    (BYBIT_ORDER, (), _json(switch=1), "POST /v5/spot-cross-margin-trade/switch", "account-settings"),
    # An order that also carries leverage settings.
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                            buyLeverage="100", sellLeverage="100"), "POST /v5/position/set-leverage",
     "account-settings"),
    # Fund-moving parameters win over settings ones.
    (BYBIT_ORDER, (), _json(category="linear", symbol="BTCUSDT", buyLeverage="5", sellLeverage="5",
                            coin="USDT", address="T9yD", amount="10"), "POST /v5/asset/withdraw/create", "withdrawal"),
]
MEXC_REPLAYS = [
    (MEXC_FUTURES_ORDER, (), _json(positionId=7, leverage=200), "POST /api/v1/private/position/change_leverage",
     "account-settings"),
    (MEXC_FUTURES_ORDER, (), _json(symbol="BTC_USDT", leverage=200, openType=1, positionType=1),
     "POST /api/v1/private/position/change_leverage", "account-settings"),
    (MEXC_FUTURES_ORDER, (), _json(symbol="BTC_USDT", level=5, positionType=1),
     "POST /api/v1/private/account/change_risk_level", "account-settings"),
    (MEXC_FUTURES_ORDER, (), _json(positionId=7, isEnabled=True), "POST /api/v1/private/position/change_auto_add_im",
     "account-settings"),
    (MEXC_FUTURES_ORDER, (), _json(positionId=7, amount=50, type="SUB"),
     "POST /api/v1/private/position/change_margin", "account-settings"),
    (MEXC_SPOT_ORDER, _query(mxDeductEnable="true"), None, "POST /api/v3/mxDeduct/enable", "account-settings"),
    # An isolated order that names its position: also change_leverage's {leverage, positionId}.
    (MEXC_FUTURES_ORDER, (), _json(symbol="BTC_USDT", vol=1, side=1, type=5, openType=1, leverage=200, positionId=7),
     "POST /api/v1/private/position/change_leverage", "account-settings"),
]
REPLAYS = (
    [(name, *row) for name in BINANCES for row in BINANCE_REPLAYS]
    + [("bybit", *row) for row in BYBIT_REPLAYS]
    + [("mexc", *row) for row in MEXC_REPLAYS]
)


def _id(row) -> str:
    exchange_id, (method, path), _, _, target, _ = row
    return f"{exchange_id}:{method} {path}->{target}"


@pytest.mark.parametrize("row", REPLAYS, ids=[_id(r) for r in REPLAYS])
def test_parameters_of_a_forbidden_endpoint_are_refused_on_an_allowed_one(row):
    exchange_id, (method, path), query, body, target, category = row
    assert EXCHANGES[exchange_id].rules.path_bound is False
    found = inspect(EXCHANGES[exchange_id], UnsignedRequest(method, path, query, body))
    assert found.forbidden == category, (found.forbidden, found.forbidden_why)
    assert found.forbidden_why.startswith("parameters "), found.forbidden_why
    assert "path is not bound" in found.forbidden_why
    # The same signed parameters where the attacker would send them: refused there too.
    target_method, target_path = target.split(" ", 1)
    there = inspect(EXCHANGES[exchange_id], UnsignedRequest(target_method, target_path, query, body))
    assert there.forbidden == category, (target, there.forbidden_why)


@pytest.mark.parametrize("exchange_id", BINANCES)
def test_every_binance_rule_names_its_endpoint(exchange_id):
    found = inspect(EXCHANGES[exchange_id], UnsignedRequest(*BN_READ, _query(symbol="BTCUSDT", leverage="3"), None))
    assert "/fapi/v1/leverage" in found.forbidden_why


# (exchange, signed for, query, body, the endpoint it would reach, why the rules cannot refuse it)
RESIDUAL = [
    ("binance", ("GET", "/api/v3/account"), _query(timestamp="1", recvWindow="5000"), None,
     "POST /sapi/v1/account/enableFastWithdrawSwitch",
     "timestamp/recvWindow only: valid at every endpoint that takes no other parameter; only send mode removes it"),
    ("binance", ("GET", "/api/v3/openOrders"), _query(symbol="BTCUSDT", timestamp="1"), None,
     "POST /sapi/v1/margin/isolated/account", "{symbol} is every symbol read's"),
    ("mexc", MEXC_FUTURES_ORDER, (), _json(symbol="BTC_USDT", vol=1, side=1, type=5, openType=2, positionMode=1),
     "POST /api/v1/private/position/change_position_mode", "{positionMode} is a hedged order's"),
    ("mexc", MEXC_FUTURES_ORDER, (), _json(symbol="BTC_USDT", vol=1, side=1, type=5, openType=1, leverage=200),
     "POST /api/v1/private/position/change_leverage",
     "an isolated order carries its leverage and sets it; MEXC requires positionType there, which no order has"),
    ("bybit", ("GET", "/v5/position/list"), _query(category="linear", symbol="BTCUSDT", buyLeverage="100",
                                                  sellLeverage="100"), None, "GET only",
     "a GET signs the query string, which no POST endpoint accepts as its JSON body"),
]


@pytest.mark.parametrize("row", RESIDUAL, ids=[f"{r[0]}->{r[4]}" for r in RESIDUAL])
def test_the_named_residual_is_not_refused_by_parameters(row):
    exchange_id, (method, path), query, body, _target, _why = row
    found = inspect(EXCHANGES[exchange_id], UnsignedRequest(method, path, query, body))
    assert found.forbidden is None, found.forbidden_why


# -- ccxt's ordinary trading calls are not refused ---------------------------------------------------

_BINANCE_INFO = {"orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"]}
MARKETS = {
    "binance": ({"id": "BTCUSDT", "symbol": "BTC/USDT", "info": _BINANCE_INFO}, {}),
    "binanceus": ({"id": "BTCUSDT", "symbol": "BTC/USDT", "info": _BINANCE_INFO}, {}),
    "binanceusdm": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                     "inverse": False, "contractSize": 1, "subType": "linear", "info": _BINANCE_INFO}, {}),
    "bybit": ({"id": "BTCUSDT", "symbol": "BTC/USDT"}, {"enableUnifiedMargin": False, "enableUnifiedAccount": True}),
    "bybit-linear": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                      "inverse": False, "contractSize": 1, "subType": "linear"},
                     {"enableUnifiedMargin": False, "enableUnifiedAccount": True}),
    "mexc": ({"id": "BTCUSDT", "symbol": "BTC/USDT"}, {}),
    "mexc-swap": ({"id": "BTC_USDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                   "inverse": False, "contractSize": 0.0001, "subType": "linear"}, {}),
}


def _ccxt(market_name: str):
    """The market named MARKET_NAME (exchange, or exchange-kind) in ccxt: (exchange id, symbol, calls)."""
    exchange_id = market_name.split("-")[0]
    market, options = MARKETS[market_name]
    _, calls = ccxt_calls(exchange_id, market, options)
    return exchange_id, market["symbol"], calls


S = "<symbol>"  # replaced by the market's symbol
COMMON = [
    ("create_order", S, "limit", "buy", 1, 50000),
    ("create_order", S, "market", "sell", 1),
    ("cancel_order", "1", S),
    ("cancel_all_orders", S),
    ("fetch_order", "1", S),
    ("fetch_open_orders", S),
    ("fetch_closed_orders", S),
    ("fetch_my_trades", S),
    ("fetch_balance",),
]
FUTURES = [
    ("create_order", S, "limit", "buy", 1, 50000, {"reduceOnly": True}),
    ("fetch_positions", [S]),
    ("fetch_leverage", S),
]
TRADING = {
    "binance": COMMON,
    "binanceus": COMMON,
    "binanceusdm": COMMON + FUTURES + [
        ("create_order", S, "limit", "buy", 1, 50000, {"hedged": True}),  # positionSide
        ("edit_order", "1", S, "limit", "buy", 2, 51000),
        ("fetch_margin_mode", S),
        ("fetch_position_mode", S),
        ("fetch_funding_history", S),
    ],
    "bybit": [row for row in COMMON if row[0] != "fetch_order"] + [("fetch_open_order", "1", S)],
    "bybit-linear": [row for row in COMMON if row[0] != "fetch_order"] + FUTURES + [
        ("fetch_open_order", "1", S),
        ("create_order", S, "limit", "buy", 1, 50000, {"positionIdx": 1}),  # hedge mode
        ("create_order", S, "limit", "buy", 1, 50000, {"stopLossPrice": 40000}),
        ("edit_order", "1", S, "limit", "buy", 2, 51000),
        ("fetch_margin_mode", S),
        ("fetch_funding_history", S),
    ],
    "mexc": COMMON,
    "mexc-swap": COMMON + FUTURES + [
        ("create_order", S, "limit", "buy", 1, 50000, {"hedged": True}),  # positionMode
        ("create_order", S, "limit", "buy", 1, 50000, {"marginMode": "isolated", "leverage": 20}),
        ("create_order", S, "market", "buy", 1, None, {"triggerPrice": 40000}),
        ("cancel_orders", ["1", "2"], S),
        ("fetch_position", S),
        ("fetch_position_mode", S),
        ("fetch_funding_history", S),
    ],
}
TRADING_ROWS = [(market_name, call) for market_name, calls in TRADING.items() for call in calls]


@pytest.mark.parametrize("market_name, call", TRADING_ROWS,
                         ids=[f"{m}:{c[0]}:{i}" for i, (m, c) in enumerate(TRADING_ROWS)])
def test_ccxt_trading_calls_are_not_refused(market_name, call):
    exchange_id, symbol, calls = _ccxt(market_name)
    method, *args = call
    kwargs = {"params": args.pop()} if args and isinstance(args[-1], dict) else {}
    args = [symbol if a == S else [symbol] if a == [S] else a for a in args]
    requests = calls(method, *args, **kwargs)
    assert requests, (market_name, method)
    for request in requests:
        found = inspect(EXCHANGES[exchange_id], request)
        assert found.forbidden is None, (method, request.method, request.path, found.forbidden_why)
        assert all(o.symbol for o in found.orders), (method, request.path, found.orders)  # symbol lists can check


# -- the guard, end to end ----------------------------------------------------------------------------

NOW_MS = 1_800_000_000_000


@pytest.fixture
def guard(tmp_path: Path):
    from agent.alerts import AlertSender
    from agent.guard import Guard

    (tmp_path / "policy.toml").write_text(
        "[keys.trade]\n"
        "endpoints = ['POST /fapi/v1/order', 'GET /fapi/v2/account']\n"
        "timestamps = 'any'\n"
        "[keys.leverage]\n"
        "endpoints = ['POST /fapi/v1/order', 'POST /fapi/v1/leverage']\n"
        "allow = ['account-settings']\n"
        "timestamps = 'any'\n"
        "[keys.mover]\n"
        "endpoints = ['POST /sapi/v1/asset/transfer']\n"
        "allow = ['transfer']\n"
        "timestamps = 'any'\n")
    (tmp_path / "bots.toml").write_text("")
    g = Guard(policy_path=tmp_path / "policy.toml", bots_path=tmp_path / "bots.toml", state_dir=tmp_path / "state",
              audit=None, alerts=AlertSender(None))
    created = datetime.fromtimestamp(NOW_MS / 1000, timezone.utc).isoformat()

    def check(label: str, method: str, path: str, query) -> tuple[str, ...]:
        return g.check(g.policy.for_key(label), exchange=EXCHANGES["binanceusdm"], created=created,
                       request=UnsignedRequest(method, path, tuple(query), None), timestamp_ms=0, now_ms=NOW_MS)

    yield check
    g.stop()


def test_a_trade_key_cannot_get_leverage_parameters_signed(guard):
    for method, path in (("POST", "/fapi/v1/order"), ("GET", "/fapi/v2/account")):
        with pytest.raises(Refusal) as caught:
            guard("trade", method, path, _query(symbol="BTCUSDT", leverage="125"))
        assert caught.value.rule == "forbidden:account-settings"
        assert "/fapi/v1/leverage" in caught.value.message


def test_a_key_allowed_to_set_leverage_still_refuses_fund_moving_parameters(guard):
    assert guard("leverage", "POST", "/fapi/v1/leverage", _query(symbol="BTCUSDT", leverage="5")) == ("BTCUSDT",)
    with pytest.raises(Refusal) as caught:
        guard("leverage", "POST", "/fapi/v1/leverage",
              _query(symbol="BTCUSDT", leverage="5", coin="USDT", address="T9yD", amount="10"))
    assert caught.value.rule == "forbidden:withdrawal"
    with pytest.raises(Refusal) as caught:
        guard("leverage", "POST", "/fapi/v1/leverage", _query(symbol="BTCUSDT", leverage="5", marginType="ISOLATED",
                                                              amount="10", type="1"))
    assert caught.value.rule == "forbidden:transfer"  # add/reduce position margin: Binance's `amount` rule


def test_every_category_a_request_falls_in_must_be_allowed(guard):
    # The transfer path is allowed for this key, and Binance does not sign the path: leverage
    # parameters signed there would set leverage at /fapi/v1/leverage. Refused, naming both.
    with pytest.raises(Refusal) as caught:
        guard("mover", "POST", "/sapi/v1/asset/transfer", _query(symbol="BTCUSDT", leverage="125"))
    assert caught.value.rule == "forbidden:account-settings"
    assert "/fapi/v1/leverage" in caught.value.message
    assert guard("mover", "POST", "/sapi/v1/asset/transfer", _query(asset="USDT", amount="1", type="MAIN_UMFUTURE")) == ()


def test_names_compare_case_folded():
    # A server that folds Unicode reads "ſubuid" as "subuid" (Bybit's sub-API endpoints).
    from agent.exchanges import EXCHANGES
    from agent.rules import inspect
    body = RawBody('{"\u017fubuid":"1","permi\u017f\u017fions":"{}"}')
    found = inspect(EXCHANGES["bybit"], UnsignedRequest("POST", "/v5/order/create", (), body))
    assert found.forbidden == "sub-account"


def test_binance_auto_invest_and_margin_special_keys_are_refused_on_any_path():
    from agent.exchanges import EXCHANGES
    from agent.rules import inspect
    auto = _query(sourceType="MAIN_SITE", subscriptionAmount="1000", sourceAsset="USDT")
    assert inspect(EXCHANGES["binance"], UnsignedRequest("POST", "/api/v3/order", auto, None)).forbidden == "earn"
    key = _query(apiName="x", publicKey="y")
    assert inspect(EXCHANGES["binance"], UnsignedRequest("POST", "/api/v3/order", key, None)).forbidden == (
        "api-key-management")
