"""A ccxt bot, with no secret, through the real agent process: for every exchange, the private
requests it sends equal those of plain ccxt holding the secret in memory, byte for byte.

Both ccxt objects run on the same pinned clock. The bridged one's `sign()` runs with placeholder
credentials, its request is stripped of authentication and signed by the agent (the key imported
through the CLI into the token); `fetch` is intercepted so that nothing leaves the machine.
"""

from __future__ import annotations

import base64
import secrets

import ccxt
import pytest

from signing_agent_client.ccxt_bridge import agent_exchange
from signing_agent_client.client import SignerClient
from support.agent_io import capture, sent
from support.deploy import Env, run_cli
from support.leaks import new_secret, register_secret

NOW_MS = 1_763_700_000_123
HEX = "0123456789abcdef"
def uuid_secret() -> str:
    return register_secret("-".join("".join(secrets.choice(HEX) for _ in range(n)) for n in (8, 4, 4, 4, 12)))


# exchange, secret factory, passphrase?, options, calls [(api, path, method, params)]
CASES = [
    ("binance", lambda: new_secret(64), False, {}, [
        ("private", "order", "POST", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                      "quantity": "0.001", "price": "50000", "newClientOrderId": "bot-1"}),
        ("private", "account", "GET", {})]),
    ("binanceusdm", lambda: new_secret(64), False, {}, [
        ("fapiPrivate", "order", "POST", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.01",
                                          "newClientOrderId": "b-1"})]),
    ("binanceus", lambda: new_secret(64), False, {}, [("private", "account", "GET", {})]),
    ("okx", lambda: new_secret(32, "0123456789ABCDEF"), True, {}, [
        ("private", "trade/order", "POST", {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy",
                                            "ordType": "limit", "sz": "0.001", "px": "50000"}),
        ("private", "account/balance", "GET", {"ccy": "BTC,USDT"})]),
    ("kucoin", uuid_secret, True, {}, [
        ("private", "accounts", "GET", {"currency": "USDT"}),
        ("private", "orders", "POST", {"clientOid": "c-1", "side": "buy", "symbol": "BTC-USDT", "type": "limit",
                                       "price": "50000", "size": "0.001"})]),
    ("kucoinfutures", uuid_secret, True, {}, [("futuresPrivate", "account-overview", "GET", {"currency": "USDT"})]),
    ("bitget", lambda: new_secret(64, HEX), True, {}, [
        (["private", "spot"], "v2/spot/trade/place-order", "POST",
         {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "price": "50000", "size": "0.001"}),
        (["private", "spot"], "v2/spot/account/assets", "GET", {"coin": "USDT"})]),
    ("kraken", lambda: register_secret(base64.b64encode(secrets.token_bytes(64)).decode()), False, {}, [
        ("private", "AddOrder", "POST", {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "price": "37500",
                                         "volume": "1.25"}),
        ("private", "Balance", "POST", {})]),
    ("bitfinex", lambda: new_secret(43), False, {}, [
        ("private", "auth/r/wallets", "POST", {}),
        ("private", "auth/w/order/submit", "POST", {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD",
                                                    "amount": "0.001", "price": "50000"})]),
    ("gemini", lambda: new_secret(28), False, {}, [
        ("private", "v1/order/new", "POST", {"symbol": "btcusd", "amount": "0.001", "price": "50000",
                                             "side": "buy", "type": "exchange limit"}),
        ("private", "v1/balances", "POST", {})]),
    ("bybit", lambda: new_secret(36), False, {}, [
        ("private", "v5/order/create", "POST", {"category": "spot", "symbol": "BTCUSDT", "side": "Buy",
                                                "orderType": "Limit", "qty": "0.001", "price": "50000"}),
        ("private", "v5/account/wallet-balance", "GET", {"accountType": "UNIFIED"})]),
    ("mexc", lambda: new_secret(32, HEX), False, {}, [
        (["spot", "private"], "order", "POST", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                "quantity": "0.001", "price": "50000"}),
        (["spot", "private"], "account", "GET", {}),
        (["contract", "private"], "account/assets", "GET", {})]),
    ("coinbase", lambda: new_secret(32), False, {}, [
        (["v3", "private"], "brokerage/orders", "POST",
         {"client_order_id": "c-1", "product_id": "BTC-USD", "side": "BUY",
          "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "50000"}}}),
        (["v3", "private"], "brokerage/accounts", "GET", {"limit": "10"})]),
    ("bitstamp", lambda: new_secret(32), False, {}, [
        ("private", "balance/", "POST", {}),
        ("private", "buy/{pair}/", "POST", {"pair": "btcusd", "amount": "0.001", "price": "50000"})]),
    ("cryptocom", lambda: new_secret(28), False, {}, [
        (["v1", "private"], "private/user-balance", "POST", {}),
        (["v1", "private"], "private/create-order", "POST", {"instrument_name": "BTC_USD", "side": "BUY",
                                                             "type": "LIMIT", "price": "50000", "quantity": "0.001"})]),
    ("deribit", lambda: new_secret(43), False, {}, [
        ("private", "get_account_summary", "GET", {"currency": "BTC"}),
        ("private", "buy", "GET", {"instrument_name": "BTC-PERPETUAL", "amount": "10", "type": "limit",
                                   "price": "50000"})]),
    ("gate", lambda: new_secret(64, HEX), False, {}, [
        (["private", "spot"], "orders", "POST", {"currency_pair": "BTC_USDT", "side": "buy", "amount": "0.001",
                                                 "price": "50000"}),
        (["private", "spot"], "accounts", "GET", {"currency": "USDT"})]),
    ("htx", lambda: uuid_secret()[:32], False, {}, [
        ("v2Private", "account/asset-valuation", "GET", {"accountType": "spot"}),
        (["spot", "private"], "v1/order/orders/place", "POST",
         {"account-id": "123", "symbol": "btcusdt", "type": "buy-limit", "amount": "0.001", "price": "50000"})]),
]


def _import(env: Env, label: str, exchange: str, api_key: str, secret: str, passphrase: str | None, options):
    stdin = secret + "\n" + (passphrase + "\n" if passphrase else "")
    args = ["keys", "import", "--label", label, "--exchange", exchange, "--api-key", api_key, "--type", "hmac"]
    for name, value in options.items():
        args += ["--option", f"{name}={value}"]
    run_cli(env, *args, stdin=stdin, check=True)


@pytest.mark.e2e
@pytest.mark.parametrize("exchange,make_secret,has_passphrase,options,calls", CASES, ids=[c[0] for c in CASES])
def test_ccxt_bot_through_the_agent_sends_what_plain_ccxt_sends(
    env: Env, agent, label: str, exchange, make_secret, has_passphrase, options, calls
):
    secret = make_secret()
    passphrase = register_secret("Pp-" + new_secret(10)) if has_passphrase else None
    # A fresh API key: its nonces start from the clock. Gemini's ccxt takes account keys only.
    api_key = f"{'account-' if exchange == 'gemini' else 'ak-'}{secrets.token_hex(8)}"
    _import(env, label, exchange, api_key, secret, passphrase, options)
    credentials = {"apiKey": api_key, "secret": secret}
    if passphrase:
        credentials["password"] = passphrase
    config = {"enableRateLimit": False}
    with SignerClient(agent.target) as client:
        for i, (api, path, method, params) in enumerate(calls):
            now = NOW_MS + 1000 * i
            plain = capture(getattr(ccxt, exchange)({**config, **credentials}), now)
            bridged = capture(agent_exchange(exchange, label, client=client, config=config), now)
            through_agent = sent(bridged, api, path, method, params)
            if exchange == "bitstamp":  # its nonce is a random UUID: give plain ccxt the agent's
                plain.uuid = lambda nonce=through_agent["headers"]["X-Auth-Nonce"]: nonce
            expected = sent(plain, api, path, method, params)
            assert through_agent == expected, f"{exchange} {method} {path}"
            assert secret not in repr(through_agent)
