"""agent.rules: what a signing request is (forbidden family, symbols, orders), for every exchange.

No agent and no token: the rules are pure. ccxt (4.5.90) is the source of truth twice over: its
endpoint catalogue (every endpoint of every exchange, turned into the request the agent would sign by
the ccxt bridge's own `unsign`) must have each fund-moving write forbidden, and its trading methods
(createOrder, cancelOrder, fetchBalance...), run with placeholder credentials and a fetch that sends
nothing, must produce requests that are not forbidden and whose orders read back as ccxt placed them.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import ccxt
import pytest
from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.types import Entry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import bridge_module
from agent.exchanges import EXCHANGES
from agent.rules import CATEGORIES, OrderFacts, RequestFacts, inspect
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.ccxt_calls import ccxt_calls

CCXT_IDS = sorted(set(EXCHANGES) - {"binancetr"})  # Binance TR has no ccxt class


def req(method: str, path: str, query=(), body=None) -> UnsignedRequest:
    return UnsignedRequest(method, path, tuple(query), body)


def own_forbidden(found: RequestFacts, exchange: str) -> str | None:
    """The request's first category, setting aside the `session-token` that every request of an
    exchange whose signatures are logins carries (Deribit: Rules.signature_is_login)."""
    login = EXCHANGES[exchange].rules.signature_is_login
    return next((c for c, why in found.violations if not (c == "session-token" and why == login)), None)


def facts(exchange: str, method: str, path: str, query=(), body=None) -> RequestFacts:
    return inspect(EXCHANGES[exchange], req(method, path, query, body))


def raw(value: object) -> RawBody:
    return RawBody(value if isinstance(value, str) else json.dumps(value))


def order(symbol, quantity=None, quote=None) -> OrderFacts:
    as_decimal = lambda v: None if v is None else Decimal(str(v))  # noqa: E731
    return OrderFacts(symbol, as_decimal(quantity), as_decimal(quote))


def test_the_exchanges_that_do_not_bind_the_path():
    unbound = {name for name, record in EXCHANGES.items() if not record.rules.path_bound}
    assert unbound == {"binance", "binanceusdm", "binanceus", "binancetr", "bybit", "mexc", "htx"}


# -- ccxt's endpoint catalogue -----------------------------------------------------------------


def _entries(cls):
    seen = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, Entry) and (key := (tuple(value.api), value.method, value.path)) not in seen:
                seen.add(key)
                yield value


def _catalogue() -> dict[str, list[UnsignedRequest]]:
    """Every private endpoint of every ccxt exchange as the request the agent would sign."""
    result: dict[str, list[UnsignedRequest]] = {}
    for exchange_id in CCXT_IDS:
        bridge = bridge_module(exchange_id)
        cls = getattr(ccxt, exchange_id)
        exchange = cls(dict(bridge.PLACEHOLDER))
        requests = []
        for entry in _entries(cls):
            params = {name: "X1" for name in re.findall(r"\{([^}]+)\}", entry.path)}
            try:
                built = exchange.sign(entry.path, entry.api, entry.method, params)
                unsigned = bridge.unsign(exchange, built, entry.api)
            except Exception:  # noqa: BLE001 - retired APIs (Bybit v2/v3) and hostless sections the agent cannot sign
                continue
            if unsigned is not None:
                requests.append(unsigned.request)
        result[exchange_id] = requests
    return result


CATALOGUE = _catalogue()

# Endpoints whose names contain a fund-moving keyword and that are sent with a writing method, yet
# move nothing: the exchange POSTs its reads, or the keyword misleads. Each is allowed on purpose.
NOT_FUND_MOVING = {
    ("kraken", "/0/private/WithdrawMethods"): "Kraken POSTs reads: the withdrawal methods of an asset",
    ("kraken", "/0/private/WithdrawAddresses"): "Kraken POSTs reads: the withdrawal addresses on file",
    ("kraken", "/0/private/WithdrawInfo"): "Kraken POSTs reads: a fee quote for a withdrawal",
    ("kraken", "/0/private/WithdrawStatus"): "Kraken POSTs reads: recent withdrawals",
    ("gemini", "/v1/transfers"): "Gemini POSTs reads: transfer history",
    ("gemini", "/v2/transfers"): "Gemini POSTs reads: transfer history",
    ("gemini", "/v1/withdraw/X1/feeEstimate"): "Gemini POSTs reads: a fee quote",
    ("gemini", "/v2/withdraw/X1/X1/feeEstimate"): "Gemini POSTs reads: a fee quote",
    ("kraken", "/0/private/Earn/AllocateStatus"): "Kraken POSTs reads: an allocation's status",
    ("kraken", "/0/private/Earn/DeallocateStatus"): "Kraken POSTs reads: a deallocation's status",
    ("kraken", "/0/private/Earn/Strategies"): "Kraken POSTs reads: the earn strategies offered",
    ("kraken", "/0/private/Earn/Allocations"): "Kraken POSTs reads: current allocations",
    ("gemini", "/v1/staking/rewards"): "Gemini POSTs reads: staking rewards",
    ("gemini", "/v1/staking/history"): "Gemini POSTs reads: staking history",
    ("gemini", "/v1/balances/staking"): "Gemini POSTs reads: staking balances",
    ("gemini", "/v1/balances/earn"): "Gemini POSTs reads: earn balances",
    ("gemini", "/v1/earn/interest"): "Gemini POSTs reads: earn interest",
    ("gemini", "/v1/earn/history"): "Gemini POSTs reads: earn history",
    ("bitstamp", "/api/v2/fees/withdrawal/"): "Bitstamp POSTs reads: withdrawal fees",
    ("bitstamp", "/api/v2/fees/withdrawal/X1/"): "Bitstamp POSTs reads: withdrawal fees",
    ("bitstamp", "/api/v2/withdrawal-requests/"): "Bitstamp POSTs reads: withdrawal history",
    ("bitstamp", "/api/v2/withdrawal/status/"): "Bitstamp POSTs reads: a withdrawal's status",
    ("cryptocom", "/exchange/v1/private/fiat/fiat-withdraw-history"): "Crypto.com POSTs reads: fiat history",
    ("kucoin", "/api/v1/margin/withdrawMargin"): "moves margin from a position to its own account (reduceMargin)",
    ("kucoin", "/api/v1/copy-trade/futures/position/margin/withdraw-margin"): "position margin, as above",
    ("kucoinfutures", "/api/v1/margin/withdrawMargin"): "moves margin from a position to its own account",
    ("kucoinfutures", "/api/v1/copy-trade/futures/position/margin/withdraw-margin"): "position margin, as above",
}
FUND_MOVING = re.compile(
    r"withdraw|transfer|sub-?_?account|subaccount|sub-?_?user|sub-?_?member|api-?_?key|loan|borrow|repay"
    r"|stake|staking|earn|convert|giftcard|p2p|c2c|otc|rfq|block_trade|address_book|move_positions|move-positions",
    re.IGNORECASE,
)
# Deribit's GETs write; every other exchange reads with GET.
GET_WRITES = {"deribit"}


def _fund_moving_writes(exchange_id):
    for request in CATALOGUE[exchange_id]:
        if not FUND_MOVING.search(request.path):
            continue
        if request.method == "GET" and exchange_id not in GET_WRITES:
            continue
        if exchange_id == "deribit" and request.path.rsplit("/", 1)[-1].startswith("get_"):
            continue  # Deribit's reads are its get_* methods
        if exchange_id == "bitfinex" and request.path.startswith(("/v2/auth/r/", "/v2/auth/calc/")):
            continue  # Bitfinex: r = read, w = write
        if exchange_id == "cryptocom" and request.path.rsplit("/", 1)[-1].startswith("get-"):
            continue  # Crypto.com POSTs its reads, all named get-*
        if (exchange_id, request.path) in NOT_FUND_MOVING:
            continue
        yield request


def test_the_catalogue_is_complete():
    # Every ccxt exchange yields its private endpoints (a broken bridge would silently yield none).
    counts = {name: len(requests) for name, requests in CATALOGUE.items()}
    assert all(count >= 45 for count in counts.values()), counts
    assert sum(counts.values()) > 5000


@pytest.mark.parametrize("exchange_id", CCXT_IDS)
def test_every_fund_moving_write_of_the_catalogue_is_forbidden(exchange_id):
    checked = 0
    for request in _fund_moving_writes(exchange_id):
        try:
            found = inspect(EXCHANGES[exchange_id], request)
        except RequestInvalid:  # ccxt's JSON body for MEXC's broker and retired v2 APIs, which the agent refuses
            assert exchange_id == "mexc", request
            found = inspect(EXCHANGES[exchange_id], req(request.method, request.path))
        assert found.forbidden in CATEGORIES, (request.method, request.path)
        assert found.forbidden_why and request.path in found.forbidden_why
        checked += 1
    assert checked >= 3, f"{exchange_id}: only {checked} fund-moving writes found in ccxt's catalogue"


@pytest.mark.parametrize("exchange_id", CCXT_IDS)
def test_the_exceptions_are_allowed_and_not_stale(exchange_id):
    paths = {request.path for request in CATALOGUE[exchange_id]}
    for (name, path), reason in NOT_FUND_MOVING.items():
        if name != exchange_id:
            continue
        assert path in paths, f"stale exception {path} ({reason})"
        request = next(r for r in CATALOGUE[exchange_id] if r.path == path)
        assert inspect(EXCHANGES[exchange_id], request).forbidden is None, (path, reason)


@pytest.mark.parametrize(
    "exchange_id, method, path, category",
    [
        ("binance", "POST", "/sapi/v1/capital/withdraw/apply", "withdrawal"),
        ("binance", "POST", "/sapi/v1/asset/transfer", "transfer"),
        ("binance", "POST", "/sapi/v1/sub-account/virtualSubAccount", "sub-account"),
        ("binance", "POST", "/sapi/v1/margin/borrow-repay", "margin-borrow"),
        ("binance", "POST", "/sapi/v1/simple-earn/flexible/subscribe", "earn"),
        ("binance", "POST", "/sapi/v1/convert/acceptQuote", "convert"),
        ("binance", "POST", "/sapi/v1/giftcard/createCode", "payment"),
        ("binance", "POST", "/eapi/v1/block/order/execute", "block-trade"),
        ("binance", "POST", "/sapi/v1/loan/borrow", "loan"),
        ("okx", "POST", "/api/v5/asset/transfer", "transfer"),
        ("okx", "POST", "/api/v5/asset/withdrawal-lightning", "withdrawal"),
        ("okx", "POST", "/api/v5/account/move-positions", "transfer"),
        ("okx", "POST", "/api/v5/rfq/execute-quote", "block-trade"),
        ("okx", "POST", "/api/v5/users/subaccount/modify-apikey", "api-key-management"),
        ("kucoin", "POST", "/api/v2/sub/user/created", "sub-account"),
        ("kucoin", "POST", "/api/v1/broker/nd/account", "sub-account"),
        ("bitget", "POST", "/api/v3/user/create-sub-api", "api-key-management"),
        ("kraken", "POST", "/0/private/WalletTransfer", "transfer"),
        ("kraken", "POST", "/0/private/Withdraw", "withdrawal"),
        ("kraken", "POST", "/0/private/GetWebSocketsToken", "session-token"),
        ("kraken", "POST", "/0/private/Earn/Allocate", "earn"),
        ("bitfinex", "POST", "/v2/auth/w/transfer", "transfer"),
        ("bitfinex", "POST", "/v2/auth/w/funding/offer/submit", "earn"),
        ("bitfinex", "POST", "/v2/auth/w/token", "api-key-management"),
        ("gemini", "POST", "/v1/account/create", "sub-account"),
        ("gemini", "POST", "/v1/approvedAddresses/ethereum/request", "withdrawal"),
        ("gemini", "POST", "/v1/clearing/new", "block-trade"),
        ("bybit", "POST", "/v5/asset/transfer/inter-transfer", "transfer"),
        ("bybit", "POST", "/v5/user/update-api", "api-key-management"),
        ("bybit", "GET", "/v5/user/del-submember", "sub-account"),
        ("bybit", "POST", "/v5/asset/exchange/quote-apply", "convert"),
        ("mexc", "POST", "/api/v3/capital/withdraw", "withdrawal"),
        ("coinbase", "POST", "/v2/accounts/abc/transactions", "withdrawal"),
        ("coinbase", "POST", "/api/v3/brokerage/portfolios/move_funds", "transfer"),
        ("coinbase", "POST", "/api/v3/brokerage/intx/allocate", "transfer"),
        ("bitstamp", "POST", "/api/v2/btc_withdrawal/", "withdrawal"),
        ("bitstamp", "POST", "/api/v2/transfer-to-main/", "transfer"),
        ("cryptocom", "POST", "/exchange/v1/private/create-withdrawal", "withdrawal"),
        ("deribit", "GET", "/api/v2/private/withdraw", "withdrawal"),
        ("deribit", "GET", "/api/v2/private/submit_transfer_to_user", "transfer"),
        ("deribit", "GET", "/api/v2/private/list_api_keys", "api-key-management"),
        ("deribit", "GET", "/api/v2/private/add_to_address_book", "withdrawal"),
        ("gate", "POST", "/api/v4/wallet/transfers", "transfer"),
        ("gate", "POST", "/api/v4/withdrawals/push", "withdrawal"),
        ("gate", "POST", "/api/v4/push", "withdrawal"),
        ("htx", "POST", "/v1/dw/withdraw/api/create", "withdrawal"),
        ("htx", "POST", "/v1/margin/orders", "margin-borrow"),
        ("htx", "POST", "/linear-swap-api/v1/swap_transfer_inner", "transfer"),
        ("htx", "POST", "/v2/sub-user/api-key-generation", "api-key-management"),
        ("binancetr", "POST", "/sapi/v1/capital/withdraw/apply", "withdrawal"),
    ],
)
def test_named_fund_moving_endpoints(exchange_id, method, path, category):
    found = facts(exchange_id, method, path)
    assert found.forbidden == category, found
    assert found.forbidden_why.startswith(f"path {path} ")


@pytest.mark.parametrize(
    "exchange_id, method, path",
    [
        ("binance", "GET", "/sapi/v1/capital/withdraw/history"),
        ("binance", "GET", "/sapi/v1/capital/deposit/address"),
        ("okx", "GET", "/api/v5/asset/transfer-state"),
        ("kraken", "POST", "/0/private/WithdrawStatus"),
        ("kraken", "POST", "/0/private/DepositAddresses"),
        ("bitfinex", "POST", "/v2/auth/w/deposit/address"),
        ("gemini", "POST", "/v1/deposit/bitcoin/newAddress"),
        ("bitstamp", "POST", "/api/v2/btc_address/"),
        ("bitstamp", "POST", "/api/v2/withdrawal-requests/"),
        ("deribit", "GET", "/api/v2/private/get_transfers"),
        ("deribit", "GET", "/api/v2/private/create_deposit_address"),
        ("gate", "GET", "/api/v4/wallet/withdrawals"),
        ("okx", "POST", "/api/v5/tradingBot/signal/sub-order"),
        ("kucoin", "POST", "/api/v1/margin/withdrawMargin"),
        ("cryptocom", "POST", "/exchange/v1/private/get-withdrawal-history"),
    ],
)
def test_reads_and_deposit_addresses_are_allowed(exchange_id, method, path):
    assert own_forbidden(facts(exchange_id, method, path), exchange_id) is None


def test_api_key_reads_are_forbidden_too():
    # Deribit's list_api_keys returns the keys' secrets; Kraken's GetApiKeyInfo is refused with it.
    assert facts("deribit", "GET", "/api/v2/private/list_api_keys").forbidden == "api-key-management"
    assert facts("okx", "GET", "/api/v5/users/subaccount/apikey").forbidden == "api-key-management"


def test_deribit_json_rpc_method_is_an_endpoint_too():
    body = raw({"jsonrpc": "2.0", "id": 1, "method": "private/withdraw",
                "params": {"currency": "BTC", "address": "bc1q", "amount": 1}})
    found = facts("deribit", "POST", "/api/v2/private/buy", body=body)
    assert found.forbidden == "withdrawal"
    assert "JSON-RPC method private/withdraw" in found.forbidden_why
    read = raw({"jsonrpc": "2.0", "id": 1, "method": "private/get_transfers", "params": {"currency": "BTC"}})
    assert own_forbidden(facts("deribit", "POST", "/api/v2", body=read), "deribit") is None
    # A body naming another method than the path: the endpoint allow-list would see only the path.
    buy = raw({"jsonrpc": "2.0", "id": 1, "method": "private/buy", "params": {"instrument_name": "BTC-PERPETUAL",
                                                                           "amount": 10}})
    found = facts("deribit", "POST", "/api/v2/private/get_positions", body=buy)
    assert found.forbidden == "ambiguous-endpoint" and "private/buy" in found.forbidden_why
    assert found.orders == (order("BTC-PERPETUAL", 10),)
    assert own_forbidden(facts("deribit", "POST", "/api/v2/private/buy/", body=buy), "deribit") is None


# -- case and trailing-slash spellings ------------------------------------------------------------

SPELLINGS = [
    ("binance", "POST", "/sapi/v1/capital/withdraw/apply"),
    ("okx", "POST", "/api/v5/asset/transfer"),
    ("kucoin", "POST", "/api/v1/withdrawals"),
    ("bitget", "POST", "/api/v2/spot/wallet/transfer"),
    ("kraken", "POST", "/0/private/WalletTransfer"),
    ("bitfinex", "POST", "/v2/auth/w/withdraw"),
    ("gemini", "POST", "/v1/account/transfer/btc"),
    ("bybit", "POST", "/v5/asset/withdraw/create"),
    ("mexc", "POST", "/api/v3/capital/transfer"),
    ("coinbase", "POST", "/api/v3/brokerage/portfolios/move_funds"),
    ("bitstamp", "POST", "/api/v2/transfer-from-main/"),
    ("cryptocom", "POST", "/exchange/v1/private/create-subaccount-transfer"),
    ("deribit", "GET", "/api/v2/private/submit_transfer_to_subaccount"),
    ("gate", "POST", "/api/v4/wallet/sub_account_transfers"),
    ("htx", "POST", "/v1/dw/withdraw/api/create"),
    ("gate", "POST", "/api/v4/push"),
    ("kraken", "POST", "/0/private/CreateSubaccount"),
]


@pytest.mark.parametrize("exchange_id, method, path", SPELLINGS)
def test_case_and_trailing_slash_variants_are_forbidden(exchange_id, method, path):
    expected = facts(exchange_id, method, path).forbidden
    assert expected is not None
    stripped = path.rstrip("/")
    for variant in {path.upper(), path.lower(), stripped + "/", stripped, stripped.swapcase() + "/"}:
        assert facts(exchange_id, method, variant).forbidden == expected, variant


def test_order_endpoints_are_found_under_other_spellings_too():
    body = raw({"instId": "BTC-USDT", "side": "buy", "ordType": "limit", "sz": "2", "px": "1"})
    for path in ("/API/V5/TRADE/ORDER", "/api/v5/trade/order/"):
        assert facts("okx", "POST", path, body=body).orders == (order("BTC-USDT", 2),)
    assert facts("bitstamp", "POST", "/API/V2/BUY/BTCUSD", body=(("amount", "3"), ("price", "1"))).orders == (
        order("BTCUSD", 3),
    )


# -- parameters of forbidden endpoints on other paths (path not bound) -------------------------

WITHDRAW_PARAMS = (("coin", "BTC"), ("address", "bc1qattacker"), ("amount", "1.5"))


@pytest.mark.parametrize("exchange_id", ["binance", "binanceusdm", "binanceus", "binancetr", "mexc"])
def test_withdrawal_parameters_on_the_order_path_are_forbidden(exchange_id):
    for method in ("GET", "POST", "DELETE"):
        found = facts(exchange_id, method, "/api/v3/order", query=WITHDRAW_PARAMS)
        assert found.forbidden == "withdrawal"
        assert "parameters address, amount, coin" in found.forbidden_why
        assert "signs only the parameters, so the path is not bound" in found.forbidden_why
    # In a form body, and spelled in capitals: still the same parameters to the exchange.
    found = facts(exchange_id, "POST", "/api/v3/order", body=RawBody("COIN=BTC&Address=bc1q&AMOUNT=1"))
    assert found.forbidden == "withdrawal"


def test_bybit_withdrawal_parameters_on_the_order_path():
    body = raw({"coin": "USDT", "chain": "TRX", "address": "T9yD", "amount": "1000", "timestamp": 1})
    found = facts("bybit", "POST", "/v5/order/create", body=body)
    assert found.forbidden == "withdrawal"
    assert "parameters address, amount, coin" in found.forbidden_why and "path is not bound" in found.forbidden_why
    transfer = raw({"transferId": "x", "coin": "USDT", "amount": "5", "fromAccountType": "UNIFIED",
                    "toAccountType": "FUND"})
    assert facts("bybit", "POST", "/v5/order/create", body=transfer).forbidden == "transfer"
    # A GET signs the query string, which cannot be replayed as a POST's JSON body.
    assert facts("bybit", "GET", "/v5/asset/transfer/query-inter-transfer-list",
                 query=(("transferId", "x"), ("coin", "USDT"))).forbidden is None


def test_htx_post_body_parameters_are_inspected():
    body = raw({"address": "0xattacker", "amount": "100", "currency": "usdt", "chain": "trc20usdt"})
    found = facts("htx", "POST", "/v1/order/orders/place", body=body)
    assert found.forbidden == "withdrawal"
    assert "HTX does not sign POST bodies" in found.forbidden_why
    futures = raw({"currency": "btc", "amount": "1", "type": "pro-to-futures"})
    assert facts("htx", "POST", "/v1/order/orders/place", body=futures).forbidden == "transfer"
    sub = raw({"sub-uid": "1", "currency": "usdt", "amount": "1", "type": "master-transfer-out"})
    assert facts("htx", "POST", "/linear-swap-api/v1/swap_order", body=sub).forbidden == "sub-account"


@pytest.mark.parametrize(
    "exchange_id, params, category",
    [
        ("binance", (("type", "MAIN_UMFUTURE"), ("asset", "USDT"), ("amount", "10")), "transfer"),
        ("binance", (("toEmail", "a@b"), ("asset", "USDT"), ("amount", "10")), "sub-account"),
        ("binance", (("fromAsset", "BTC"), ("toAsset", "SHIB"), ("fromAmount", "1")), "convert"),
        ("binance", (("quoteId", "12345"),), "convert"),
        ("binance", (("productId", "USDT001"), ("amount", "10")), "earn"),
        ("binance", (("loanCoin", "USDT"), ("collateralCoin", "BTC")), "loan"),
        ("binance", (("blockOrderMatchingKey", "k"),), "block-trade"),
        ("binanceusdm", (("asset", "USDT"), ("amount", "10"), ("type", "1")), "transfer"),
        ("mexc", (("fromAccountType", "SPOT"), ("toAccountType", "FUTURES"), ("asset", "USDT"), ("amount", "1")),
         "transfer"),
        ("mexc", (("subAccount", "bot2"), ("note", "x")), "sub-account"),
    ],
)
def test_other_forbidden_parameter_sets_on_the_order_path(exchange_id, params, category):
    found = facts(exchange_id, "POST", "/api/v3/order", query=params)
    assert found.forbidden == category, found
    assert found.forbidden_why.startswith("parameters ")


def test_withdrawal_parameters_anywhere_on_path_bound_exchanges():
    body = raw({"instId": "BTC-USDT", "toAddr": "x", "amt": "1", "ccy": "BTC", "dest": "4"})
    assert facts("okx", "POST", "/api/v5/trade/order", body=body).forbidden == "withdrawal"
    kraken = RawBody("asset=XBT&key=mine&amount=1")
    assert facts("kraken", "POST", "/0/private/AddOrder", body=kraken).forbidden == "withdrawal"
    gate = raw({"currency": "USDT", "address": "0x1", "amount": "5", "chain": "ETH"})
    assert facts("gate", "POST", "/api/v4/spot/orders", body=gate).forbidden == "withdrawal"
    # The why of a path-bound exchange makes no claim about path binding.
    assert "not bound" not in facts("gate", "POST", "/api/v4/spot/orders", body=gate).forbidden_why


# -- ccxt's trading methods ---------------------------------------------------------------------


BINANCE_INFO = {"orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"]}
# exchange: (market, ccxt options, symbol as the rules report it, amount ccxt is given)
TRADING = {
    "binance": ({"id": "BTCUSDT", "symbol": "BTC/USDT", "info": BINANCE_INFO}, {}, "BTCUSDT"),
    "binanceus": ({"id": "BTCUSDT", "symbol": "BTC/USDT", "info": BINANCE_INFO}, {}, "BTCUSDT"),
    "binanceusdm": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                     "inverse": False, "contractSize": 1, "info": BINANCE_INFO}, {}, "BTCUSDT"),
    "okx": ({"id": "BTC-USDT", "symbol": "BTC/USDT", "info": {"instType": "SPOT"}}, {}, "BTC-USDT"),
    "kucoin": ({"id": "BTC-USDT", "symbol": "BTC/USDT", "info": {"quoteIncrement": "0.01"}}, {"uta": False},
               "BTC-USDT"),
    "kucoinfutures": ({"id": "XBTUSDTM", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                       "inverse": False, "contractSize": 0.001}, {"uta": False}, "XBTUSDTM"),
    "bitget": ({"id": "BTCUSDT", "symbol": "BTC/USDT"}, {}, "BTCUSDT"),
    "kraken": ({"id": "XXBTZUSD", "symbol": "BTC/USD", "extra": {"altname": "XBTUSD"}}, {}, "XXBTZUSD"),
    "bitfinex": ({"id": "tBTCUSD", "symbol": "BTC/USD"}, {}, "TBTCUSD"),
    "gemini": ({"id": "btcusd", "symbol": "BTC/USD"}, {}, "BTCUSD"),
    "bybit": ({"id": "BTCUSDT", "symbol": "BTC/USDT"}, {"enableUnifiedMargin": False, "enableUnifiedAccount": True},
              "BTCUSDT"),
    "mexc": ({"id": "BTCUSDT", "symbol": "BTC/USDT"}, {}, "BTCUSDT"),
    "coinbase": ({"id": "BTC-USD", "symbol": "BTC/USD"}, {}, "BTC-USD"),
    "bitstamp": ({"id": "btcusd", "symbol": "BTC/USD"}, {}, "BTCUSD"),
    "cryptocom": ({"id": "BTC_USDT", "symbol": "BTC/USDT"}, {}, "BTC_USDT"),
    "deribit": ({"id": "BTC-PERPETUAL", "symbol": "BTC/USD:BTC", "type": "swap", "settle": "BTC", "linear": False,
                 "inverse": True, "contractSize": 10}, {}, "BTC-PERPETUAL"),
    "gate": ({"id": "BTC_USDT", "symbol": "BTC/USDT"}, {}, "BTC_USDT"),
    "htx": ({"id": "btcusdt", "symbol": "BTC/USDT"}, {}, "BTCUSDT"),
}


def _trading(exchange_id):
    market, options, reported = TRADING[exchange_id]
    exchange, calls = ccxt_calls(exchange_id, market, options)
    if exchange_id == "htx":  # the spot account id, which ccxt otherwise fetches first
        exchange.accounts = [{"id": "123", "type": "spot", "code": None, "info": {"id": 123, "type": "spot"}}]
        exchange.accountsById = exchange.index_by(exchange.accounts, "id")
    return market["symbol"], reported, calls


@pytest.mark.parametrize("exchange_id", sorted(TRADING))
def test_ccxt_trading_calls_are_not_forbidden_and_orders_read_back(exchange_id):
    symbol, reported, calls = _trading(exchange_id)
    # Bybit's fetchOrder refuses without an acknowledgement; its fetchOpenOrder reads the same order.
    fetch_order = "fetch_open_order" if exchange_id == "bybit" else "fetch_order"
    reads = [("cancel_order", "1", symbol), ("fetch_balance",), (fetch_order, "1", symbol),
             ("fetch_my_trades", symbol), ("fetch_open_orders", symbol)]
    seen = 0
    for method, *args in reads:
        for request in calls(method, *args):
            found = inspect(EXCHANGES[exchange_id], request)
            assert own_forbidden(found, exchange_id) is None, (method, request.path, found.forbidden_why)
            assert found.orders == (), (method, request.path)
            assert set(found.symbols) <= {reported}, (method, found.symbols)
            seen += 1
    assert seen >= 4

    amount = 1 if exchange_id == "kucoinfutures" else 0.01  # KuCoin futures: whole contracts
    limit = calls("create_order", symbol, "limit", "buy", amount, 50000)
    placing = [(r, inspect(EXCHANGES[exchange_id], r)) for r in limit]
    assert all(own_forbidden(found, exchange_id) is None for _, found in placing), placing
    orders = [found.orders for _, found in placing if found.orders]
    assert orders == [(order(reported, str(amount)),)], (exchange_id, placing)
    assert reported in placing[-1][1].symbols
    if exchange_id in PRICED:  # the notional budgets read quantity x price where that is the notional
        (placed,) = orders[0]
        assert (placed.price, placed.side, placed.notional) == (50000, "buy", Decimal(str(amount)) * 50000)


# Readers that give a limit order's price (agent.rules.facts.OrderFacts.price): base-sized orders.
PRICED = {"binance", "binanceusdm", "binanceus", "mexc", "kucoin"}


BATCH = [
    {"symbol": None, "type": "limit", "side": "buy", "amount": 0.01, "price": 50000},
    {"symbol": None, "type": "limit", "side": "sell", "amount": 0.02, "price": 60000},
]


@pytest.mark.parametrize(
    "exchange_id", ["binanceusdm", "okx", "kucoin", "bitget", "kraken", "bitfinex", "bybit", "mexc", "cryptocom",
                    "gate", "htx"],
)
def test_ccxt_batch_orders_read_back_one_by_one(exchange_id):
    symbol, reported, calls = _trading(exchange_id)
    batch = [dict(o, symbol=symbol) for o in BATCH]
    requests = calls("create_orders", batch)
    found = [inspect(EXCHANGES[exchange_id], r) for r in requests]
    assert all(own_forbidden(f, exchange_id) is None for f in found)
    assert [f.orders for f in found if f.orders] == [(order(reported, "0.01"), order(reported, "0.02"))]


@pytest.mark.parametrize(
    "exchange_id", ["binanceusdm", "okx", "bitget", "kraken", "bitfinex", "cryptocom", "coinbase", "deribit"],
)
def test_ccxt_edits_read_back_their_new_size(exchange_id):
    symbol, reported, calls = _trading(exchange_id)
    found = [inspect(EXCHANGES[exchange_id], r) for r in calls("edit_order", "1", symbol, "limit", "buy", 0.03, 51000)]
    assert all(own_forbidden(f, exchange_id) is None for f in found)
    sizes = [o.quantity for f in found for o in f.orders]
    assert sizes == [Decimal("0.03")], found


@pytest.mark.parametrize(
    "exchange_id, expected",
    [
        # Market buys sized by what they spend: ccxt computes amount * price as the quote amount.
        ("bybit", order("BTCUSDT", None, 500)),
        ("bitget", order("BTCUSDT", None, 500)),
        ("gate", order("BTC_USDT", None, 500)),
        ("htx", order("BTCUSDT", None, 500)),
        ("mexc", order("BTCUSDT", None, 500)),
        ("coinbase", order("BTC-USD", None, 500)),
        ("okx", order("BTC-USDT", "0.01")),  # ccxt sends tgtCcy=base_ccy
        ("kraken", order("XXBTZUSD", "0.01")),
        ("binance", order("BTCUSDT", None, 500)),  # ccxt sends quoteOrderQty = amount * price
    ],
)
def test_ccxt_market_buys_read_back_in_the_right_unit(exchange_id, expected):
    symbol, _, calls = _trading(exchange_id)
    found = [inspect(EXCHANGES[exchange_id], r) for r in calls("create_order", symbol, "market", "buy", 0.01, 50000)]
    assert [o for f in found for o in f.orders] == [expected]


# ccxt's withdraw() and transfer(): the requests themselves are forbidden, and on exchanges that do
# not bind the path their parameters are forbidden on the order endpoint too.
ORDER_PATHS = {"binance": "/api/v3/order", "binanceus": "/api/v3/order", "binanceusdm": "/fapi/v1/order",
               "mexc": "/api/v3/order", "bybit": "/v5/order/create", "htx": "/v1/order/orders/place"}
WITHDRAW_EXTRA = {"bitget": {"network": "TRC20"}, "bitfinex": {"network": "TRC20"}, "kraken": {"key": "mine"}}
NO_CCXT_WITHDRAW = {"coinbase"}  # ccxt looks the account up first
NO_CCXT_TRANSFER = {"cryptocom", "gemini", "bitstamp"}  # not supported by ccxt between spot and futures


def _with_currencies(exchange_id):
    market, options, _ = TRADING[exchange_id]
    exchange, calls = ccxt_calls(exchange_id, market, options)
    lower = exchange_id in ("htx", "gemini", "bitstamp")
    currencies = [{"id": code.lower() if lower else code, "code": code, "name": code, "active": True, "info": {},
                   "precision": 1e-8 if exchange.precisionMode == TICK_SIZE else 8, "networks": {}, "fee": None,
                   "deposit": True, "withdraw": True, "limits": {"amount": {"min": None, "max": None},
                                                                 "withdraw": {"min": None, "max": None}}}
                  for code in ("USDT", "BTC", "USD")]
    currencies[0]["networks"] = {"TRC20": {"id": "tetheruso", "network": "TRC20", "info": {}}}
    exchange.currencies = exchange.index_by(currencies, "code")
    exchange.currencies_by_id = exchange.index_by(currencies, "id")
    if exchange_id == "htx":
        exchange.accounts = [{"id": "123", "type": "spot", "code": None, "info": {"id": 123, "type": "spot"}}]
        exchange.accountsById = exchange.index_by(exchange.accounts, "id")
    return calls


@pytest.mark.parametrize("exchange_id", sorted(TRADING))
def test_ccxt_withdraw_and_transfer_are_forbidden(exchange_id):
    calls = _with_currencies(exchange_id)
    sent = []
    if exchange_id not in NO_CCXT_WITHDRAW:
        sent += calls("withdraw", "USDT", 10, "TAddressXYZ123", params=WITHDRAW_EXTRA.get(exchange_id, {}))
    if exchange_id not in NO_CCXT_TRANSFER:
        sent += calls("transfer", "USDT", 10, "spot", "future")
    moving = [r for r in sent if inspect(EXCHANGES[exchange_id], r).forbidden]
    assert len(moving) == 2 - (exchange_id in NO_CCXT_WITHDRAW) - (exchange_id in NO_CCXT_TRANSFER), sent
    assert all(inspect(EXCHANGES[exchange_id], r).forbidden in ("withdrawal", "transfer", "sub-account") for r in moving)
    order_path = ORDER_PATHS.get(exchange_id)
    if order_path is None:
        return
    for request in moving:  # the same signed parameters, sent to the order endpoint
        replayed = inspect(EXCHANGES[exchange_id], req(request.method, order_path, request.query, request.body))
        assert replayed.forbidden == inspect(EXCHANGES[exchange_id], request).forbidden, request
        assert replayed.forbidden_why.startswith("parameters ")


# -- account and position settings on exchanges that do not sign the path --------------------------

UNBOUND_CCXT = [name for name in CCXT_IDS if not EXCHANGES[name].rules.path_bound and name != "htx"]  # HTX signs the path
# ccxt's catalogue: every write whose path names an account or position setting is account-settings.
SETTINGS = re.compile(
    r"leverage|margintype|margin[-_]?mode|positionside/dual|position[-_]?mode|switch-mode|switch-isolated|multiassets"
    r"|risk-?limit|risk_level|auto[-_]?add|add-margin|change_margin|positionmargin|collateral-switch|hedging-mode"
    r"|bnbburn|feeburn|mxdeduct|delta-mode|upgrade-to-uta|cross-margin-trade/switch|isolated/account|limit-px",
    re.IGNORECASE,
)
NOT_SETTINGS = {
    "/fapi/v1/positionMargin": "transfer: {symbol, amount, type} fall under Binance's `amount` rule (position margin)",
    "/dapi/v1/positionMargin": "transfer: as /fapi/v1/positionMargin",
    "/unified/v3/private/position/tpsl/switch-mode": "TP/SL mode: orders carry tpslMode, retired v3 API",
}


def _setting_writes(exchange_id):
    for request in CATALOGUE[exchange_id]:
        # Fund-moving paths (a broker's sub-account BNB-burn switch...) are their own family, tested above.
        if request.method != "GET" and SETTINGS.search(request.path) and not FUND_MOVING.search(request.path):
            yield request


@pytest.mark.parametrize("exchange_id", UNBOUND_CCXT)
def test_every_account_setting_write_of_the_catalogue_is_account_settings(exchange_id):
    checked = 0
    for request in _setting_writes(exchange_id):
        found = inspect(EXCHANGES[exchange_id], request)
        if request.path in NOT_SETTINGS:
            assert found.forbidden is None, (request.path, found.forbidden_why)
            continue
        assert found.forbidden == "account-settings", (request.method, request.path, found.forbidden)
        assert request.path in found.forbidden_why
        checked += 1
    assert checked >= 5, f"{exchange_id}: only {checked} account-setting writes found in ccxt's catalogue"


def test_reads_of_settings_are_allowed():
    for exchange_id, path in (("binanceusdm", "/fapi/v1/positionSide/dual"), ("binanceusdm", "/fapi/v1/multiAssetsMargin"),
                              ("binance", "/sapi/v1/margin/isolated/account"), ("binance", "/sapi/v1/bnbBurn"),
                              ("mexc", "/api/v1/private/position/position_mode"), ("bybit", "/v5/account/info")):
        assert facts(exchange_id, "GET", path).forbidden is None, path


SWAPS = {
    "binanceusdm": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                     "inverse": False, "contractSize": 1, "info": BINANCE_INFO}, {}),
    "bybit": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
               "inverse": False, "contractSize": 1}, {"enableUnifiedMargin": False, "enableUnifiedAccount": True}),
    "bybit-classic": ({"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
                       "inverse": False, "contractSize": 1},
                      {"enableUnifiedMargin": False, "enableUnifiedAccount": False}),
    "mexc": ({"id": "BTC_USDT", "symbol": "BTC/USDT:USDT", "type": "swap", "settle": "USDT", "linear": True,
              "inverse": False, "contractSize": 0.0001}, {}),
}

# ccxt's own account-setting methods, named: each request is refused by its path, and the same signed
# parameters sent to the order endpoint are refused by the parameter rules -- or not, where an order
# carries the same parameters (the residual agent/rules/forbidden.py's docstring names).
CCXT_SETTINGS = [
    # (swap, method, args, params, category at its own path, category of its parameters on the order path)
    ("binanceusdm", "set_leverage", (20,), {}, "account-settings", "account-settings"),
    ("binanceusdm", "set_margin_mode", ("isolated",), {}, "account-settings", "account-settings"),
    ("binanceusdm", "set_position_mode", (True,), {}, "account-settings", "account-settings"),
    ("binanceusdm", "add_margin", (10,), {}, "transfer", "transfer"),  # Binance's `amount` rule
    ("binanceusdm", "reduce_margin", (10,), {}, "transfer", "transfer"),
    ("bybit", "set_leverage", (20,), {}, "account-settings", "account-settings"),
    ("bybit", "set_margin_mode", ("isolated",), {}, "account-settings", "account-settings"),  # UTA: setMarginMode
    ("bybit-classic", "set_margin_mode", ("isolated",), {"leverage": 5}, "account-settings", "account-settings"),
    ("bybit", "set_position_mode", (True,), {}, "account-settings", "account-settings"),
    ("mexc", "set_leverage", (20,), {"positionId": 7}, "account-settings", "account-settings"),
    ("mexc", "set_leverage", (20,), {"openType": 1, "positionType": 1}, "account-settings", "account-settings"),
    ("mexc", "set_margin_mode", ("isolated",), {"leverage": 5, "direction": "long"}, "account-settings",
     "account-settings"),
    ("mexc", "add_margin", (10,), {"positionId": 7}, "account-settings", "account-settings"),
    ("mexc", "reduce_margin", (10,), {"positionId": 7}, "account-settings", "account-settings"),
    # Residual: {positionMode} is also a hedged order's; refused at its path only.
    ("mexc", "set_position_mode", (True,), {}, "account-settings", None),
]
SWAP_ORDER_PATHS = {"binanceusdm": "/fapi/v1/order", "bybit": "/v5/order/create", "bybit-classic": "/v5/order/create",
                    "mexc": "/api/v1/private/order/create"}


@pytest.mark.parametrize("swap, method, args, params, category, replayed", CCXT_SETTINGS)
def test_ccxt_account_setting_methods_are_refused(swap, method, args, params, category, replayed):
    exchange_id = swap.split("-")[0]
    market, options = SWAPS[swap]
    _, calls = ccxt_calls(exchange_id, market, options)
    if method in ("add_margin", "reduce_margin"):  # (symbol, amount); the others take (value, symbol)
        requests = calls(method, market["symbol"], *args, params=params)
    else:
        requests = calls(method, *args, market["symbol"], params=params)
    assert requests, (swap, method)
    for request in requests:
        found = inspect(EXCHANGES[exchange_id], request)
        assert found.forbidden == category, (method, request.path, found.forbidden_why)
        # The same signature, sent to the order endpoint (the path is not signed).
        again = inspect(EXCHANGES[exchange_id], req(request.method, SWAP_ORDER_PATHS[swap], request.query, request.body))
        assert again.forbidden == replayed, (method, request, again.forbidden_why)
        if replayed:
            assert again.forbidden_why.startswith("parameters ")


def test_a_settings_path_does_not_shelter_fund_moving_parameters():
    # A key that allows account-settings (to set leverage) must not get a withdrawal's or a
    # transfer's parameters signed by sending them to the leverage endpoint.
    found = facts("binanceusdm", "POST", "/fapi/v1/leverage", query=WITHDRAW_PARAMS)
    assert found.forbidden == "withdrawal"
    assert "parameters address, amount, coin" in found.forbidden_why
    assert [category for category, _ in found.violations] == ["withdrawal", "account-settings"]
    assert "/fapi/v1/leverage" in found.violations[1][1]
    bybit = raw({"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "5", "sellLeverage": "5",
                 "fromAccountType": "UNIFIED", "toAccountType": "FUND", "coin": "USDT", "amount": "5"})
    assert facts("bybit", "POST", "/v5/position/set-leverage", body=bybit).forbidden == "transfer"
    # Settings parameters alone on the settings path: account-settings, by the path.
    assert facts("bybit", "POST", "/v5/position/set-leverage", body=raw({
        "category": "linear", "symbol": "BTCUSDT", "buyLeverage": "5", "sellLeverage": "5"})).forbidden == (
        "account-settings")
    # A fund-moving path carrying settings parameters: the fund-moving category.
    assert facts("binance", "POST", "/sapi/v1/asset/transfer", query=(("symbol", "BTCUSDT"), ("leverage", "20"))
                 ).forbidden == "transfer"
    # Orders on a settings path are still read as orders.
    order_on_settings = facts("bybit", "POST", "/v5/position/set-leverage", body=raw({
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "8"}))
    assert order_on_settings.forbidden == "account-settings" and order_on_settings.orders == (order("BTCUSDT", 8),)



# -- symbols ------------------------------------------------------------------------------------


def test_symbols_from_query_form_json_nested_and_path():
    assert facts("binance", "GET", "/api/v3/ticker/price", query=(("symbols", '["BTCUSDT","ethusdt"]'),)).symbols == (
        "BTCUSDT", "ETHUSDT")
    assert facts("binance", "POST", "/api/v3/order", body=RawBody("symbol=bnbusdt&side=BUY&quantity=1")).symbols == (
        "BNBUSDT",)
    batch = json.dumps([{"symbol": "BTCUSDT", "side": "BUY", "quantity": "1"}, {"symbol": "XRPUSDT", "side": "SELL"}])
    assert facts("binanceusdm", "POST", "/fapi/v1/batchOrders", body=(("batchOrders", batch),)).symbols == (
        "BTCUSDT", "XRPUSDT")
    okx = raw([{"instId": "BTC-USDT", "sz": "1"}, {"instId": "eth-usdt-swap", "sz": "2"}])
    assert facts("okx", "POST", "/api/v5/trade/batch-orders", body=okx).symbols == ("BTC-USDT", "ETH-USDT-SWAP")
    assert facts("okx", "GET", "/api/v5/account/positions", query=(("instId", "BTC-USDT-SWAP,ETH-USDT-SWAP"),)
                 ).symbols == ("BTC-USDT-SWAP", "ETH-USDT-SWAP")
    kraken = raw({"pair": "XBTUSD", "orders": [{"volume": "1"}, {"volume": "2", "pair": "ETHUSD"}]})
    assert facts("kraken", "POST", "/0/private/AddOrderBatch", body=kraken).symbols == ("XBTUSD", "ETHUSD")
    bitfinex = raw({"ops": [["on", {"symbol": "tBTCUSD", "amount": "1"}],
                            ["on", {"symbol": "tETHUSD", "amount": "-2"}]]})
    assert facts("bitfinex", "POST", "/v2/auth/w/order/multi", body=bitfinex).symbols == ("TBTCUSD", "TETHUSD")
    assert facts("bitstamp", "POST", "/api/v2/sell/market/ethusd/", body=(("amount", "1"),)).symbols == ("ETHUSD",)
    assert facts("bitstamp", "POST", "/api/v2/open_orders/all/").symbols == ()
    assert facts("gate", "POST", "/api/v4/futures/usdt/positions/BTC_USDT/leverage").symbols == ("BTC_USDT",)
    price = raw({"market": "BTC_USDT", "trigger": {}, "put": {"side": "buy", "amount": "1", "price": "1"}})
    assert facts("gate", "POST", "/api/v4/spot/price_orders", body=price).symbols == ("BTC_USDT",)
    deribit = raw({"jsonrpc": "2.0", "method": "private/buy", "params": {"instrument_name": "ETH-PERPETUAL"}})
    assert facts("deribit", "POST", "/api/v2", body=deribit).symbols == ("ETH-PERPETUAL",)
    htx = raw({"orders_data": [{"contract_code": "btc-usd", "volume": 1}, {"contract_code": "eth-usd", "volume": 2}]})
    assert facts("htx", "POST", "/swap-api/v1/swap_batchorder", body=htx).symbols == ("BTC-USD", "ETH-USD")
    # Every spelling of the name counts, duplicates are dropped, order of appearance is kept.
    both = facts("binance", "GET", "/api/v3/openOrders", query=(("symbol", "BTCUSDT"), ("SYMBOL", "DOGEUSDT"),
                                                                ("pair", "btcusdt")))
    assert both.symbols == ("BTCUSDT", "DOGEUSDT")


# -- orders -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exchange_id, method, path, query, body, expected",
    [
        # OKX: tgtCcy decides a spot market order's unit; without it a market buy is reported both ways.
        ("okx", "POST", "/api/v5/trade/order", (), raw({"instId": "BTC-USDT", "side": "buy", "ordType": "market",
                                                          "sz": "100", "tgtCcy": "quote_ccy"}),
         [order("BTC-USDT", None, 100)]),
        ("okx", "POST", "/api/v5/trade/order", (), raw({"instId": "BTC-USDT", "side": "buy", "ordType": "market",
                                                          "sz": "100"}), [order("BTC-USDT", 100, 100)]),
        ("okx", "POST", "/api/v5/trade/order", (), raw({"instId": "BTC-USDT-SWAP", "side": "buy", "ordType": "market",
                                                          "sz": "3"}), [order("BTC-USDT-SWAP", 3)]),
        ("okx", "POST", "/api/v5/trade/amend-order", (), raw({"instId": "BTC-USDT", "ordId": "1", "newPx": "2"}), []),
        # Bybit: spot market buys are quote-sized unless marketUnit says baseCoin.
        ("bybit", "POST", "/v5/order/create", (), raw({"category": "spot", "symbol": "BTCUSDT", "side": "Buy",
                                                         "orderType": "Market", "qty": "50"}),
         [order("BTCUSDT", None, 50)]),
        ("bybit", "POST", "/v5/order/create", (), raw({"category": "spot", "symbol": "BTCUSDT", "side": "Buy",
                                                         "orderType": "Market", "qty": "1", "marketUnit": "baseCoin"}),
         [order("BTCUSDT", 1)]),
        ("bybit", "POST", "/v5/order/create", (), raw({"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                                                         "orderType": "Market", "qty": "1"}), [order("BTCUSDT", 1)]),
        ("bybit", "POST", "/v5/order/amend", (), raw({"category": "linear", "symbol": "BTCUSDT", "orderId": "1",
                                                        "qty": "4"}), [order("BTCUSDT", 4)]),
        # Binance-style order lists: each working/pending quantity is an order.
        ("binance", "POST", "/api/v3/orderList/oto", (("symbol", "BTCUSDT"), ("workingSide", "BUY"),
                                                       ("workingQuantity", "1"), ("pendingQuantity", "2")), None,
         [order("BTCUSDT", 1), order("BTCUSDT", 2)]),
        ("binance", "POST", "/api/v3/order", (("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "MARKET"),
                                               ("quoteOrderQty", "25")), None, [order("BTCUSDT", None, 25)]),
        # Orders are recognised by their parameters on any path of a path-unbound exchange.
        ("binance", "GET", "/api/v3/account", (("symbol", "BTCUSDT"), ("side", "BUY"), ("quantity", "9")), None,
         [order("BTCUSDT", 9)]),
        ("mexc", "GET", "/api/v3/openOrders", (("symbol", "BTCUSDT"), ("side", "SELL"), ("quantity", "7")), None,
         [order("BTCUSDT", 7)]),
        ("bybit", "POST", "/v5/position/trading-stop", (), raw({"category": "linear", "symbol": "BTCUSDT",
                                                                  "side": "Buy", "orderType": "Limit", "qty": "8"}),
         [order("BTCUSDT", 8)]),
        ("mexc", "POST", "/api/v1/private/order/submit", (), raw({"symbol": "BTC_USDT", "vol": 5, "side": 1}),
         [order("BTC_USDT", 5)]),
        ("mexc", "POST", "/api/v1/private/order/submit_batch", (), raw([{"symbol": "BTC_USDT", "vol": 1},
                                                                         {"symbol": "ETH_USDT", "vol": 2}]),
         [order("BTC_USDT", 1), order("ETH_USDT", 2)]),
        # KuCoin: size or funds; UTA by sizeUnit.
        ("kucoin", "POST", "/api/v1/hf/orders", (), raw({"symbol": "BTC-USDT", "side": "buy", "type": "market",
                                                          "funds": "10"}), [order("BTC-USDT", None, 10)]),
        ("kucoin", "POST", "/api/ua/v1/unified/order/place", (), raw({"symbol": "BTC-USDT", "side": "BUY",
                                                                       "size": "10", "sizeUnit": "QUOTECCY"}),
         [order("BTC-USDT", None, 10)]),
        ("kucoin", "POST", "/api/v1/hf/orders/alter", (), raw({"symbol": "BTC-USDT", "orderId": "1", "newSize": "3"}),
         [order("BTC-USDT", 3)]),
        ("kucoinfutures", "POST", "/api/v1/orders/multi", (), raw([{"symbol": "XBTUSDTM", "size": 2},
                                                                    {"symbol": "ETHUSDTM", "size": 3}]),
         [order("XBTUSDTM", 2), order("ETHUSDTM", 3)]),
        # Bitget margin: baseSize / quoteSize.
        ("bitget", "POST", "/api/v2/margin/crossed/place-order", (), raw({"symbol": "BTCUSDT", "side": "buy",
                                                                           "quoteSize": "40"}),
         [order("BTCUSDT", None, 40)]),
        ("bitget", "POST", "/api/v2/mix/order/place-order", (), raw({"symbol": "BTCUSDT", "side": "buy",
                                                                      "orderType": "market", "size": "2"}),
         [order("BTCUSDT", 2)]),
        # Kraken: viqc = volume in quote currency.
        ("kraken", "POST", "/0/private/AddOrder", (), RawBody("pair=XBTUSD&type=buy&ordertype=market&volume=30"
                                                               "&oflags=post,viqc"), [order("XBTUSD", None, 30)]),
        # Bitfinex: signed amounts; a delta hides the new size.
        ("bitfinex", "POST", "/v2/auth/w/order/submit", (), raw({"symbol": "tBTCUSD", "amount": "-0.5",
                                                                  "type": "LIMIT"}), [order("TBTCUSD", "0.5")]),
        ("bitfinex", "POST", "/v2/auth/w/order/update", (), raw({"id": 1, "delta": "5"}), [order(None)]),
        ("bitfinex", "POST", "/v2/auth/w/order/update", (), raw({"id": 1, "price": "5"}), []),
        ("gemini", "POST", "/v1/order/new", (), raw({"symbol": "btcusd", "amount": "2", "price": "1", "side": "buy",
                                                      "type": "exchange limit"}), [order("BTCUSD", 2)]),
        ("coinbase", "POST", "/api/v3/brokerage/orders", (), raw({
            "product_id": "BTC-USD", "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.2", "limit_price": "1"}}}),
         [order("BTC-USD", "0.2")]),
        ("bitstamp", "POST", "/api/v2/buy/instant/btcusd/", (), (("amount", "100"),), [order("BTCUSD", None, 100)]),
        ("bitstamp", "POST", "/api/v2/sell/instant/btcusd/", (), (("amount", "100"), ("amount_in_counter", "True")),
         [order("BTCUSD", None, 100)]),
        ("bitstamp", "POST", "/api/v2/sell/btcusd/", (), (("amount", "1.5"), ("price", "1")), [order("BTCUSD", "1.5")]),
        ("cryptocom", "POST", "/exchange/v1/private/create-order", (), raw({"instrument_name": "BTC_USDT",
                                                                            "side": "BUY", "notional": "12"}),
         [order("BTC_USDT", None, 12)]),
        ("deribit", "GET", "/api/v2/private/sell", (("instrument_name", "BTC-PERPETUAL"), ("contracts", "3")), None,
         [order("BTC-PERPETUAL")]),
        ("deribit", "POST", "/api/v2", (), raw({"jsonrpc": "2.0", "method": "private/mass_quote", "params": {
            "quotes": [{"instrument_name": "BTC-PERPETUAL", "bid": {"amount": 10, "price": 1},
                        "ask": {"amount": 20, "price": 2}}]}}),
         [order("BTC-PERPETUAL", 10), order("BTC-PERPETUAL", 20)]),
        # Gate: a market buy spends quote; futures sizes are signed contracts.
        ("gate", "POST", "/api/v4/spot/orders", (), raw({"currency_pair": "BTC_USDT", "type": "market",
                                                          "side": "buy", "amount": "20"}),
         [order("BTC_USDT", None, 20)]),
        ("gate", "POST", "/api/v4/futures/usdt/orders", (), raw({"contract": "BTC_USDT", "size": -7}),
         [order("BTC_USDT", 7)]),
        ("gate", "PUT", "/api/v4/futures/usdt/orders/123", (), raw({"size": 4}), [order(None, 4)]),
        ("gate", "POST", "/api/v4/futures/usdt/price_orders", (), raw({"initial": {"contract": "ETH_USDT", "size": 3},
                                                                        "trigger": {}}), [order("ETH_USDT", 3)]),
        # HTX: buy-market spends quote; contract batches under orders_data.
        ("htx", "POST", "/v1/order/orders/place", (), raw({"symbol": "btcusdt", "type": "buy-market",
                                                            "amount": "15"}), [order("BTCUSDT", None, 15)]),
        ("htx", "POST", "/linear-swap-api/v1/swap_cross_order", (), raw({"contract_code": "BTC-USDT", "volume": 6}),
         [order("BTC-USDT", 6)]),
        ("htx", "POST", "/v2/algo-orders", (), raw({"symbol": "btcusdt", "orderSide": "buy", "orderValue": "9"}),
         [order("BTCUSDT", None, 9)]),
    ],
)
def test_order_sizes(exchange_id, method, path, query, body, expected):
    found = facts(exchange_id, method, path, query, body)
    assert own_forbidden(found, exchange_id) is None
    assert list(found.orders) == expected


def test_unreadable_sizes_are_none():
    for size in ("1_000", "0x10", "NaN", "Infinity", "١٢", "", "1.2.3", "ten"):
        found = facts("binance", "POST", "/api/v3/order", query=(("symbol", "BTCUSDT"), ("side", "BUY"),
                                                                  ("quantity", size)))
        assert found.orders == (order("BTCUSDT"),), size
    # JSON numbers are exact (no float rounding); a boolean is no size.
    big = facts("okx", "POST", "/api/v5/trade/order", body=RawBody(
        '{"instId":"BTC-USDT-SWAP","sz":0.30000000000000004}'))
    assert big.orders == (order("BTC-USDT-SWAP", "0.30000000000000004"),)
    assert facts("okx", "POST", "/api/v5/trade/order", body=raw({"instId": "A-B-SWAP", "sz": True})).orders == (
        order("A-B-SWAP"),)


def test_a_size_spelled_twice_is_unreadable():
    # The exchange reads one spelling; the policy must not read the other.
    found = facts("binance", "POST", "/api/v3/order", query=(("symbol", "BTCUSDT"), ("side", "BUY"),
                                                              ("quantity", "1"), ("QUANTITY", "1000")))
    assert [o.quantity for o in found.orders] == [None]
    okx = facts("okx", "POST", "/api/v5/trade/order", query=(("sz", "1"),), body=raw({"instId": "X-Y-SWAP", "sz": "9"}))
    assert okx.orders == (order("X-Y-SWAP"),)
    # The same value twice is one value (ccxt sends Gate's PATCH parameters in the query and the body).
    gate = facts("gate", "PUT", "/api/v4/spot/orders/1", query=(("amount", "2"),), body=raw({"amount": "2"}))
    assert gate.orders == (order(None, 2),)


def test_unreadable_batches_are_one_unknown_order():
    assert facts("binanceusdm", "POST", "/fapi/v1/batchOrders", body=(("batchOrders", "[not json"),)).orders == (
        order(None),)
    assert facts("bybit", "POST", "/v5/order/create-batch", body=raw({"category": "spot", "request": "x"})).orders == (
        order(None),)
    assert facts("okx", "POST", "/api/v5/trade/batch-orders", body=raw([{"instId": "A-B-SWAP", "sz": "1"}, 5])
                 ).orders == (order(None),)
    assert facts("bitfinex", "POST", "/v2/auth/w/order/multi", body=raw({"ops": [["on"]]})).orders == (order(None),)


def test_requests_that_are_not_orders():
    assert facts("okx", "POST", "/api/v5/trade/cancel-order", body=raw({"instId": "BTC-USDT", "ordId": "1"})
                 ).orders == ()
    assert facts("kucoin", "DELETE", "/api/v1/orders", query=(("symbol", "BTC-USDT"),)).orders == ()
    assert facts("bybit", "GET", "/v5/order/realtime", query=(("category", "spot"), ("side", "Buy"))).orders == ()
    assert facts("okx", "POST", "/api/v5/trade/close-position", body=raw({"instId": "BTC-USDT-SWAP"})).orders == ()
    # MEXC futures cancels by a list of order ids (ccxt cancel_order, cancel_orders): no order. A list
    # that holds anything else is still a batch the rules cannot read.
    assert facts("mexc", "POST", "/api/v1/private/order/cancel", body=raw(["1", 2])).orders == ()
    assert facts("mexc", "POST", "/api/v1/private/order/cancel", body=raw(["1", {"symbol": "A_B", "vol": 1}])
                 ).orders == (order(None),)
    assert facts("mexc", "POST", "/api/v1/private/order/submit_batch", body=raw(['{"symbol":"A_B","vol":3}'])
                 ).orders == (order("A_B", 3),)


# -- robustness -----------------------------------------------------------------------------------


def test_unparseable_json_bodies_are_refused_as_invalid():
    for exchange_id in ("okx", "bybit", "gemini", "bitfinex", "gate", "htx", "cryptocom", "deribit", "coinbase"):
        for text in ("{", '{"a":1,"a":2}', "NaN", "[" * 100_000):
            with pytest.raises(RequestInvalid):
                facts(exchange_id, "POST", "/x", body=RawBody(text))


def test_unparseable_form_bodies_are_refused_as_invalid():
    for exchange_id in ("binance", "bitstamp", "kraken"):
        with pytest.raises(RequestInvalid):
            facts(exchange_id, "POST", "/0/private/AddOrder", body=RawBody("a=1&&b"))


def test_deep_json_inside_a_parameter_is_text():
    deep = "[" * 5000
    found = facts("binanceusdm", "POST", "/fapi/v1/batchOrders", body=(("batchOrders", deep),))
    assert found.orders == (order(None),)


_NAMES = st.sampled_from([
    "symbol", "side", "quantity", "qty", "sz", "size", "amount", "volume", "vol", "funds", "address", "coin",
    "asset", "batchOrders", "orders", "request", "orderList", "order_list", "ops", "instId", "pair", "tgtCcy",
    "marketUnit", "type", "orderType", "method", "params", "quotes", "put", "initial", "order_configuration",
    "QUANTITY", "Symbol",
]) | st.text(min_size=1, max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(["1", "-2.5", "1e9999", "buy", "market", "[", '[{"side":"BUY","quantity":"x"}]']),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_NAMES, children, max_size=5),
    max_leaves=25,
)
_VALUES = st.text(max_size=20) | st.sampled_from(["1", "NaN", "[1,", '[{"symbol":"a","quantity":"2"}]', '["A","B"]'])
_PAIRS = st.lists(st.tuples(_NAMES, _VALUES), max_size=6, unique_by=lambda p: p[0]).map(tuple)
_PATHS = st.sampled_from(sorted({r.path for requests in CATALOGUE.values() for r in requests[::15]})
                         + ["/", "/API/V3/ORDER/", "/api/v2", "/0/private/AddOrderBatch"]) | st.text(max_size=30).map(
    lambda s: "/" + s)
_BODIES = st.none() | _PAIRS | st.builds(RawBody, st.text(max_size=40)) | st.builds(
    RawBody, _JSON.map(json.dumps)) | st.builds(RawBody, _PAIRS.map(lambda p: "&".join(f"{n}={v}" for n, v in p)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(EXCHANGES)), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), _PATHS,
       _PAIRS, _BODIES)
def test_inspect_raises_nothing_but_request_invalid(exchange_id, method, path, query, body):
    try:
        found = inspect(EXCHANGES[exchange_id], UnsignedRequest(method, path, query, body))
    except RequestInvalid:
        return
    assert found.forbidden is None or found.forbidden in CATEGORIES
    assert (found.forbidden is None) == (found.forbidden_why is None)
    assert all(isinstance(s, str) and s == s.upper() and s for s in found.symbols)
    assert len(set(found.symbols)) == len(found.symbols)
    for o in found.orders:
        for size in (o.quantity, o.quote_quantity):
            assert size is None or (isinstance(size, Decimal) and size.is_finite() and size >= 0)


def test_every_deribit_request_is_also_a_session_token(tmp_path):
    # Deribit's header signature is also a public/auth client_signature login: every request, reads
    # included, needs `session-token` allowed, beside its own categories.
    read = facts("deribit", "GET", "/api/v2/private/get_account_summary", query=(("currency", "BTC"),))
    assert [c for c, _ in read.violations] == ["session-token"] and "public/auth" in read.forbidden_why
    withdraw = facts("deribit", "GET", "/api/v2/private/withdraw")
    assert [c for c, _ in withdraw.violations] == ["withdrawal", "session-token"]
    assert [c for c, _ in facts("okx", "GET", "/api/v5/account/balance").violations] == []
