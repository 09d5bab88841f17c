"""Send mode on more exchanges, end to end: a real agent on a fresh SoftHSM2 token places orders on the
local exchange (exchange_server.py, which verifies every signature with the exchange's reader model and
keeps what it accepted), over HTTPS with a throw-away CA.

What must hold (issue 20):
* client order ids: where the exchange takes one (agent/send/orders.py), every order the agent sends
  carries one (the bot's if it has the exchange's form, else refused with INVALID_ARGUMENT before
  anything is signed; one the agent makes if the bot sent none), and a dropped answer after an
  accepted order is reconciled by that id without a second order;
* a ccxt bot in send mode places, amends and cancels orders with its ordinary code, and ccxt parses
  the exchange's answers (OKX, Bybit, KuCoin, Bitget, Gate: its amend is a PATCH; Binance USD-M, Kraken,
  Bitfinex, Bitstamp, Crypto.com, Deribit; Gemini and MEXC futures, where ccxt amends by cancel + new).
  The client-order-id tests run where agent/send/orders.py has the exchange (ORDERS below); the lookup
  tests check the read each exchange documents (LOOKUPS: OKX, Bybit, Crypto.com, Deribit, Bitstamp).
"""

from __future__ import annotations

import json
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.send.orders import REGISTRY
from signing_agent_client import InvalidRequestError, SignerClient
from support.ccxt_calls import unified_market
from support.deploy import TEST_BOT, Env, make_env, run_cli, start_agent
from support.exchange_server import (
    ExchangeServer,
    TestCA,
    binance_usdm,
    bitfinex_spot,
    bitget_spot,
    bitstamp_spot,
    bybit_spot,
    coinbase_advanced,
    cryptocom_spot,
    deribit_perpetual,
    gate_spot,
    gemini_spot,
    kraken_spot,
    kucoin_spot,
    mexc_spot_and_futures,
    okx_spot,
)
from support.leaks import new_secret, register_secret
from support.profiles import PROFILES
from support.reference import asymmetric_credential, hmac_credential

pytestmark = pytest.mark.e2e

HEX = "0123456789abcdef"


def _uuid_secret() -> str:  # KuCoin's secrets are UUIDs
    return register_secret("-".join(secrets.token_hex(n // 2) for n in (8, 4, 4, 4, 12)))


# exchange -> (family, secret factory, passphrase?)
HMAC_EXCHANGES = {
    "okx": (okx_spot, lambda: new_secret(32, "0123456789ABCDEF"), True),
    "bybit": (bybit_spot, lambda: new_secret(36), False),
    "kucoin": (kucoin_spot, _uuid_secret, True),
    "gate": (gate_spot, lambda: new_secret(64, HEX), False),
    "bitget": (bitget_spot, lambda: new_secret(64, HEX), True),
    "mexc": (mexc_spot_and_futures, lambda: new_secret(32, HEX), False),
    "binanceusdm": (binance_usdm, lambda: new_secret(64), False),
    "kraken": (kraken_spot, PROFILES["kraken"].secret, False),
    "bitfinex": (bitfinex_spot, PROFILES["bitfinex"].secret, False),
    "bitstamp": (bitstamp_spot, PROFILES["bitstamp"].secret, False),
    "cryptocom": (cryptocom_spot, PROFILES["cryptocom"].secret, False),
    "deribit": (deribit_perpetual, PROFILES["deribit"].secret, False),
    "gemini": (gemini_spot, PROFILES["gemini"].secret, False),
}

# One order per exchange as a bot sends it through the client (no client order id), the place path,
# the id's parameter, and the paths the exchange's lookup by that id takes.
ORDERS = {
    "okx": ("/api/v5/trade/order", "clOrdId", {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy",
                                               "ordType": "limit", "sz": "0.01", "px": "50000"}),
    "bybit": ("/v5/order/create", "orderLinkId", {"category": "spot", "symbol": "BTCUSDT", "side": "Buy",
                                                  "orderType": "Limit", "qty": "0.01", "price": "50000"}),
    "kucoin": ("/api/v1/orders", "clientOid", {"side": "buy", "symbol": "BTC-USDT", "type": "limit",
                                               "price": "50000", "size": "0.01"}),
    "gate": ("/api/v4/spot/orders", "text", {"currency_pair": "BTC_USDT", "side": "buy", "amount": "0.01",
                                             "price": "50000"}),
    "bitget": ("/api/v2/spot/trade/place-order", "clientOid", {"symbol": "BTCUSDT", "side": "buy",
                                                               "orderType": "limit", "force": "gtc",
                                                               "price": "50000", "size": "0.01"}),
    "mexc": ("/api/v3/order", "newClientOrderId", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                   "quantity": "0.01", "price": "50000"}),
    "binanceusdm": ("/fapi/v1/order", "newClientOrderId", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                          "timeInForce": "GTC", "quantity": "0.01", "price": "50000"}),
    "coinbase": ("/api/v3/brokerage/orders", "client_order_id", {
        "product_id": "BTC-USD", "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "50000"}}}),
    "cryptocom": ("/exchange/v1/private/create-order", "client_oid", {
        "instrument_name": "BTC_USD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "50000"}),
    "bitstamp": ("/api/v2/buy/btcusd/", "client_order_id", {"amount": "0.01", "price": "50000"}),
    "deribit": ("/api/v2/private/buy", "label", {"instrument_name": "BTC-PERPETUAL", "amount": "10",
                                                 "type": "limit", "price": "50000"}),
}
# A bot id each exchange takes, and one it does not (with the reason in the exchange's documented form).
GOOD_AND_BAD_IDS = {
    "okx": ("botOkx1", "bot-okx-1"),  # letters and digits only
    "bybit": ("bot_bybit-1", "b" * 37),  # at most 36
    "kucoin": ("bot_kucoin-1", "bot kucoin"),  # no spaces
    "gate": ("t-bot.gate_1", "bot-gate-1"),  # must start with t-
    "bitget": ("bot-bitget-1", "bot#1"),
    "mexc": ("bot-mexc-1", "x" * 65),
    "binanceusdm": ("bot.usdm:1/a_b-c", "bot usdm"),  # letters, digits and .:/_- only
    "coinbase": ("bot-cb-1", "bot/cb"),
    "cryptocom": ("BOT-CDC_1", "bot-cdc-1"),  # no lower case: Crypto.com's signed text reads it as a name
    "bitstamp": ("bot-bitstamp_1", "bot bitstamp"),
    "deribit": ("bot-deribit_1", "d" * 65),  # at most 64
}
# JSON bodies, except MEXC spot's, Binance USD-M's (Binance-style form parameters) and Bitstamp's (form
# parameters), and Deribit's (a GET: its parameters are the query).
FORM_BODY = {"mexc", "binanceusdm", "bitstamp"}
QUERY = {"deribit"}
# The reads that look an order up by its client order id: exchange -> (method, path, the id's parameter).
LOOKUPS = {"okx": ("GET", "/api/v5/trade/order", "clOrdId"), "bybit": ("GET", "/v5/order/realtime", "orderLinkId"),
           "cryptocom": ("POST", "/exchange/v1/private/get-order-detail", "client_oid"),
           "deribit": ("GET", "/api/v2/private/get_order_state_by_label", "label"),
           "bitstamp": ("POST", "/api/v2/order_status/", "client_order_id")}


API_KEY_PREFIX = {"gemini": "account-"}  # Gemini's keys name their scope
# Every Deribit signature is also a public/auth login (agent.rules: category `session-token`).
ALLOW = {"deribit": '["session-token"]'}


def _policy(urls: dict[str, str]) -> str:
    tables = "".join(f'\n[keys.{name}]\nendpoints = ["* /**"]\ndelivery = "send"\nsend_to = "{url}"\n'
                     + (f"allow = {ALLOW[name]}\n" if name in ALLOW else "") for name, url in urls.items())
    return f'[bots.{TEST_BOT}]\nkeys = ["*"]\n{tables}'


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    env: Env = make_env(tmp_path_factory, "send-exchanges")
    ca = TestCA(env.root)
    server = ExchangeServer(tls=ca)
    urls = {}
    for exchange, (family, make_secret, has_passphrase) in HMAC_EXCHANGES.items():
        api_key, secret = f"{API_KEY_PREFIX.get(exchange, 'ak-')}{secrets.token_hex(8)}", make_secret()
        passphrase = register_secret("Pp-" + new_secret(10)) if has_passphrase else None
        urls[exchange] = server.add(family(), hmac_credential(exchange, api_key, secret, passphrase))
        run_cli(env, "keys", "import", "--label", exchange, "--exchange", exchange, "--api-key", api_key,
                "--type", "hmac", stdin=secret + "\n" + (passphrase + "\n" if passphrase else ""), check=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    register_secret(pem.split("\n")[1])
    cb_key = f"organizations/{secrets.token_hex(4)}/apiKeys/{secrets.token_hex(4)}"
    urls["coinbase"] = server.add(coinbase_advanced(), asymmetric_credential(cb_key, pem))
    run_cli(env, "keys", "import", "--label", "coinbase", "--exchange", "coinbase", "--api-key", cb_key,
            "--type", "ec-p256", stdin=pem.replace("\n", "\\n") + "\n", check=True)
    (env.root / "policy.toml").write_text(_policy(urls))
    config = env.write_config("send", extra=f'[send]\nca_file = "{ca.ca_file}"\nread_timeout_ms = 1000\n'
                                            'total_timeout_ms = 3000\n')
    agent = start_agent(env, config)
    client = SignerClient(agent.target)
    try:
        yield agent, server, client
    finally:
        client.close()
        server.close()
        assert agent.stop() == 0, agent.log.read_text()
    # Every private request the exchange saw in this module verified, as the exchange verifies it.
    assert not server.rejected(), [(r.exchange, r.http.path, r.verdict) for r in server.rejected()]


def _send(client: SignerClient, exchange: str, extra: dict | None = None):
    path, _, order = ORDERS[exchange]
    order = {**order, **(extra or {})}
    if exchange in QUERY:
        return client.send(exchange, "GET", path, query=order)
    body = order if exchange in FORM_BODY else json.dumps(order, separators=(",", ":"))
    return client.send(exchange, "POST", path, body=body)


def _orders(server: ExchangeServer, exchange: str) -> dict:
    return server._families[exchange][0].orders


def _places(server: ExchangeServer, exchange: str, before: int) -> list:
    path = ORDERS[exchange][0]
    method = "GET" if exchange in QUERY else "POST"
    return [r for r in server.received(exchange)[before:] if (r.http.method, r.http.path) == (method, path)]


def _sent_id(received, exchange: str, param: str) -> str:
    if exchange in FORM_BODY or received.http.method == "GET":
        return received.params[param]
    body = json.loads(received.http.body)
    body = body[0] if isinstance(body, list) else body  # OKX's one-order batch (ccxt's create_order)
    return (body["params"] if exchange == "cryptocom" else body)[param]  # Crypto.com's wire body nests the order


@pytest.mark.parametrize("exchange", list(ORDERS))
def test_the_agent_gives_an_order_a_client_order_id_the_exchange_takes(deployment, exchange):
    _, server, client = deployment
    before = len(server.received(exchange))
    answer = _send(client, exchange)
    assert answer.status == 200 and not answer.reconciled
    placed = _places(server, exchange, before)
    assert len(placed) == 1 and placed[0].verdict.ok
    param = ORDERS[exchange][1]
    assert answer.client_order_id and _sent_id(placed[0], exchange, param) == answer.client_order_id
    assert REGISTRY[exchange].valid.fullmatch(answer.client_order_id)
    assert answer.client_order_id in _orders(server, exchange)


@pytest.mark.parametrize("exchange", list(ORDERS))
def test_a_bots_client_order_id_is_kept_if_valid_and_refused_if_not(deployment, exchange):
    _, server, client = deployment
    param = ORDERS[exchange][1]
    good, bad = GOOD_AND_BAD_IDS[exchange]
    before = len(server.received(exchange))
    answer = _send(client, exchange, {param: good})
    assert answer.status == 200 and answer.client_order_id == good and good in _orders(server, exchange)
    with pytest.raises(InvalidRequestError, match=rf"{param} .* is not a client order id .* takes .*send one of "
                                                  r"that form, or none") as refused:
        _send(client, exchange, {param: bad})
    assert refused.value.code == "INVALID_ARGUMENT"
    assert len(_places(server, exchange, before)) == 1  # the refused one never left the agent


@pytest.mark.parametrize("exchange", list(ORDERS))
def test_a_lost_answer_to_an_accepted_order_is_reconciled_by_its_id_without_a_second_order(deployment, exchange):
    _, server, client = deployment
    orders = _orders(server, exchange)
    before, placed_before = len(server.received(exchange)), len(orders)
    server.drop(exchange)  # the order is accepted, then the connection closes with no answer
    answer = _send(client, exchange)
    assert answer.reconciled and answer.status == 200 and answer.client_order_id in orders
    assert len(orders) == placed_before + 1  # one order, though Coinbase's lookup is the same order again
    seen = [r for r in server.received(exchange)[before:] if r.private]
    assert len(seen) >= 2 and all(r.verdict.ok for r in seen)
    if exchange != "coinbase":  # the lookup is a read; Coinbase's is the order, answered with the first one
        assert len(_places(server, exchange, before)) == 1


@pytest.mark.parametrize("exchange", ["bitstamp", "binanceusdm"])
def test_an_order_sent_as_form_text_gets_an_id_and_a_lost_answer_is_reconciled(deployment, exchange):
    # ccxt sends these orders as form text, which the agent signs byte for byte: the id goes after it.
    _, server, client = deployment
    path, param, order = ORDERS[exchange]
    text = "&".join(f"{name}={value}" for name, value in order.items())
    orders = _orders(server, exchange)
    before, placed_before = len(server.received(exchange)), len(orders)
    server.drop(exchange)
    answer = client.send(exchange, "POST", path, body=text)
    assert answer.reconciled and answer.status == 200 and answer.client_order_id in orders
    placed = _places(server, exchange, before)
    assert len(placed) == 1 and len(orders) == placed_before + 1
    assert text + f"&{param}={answer.client_order_id}" in placed[0].http.body  # (Binance's timestamp goes first)


# Where the found order's client order id is in each lookup's answer.
FOUND_ID = {"okx": lambda b: b["data"][0]["clOrdId"], "bybit": lambda b: b["result"]["list"][0]["orderLinkId"],
            "cryptocom": lambda b: b["result"]["client_oid"], "deribit": lambda b: b["result"][0]["label"],
            "bitstamp": lambda b: b["client_order_id"]}


@pytest.mark.parametrize("exchange", list(LOOKUPS))
def test_a_lost_orders_lookup_is_the_exchanges_documented_read_by_its_id(deployment, exchange):
    _, server, client = deployment
    method, read, name = LOOKUPS[exchange]
    before = len(server.received(exchange))
    server.drop(exchange)
    answer = _send(client, exchange)
    assert answer.reconciled
    reads = [r for r in server.received(exchange)[before:] if (r.http.method, r.http.path) == (method, read)]
    assert reads and all(r.verdict.ok for r in reads)
    assert len(_places(server, exchange, before)) == 1  # one order, then reads
    assert _sent_id(reads[-1], exchange, name) == answer.client_order_id
    if exchange == "deribit":  # get_order_state_by_label requires the currency the order is filed under
        assert reads[-1].params["currency"] == "BTC"
    assert FOUND_ID[exchange](answer.json()) == answer.client_order_id


# ccxt bots: place, amend, cancel. Gate's amend is a PATCH (the one exchange here whose API uses it).
# Bitget's and Bitstamp's amends cancel the order and place a new one with a new id; Kraken's answers
# the amend's own id (the order keeps its txid); the others amend in place.
# Gemini and MEXC futures have no amend: ccxt's edit_order cancels the order and places a new one.
CCXT_FLOWS = ["okx", "bybit", "kucoin", "gate", "bitget", "binanceusdm", "kraken", "bitfinex", "bitstamp",
              "cryptocom", "deribit", "gemini", "mexc-futures"]
AMEND_ANSWERS_ITS_OWN_ID = {"kraken"}
# A flow on another market of an exchange: flow -> (the key's label and exchange id, ccxt's market).
OTHER_MARKETS = {"mexc-futures": ("mexc", {"id": "BTC_USDT", "symbol": "BTC/USDT:USDT", "type": "swap", "spot": False,
                                           "swap": True, "contract": True, "linear": True, "inverse": False,
                                           "settle": "USDT", "settleId": "USDT", "contractSize": 0.0001})}


@pytest.mark.parametrize("flow", CCXT_FLOWS)
def test_a_ccxt_bot_places_amends_and_cancels_orders_in_send_mode(deployment, flow):
    from signing_agent_client.ccxt_bridge import agent_exchange

    _, server, client = deployment
    exchange_id, market = OTHER_MARKETS.get(flow, (flow, None))
    before = len(server.received(exchange_id))
    exchange = agent_exchange(exchange_id, exchange_id, client=client, send=True, config={"enableRateLimit": False})
    spot = unified_market(exchange, exchange_id)
    exchange.set_markets([{**spot, **market} if market else spot])
    symbol = exchange.symbols[0]
    placed = exchange.create_order(symbol, "limit", "buy", 0.01, 50000)
    orders = _orders(server, exchange_id)
    # (get: MEXC spot orders, kept by the same family, are numbered by Binance's shape, not _id)
    assert placed["id"] and any(o.get("_id") == placed["id"] for o in orders.values())
    current = placed["id"]
    edited = exchange.edit_order(current, symbol, "limit", "buy", 0.02, 51000)
    assert edited["id"]
    if exchange_id in AMEND_ANSWERS_ITS_OWN_ID:
        assert edited["id"] != current and edited["info"]["amend_id"] == edited["id"]
    else:
        current = edited["id"]
    kept = next(o for o in orders.values() if o.get("_id") == current)
    assert "0.02" in json.dumps(kept)
    cancelled = exchange.cancel_order(current, symbol)
    assert cancelled["id"] == current or cancelled["info"]
    final = next(o for o in orders.values() if o.get("_id") == current)
    assert next(v for k, v in final.items() if k in ("state", "orderStatus", "isActive", "status")) in (
        "canceled", "Cancelled", False, "cancelled", "CANCELED", "Canceled", 4)  # MEXC futures: state 4
    seen = [r for r in server.received(exchange_id)[before:] if r.private]
    assert len(seen) >= 3 and all(r.verdict.ok for r in seen)
    if exchange_id == "gate":
        assert any(r.http.method == "PATCH" for r in seen)
    rules = REGISTRY.get(exchange_id)
    if rules is not None and flow not in OTHER_MARKETS:  # ccxt's orders carry a client order id too
        placements = [r for r in seen if rules.places.fullmatch(f"{r.http.method} {r.http.path}")]
        assert placements and all(rules.valid.fullmatch(_sent_id(r, exchange_id, rules.param)) for r in placements)


def test_a_patch_is_refused_for_an_exchange_whose_api_never_uses_it(deployment):
    # Only Gate's API takes PATCH (its spot amend, above): for any other exchange the agent refuses it
    # before signing or sending, naming the methods that exchange takes.
    _, server, client = deployment
    before = len(server.received("okx"))
    with pytest.raises(InvalidRequestError, match=r"method PATCH is not a method OKX's API uses \(it takes GET, POST, "
                                                  r"PUT, DELETE\)") as refused:
        client.send("okx", "PATCH", "/api/v5/trade/amend-order", body='{"instId":"BTC-USDT","newSz":"1"}')
    assert refused.value.code == "INVALID_ARGUMENT"
    assert len(server.received("okx")) == before
