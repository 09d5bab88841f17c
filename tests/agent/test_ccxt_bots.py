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

from signing_agent_client.ccxt_bridge import BRIDGES, agent_exchange
from signing_agent_client.client import SignerClient
from support.agent_io import capture, sent
from support.ccxt_calls import MARKETS, unified_market
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


# -- the template policy is enough for a ccxt bot ------------------------------------------------------
#
# For every exchange: the key's policy is what `signing-agent policy template --merge` writes (Deribit's
# `allow = ["session-token"]` uncommented, as its template says to do knowingly). A ccxt bot loads its
# markets and places one order through the real agent; the exchange is a stub that answers public calls
# with nothing and private ones with the little ccxt needs to go on. No call is refused (no
# PERMISSION_DENIED); the private calls load_markets makes are signed; the order is signed and verifies
# as the exchange would verify it (tests/exchange_server.verify: every exchange's HMAC is modelled).

# Private answers ccxt cannot do without before it places the order (HTX: the spot account's id).
ANSWERS = {"/v1/account/accounts": {"status": "ok", "data": [{"id": 123, "type": "spot", "subtype": "",
                                                               "state": "working"}]}}


def test_every_exchange_with_a_ccxt_class_has_a_ccxt_bot_here():
    from agent.exchanges import EXCHANGES

    # Binance TR has no ccxt class, so no ccxt bot: its template is checked by test_policy.py only.
    with_ccxt = {name for name, record in EXCHANGES.items() if record.ccxt_id}
    assert {c[0] for c in CASES} == set(MARKETS) == with_ccxt == set(BRIDGES) and "binancetr" not in with_ccxt


def _despite_empty_answers(call, *args) -> None:
    """CALL(*ARGS), whose parsing of the stub's empty answers may fail: what matters here is what the agent
    signed. The agent's refusals (ccxt's PermissionDenied, AuthenticationError...) are raised."""
    try:
        call(*args)
    except (ccxt.PermissionDenied, ccxt.AuthenticationError, ccxt.NetworkError, ccxt.BadRequest):
        raise
    except Exception:  # noqa: BLE001 - ccxt reading {} as an order or a market list
        pass


@pytest.fixture(scope="module")
def templated(tmp_path_factory: pytest.TempPathFactory):
    """An agent whose policy is every exchange's template, merged one key at a time, as the README says."""
    from support.deploy import TEST_BOT, make_env, start_agent

    env = make_env(tmp_path_factory, "templates")
    policy = env.root / "policy.toml"
    policy.write_text("# the operator's policy: templates merged below\n")
    keys = {}
    for exchange, make_secret, has_passphrase, options, _ in CASES:
        label = f"{exchange}-main"
        secret = make_secret()
        passphrase = register_secret("Pp-" + new_secret(10)) if has_passphrase else None
        api_key = f"{'account-' if exchange == 'gemini' else 'ak-'}{secrets.token_hex(8)}"
        _import(env, label, exchange, api_key, secret, passphrase, options)
        run_cli(env, "policy", "template", "--exchange", exchange, "--key", label, "--bot", TEST_BOT,
                "--merge", str(policy), check=True)
        keys[exchange] = (label, api_key, secret, passphrase)
    text = policy.read_text()
    assert text.count('# allow = ["session-token"]') == 1  # Deribit's, the one to uncomment knowingly
    text = text.replace('# allow = ["session-token"]', 'allow = ["session-token"]')
    # These bots sign (ccxt sends what the agent signed, caught by the stubbed fetch): the templates'
    # delivery "send" becomes "sign", which they allow (no symbol list or size cap is set in them).
    assert text.count('delivery = "send"') == len(CASES)
    text = text.replace('delivery = "send"', 'delivery = "sign"')
    # One test bot stands for 18 bots here, each calling within the same seconds: its own rate (20 a
    # second in the template) is raised; each key keeps its template rate.
    bot_table = text.index(f'[bots."{TEST_BOT}"]')
    text = text[:bot_table] + text[bot_table:].replace("rate_per_second = 20", "rate_per_second = 1000", 1)
    policy.write_text(text)
    assert run_cli(env, "policy", "check", check=True).returncode == 0
    agent = start_agent(env, env.config)
    yield agent, keys
    assert agent.stop() == 0, agent.log.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("exchange_id", [c[0] for c in CASES])
def test_a_ccxt_bot_with_the_template_policy_loads_markets_and_places_an_order(templated, exchange_id: str):
    from urllib.parse import urlsplit

    from support.exchange_readers import Http
    from support.exchange_server import verify
    from support.reference import hmac_credential
    from support.ccxt_calls import LOAD_MARKETS_PRIVATE

    agent, keys = templated
    label, api_key, secret, passphrase = keys[exchange_id]
    sent = []

    with SignerClient(agent.target) as client:
        exchange = agent_exchange(exchange_id, label, client=client, config={"enableRateLimit": False})
        signed_by_agent = []
        original_sign = client.sign
        client.sign = lambda *a, **k: signed_by_agent.append(original_sign(*a, **k)) or signed_by_agent[-1]

        def fetch(url, method="GET", headers=None, body=None):
            private = len(signed_by_agent) > len([s for s in sent if s["private"]])
            sent.append({"url": url, "method": method, "headers": dict(headers or {}), "body": body or "",
                         "private": private})
            return ANSWERS.get(urlsplit(url).path, {}) if private else {}

        exchange.fetch = fetch
        _despite_empty_answers(exchange.load_markets)
        loaded = [(s["method"], urlsplit(s["url"]).path) for s in sent if s["private"]]
        assert loaded == LOAD_MARKETS_PRIVATE.get(exchange_id, []), exchange_id
        exchange.set_markets([unified_market(exchange, exchange_id)])
        symbol = exchange.symbols[0]
        amount = MARKETS[exchange_id][3]
        _despite_empty_answers(exchange.create_order, symbol, "limit", "buy", amount, 50000)
    order = [s for s in sent if s["private"]][-1]
    assert order["method"] in ("POST", "GET") and len([s for s in sent if s["private"]]) > len(loaded)
    assert secret not in repr(order)
    parts = urlsplit(order["url"])
    http = Http(order["method"], parts.path, parts.query, order["body"], tuple(order["headers"].items()))
    _, make_secret, _, options, _ = next(c for c in CASES if c[0] == exchange_id)
    verdict = verify(exchange_id, http, hmac_credential(exchange_id, api_key, secret, passphrase, **options))
    assert verdict.ok, (exchange_id, parts.path, verdict.why)
    # The check can fail: under another secret, the same request does not verify.
    assert not verify(exchange_id, http, hmac_credential(exchange_id, api_key, make_secret(), passphrase,
                                                         **options)).ok


@pytest.mark.e2e
def test_a_bitstamp_get_is_never_handed_to_a_ccxt_bot_signed(env: Env, agent, label: str):
    # Its signed text joins the path to the empty Content-Type (agent.delivery.RELABELLED): the signature
    # for GET contacts/X/ verifies as GET contacts/ with 'Content-Type: X/'. Sign refuses; Send places it.
    _import(env, label, "bitstamp", f"ak-{secrets.token_hex(8)}", new_secret(32), None, {})
    with SignerClient(agent.target) as client:
        bridged = capture(agent_exchange("bitstamp", label, client=client, config={"enableRateLimit": False}), NOW_MS)
        with pytest.raises(ccxt.PermissionDenied, match=r"delivery.*Content-Type.*call Send"):
            sent(bridged, "private", "contacts/{contact_uuid}/", "GET",
                 {"contact_uuid": "6a1c1c3e-0000-4000-8000-000000000001"})
        # a POST's Content-Type is the form type, which no path can borrow: signed as before
        assert sent(bridged, "private", "balance/", "POST", {})["headers"]["X-Auth-Signature"]
