"""Send mode end to end: a real agent on a fresh SoftHSM2 token places requests itself, over HTTPS
(a throw-away CA the agent is configured to trust), on the local exchange (exchange_server.py), which
verifies every signature as the exchange would and keeps the orders it accepted.

What must hold (issue 20): the exchange receives exactly the body the policy checked (HTX and Coinbase,
whose signatures do not cover it); a policy that would hand out such signatures is refused; a lost
answer to an accepted order is reconciled by client order id without a second order; the bot never
sees a signature; every signature the exchange saw verifies."""

from __future__ import annotations

import json
import secrets
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.deploy import TEST_BOT, Env, make_env, run_cli, start_agent
from support.leaks import new_secret, register_secret
from support.exchange_server import ExchangeServer, TestCA, binance_spot, coinbase_advanced, htx_spot
from support.reference import asymmetric_credential, hmac_credential
from signing_agent_client import (
    AgentUnavailableError,
    OutcomeUnknownError,
    RateLimitedError,
    RefusedError,
    SignerClient,
)

pytestmark = pytest.mark.e2e

HTX_ORDER = {"account-id": "10000001", "symbol": "btcusdt", "type": "buy-limit", "amount": "0.01", "price": "50000"}
CB_ORDER = {"client_order_id": "cb-1", "product_id": "BTC-USD", "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "50000"}}}


def _policy(urls: dict[str, str], dead_url: str) -> str:
    restricted = 'symbols = ["btcusdt"]\nmax_order = { btcusdt = "0.01" }\n'
    return f'''
[bots.{TEST_BOT}]
keys = ["*"]

[keys.bn]
endpoints = ["* /api/v3/**"]
delivery = "send"
send_to = "{urls['binance']}"

[keys.bn-sign]
endpoints = ["* /api/v3/**"]
delivery = "sign"

[keys.dead]
endpoints = ["* /api/v3/**"]
delivery = "both"
send_to = "{dead_url}"

[keys.htx]
endpoints = ["POST /v1/order/orders/place", "GET /v1/account/accounts"]
{restricted}delivery = "send"
send_to = "{urls['htx']}"

[keys.cb]
endpoints = ["POST /api/v3/brokerage/orders", "GET /api/v3/brokerage/accounts"]
symbols = ["BTC-USD"]
max_order = {{ BTC-USD = "0.01" }}
delivery = "send"
send_to = "{urls['coinbase']}"
'''


def _free_port_url() -> str:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    env: Env = make_env(tmp_path_factory, "send")
    ca = TestCA(env.root)
    server = ExchangeServer(tls=ca)
    bn_key, bn_secret = f"ak-{secrets.token_hex(8)}", new_secret(64)
    htx_key, htx_secret = f"hk-{secrets.token_hex(8)}", new_secret(32)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    register_secret(pem.split("\n")[1])
    cb_key = f"organizations/{secrets.token_hex(4)}/apiKeys/{secrets.token_hex(4)}"
    urls = {"binance": server.add(binance_spot(), hmac_credential("binance", bn_key, bn_secret)),
            "htx": server.add(htx_spot(), hmac_credential("htx", htx_key, htx_secret)),
            "coinbase": server.add(coinbase_advanced(), asymmetric_credential(cb_key, pem))}
    for label in ("bn", "bn-sign", "dead"):
        run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", bn_key,
                stdin=bn_secret + "\n", check=True)
    run_cli(env, "keys", "import", "--label", "htx", "--exchange", "htx", "--api-key", htx_key,
            stdin=htx_secret + "\n", check=True)
    run_cli(env, "keys", "import", "--label", "cb", "--exchange", "coinbase", "--api-key", cb_key, "--type", "ec-p256",
            stdin=pem.replace("\n", "\\n") + "\n", check=True)
    (env.root / "policy.toml").write_text(_policy(urls, _free_port_url()))
    config = env.write_config("send", extra=f'[send]\nca_file = "{ca.ca_file}"\nread_timeout_ms = 1000\n'
                                            'total_timeout_ms = 3000\n')
    agent = start_agent(env, config)
    client = SignerClient(agent.target)
    try:
        yield env, agent, server, client, {"binance": bn_key, "htx": htx_key, "coinbase": cb_key}
    finally:
        client.close()
        server.close()
        assert agent.stop() == 0, agent.log.read_text()
    # Every private request the exchange saw in this module verified, as the exchange verifies it.
    assert not server.rejected(), [(r.exchange, r.http.path, r.verdict) for r in server.rejected()]


def _private(server: ExchangeServer, exchange: str, before: int):
    return [r for r in server.received(exchange)[before:] if r.private]


def _no_signature_in(answer, api_key: str) -> None:
    shown = json.dumps([answer.headers, answer.body.decode("utf-8", "replace")])
    for secretish in ("signature", "Signature", "Bearer", "X-MBX-APIKEY", api_key):
        assert secretish not in shown


def test_send_places_the_order_and_returns_the_exchanges_answer(deployment):
    env, agent, server, client, api_keys = deployment
    before = len(server.received("binance"))
    answer = client.send("bn", "POST", "/api/v3/order", body={
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
        "price": "50000"})
    assert answer.status == 200 and answer.json()["orderId"] == 28 and not answer.reconciled
    seen = _private(server, "binance", before)
    assert len(seen) == 1 and seen[0].verdict.ok and seen[0].http.header("X-MBX-APIKEY") == api_keys["binance"]
    # The agent gave the order a client order id, the exchange kept it, the bot was told it.
    assert answer.client_order_id and seen[0].params["newClientOrderId"] == answer.client_order_id
    assert answer.json()["clientOrderId"] == answer.client_order_id
    _no_signature_in(answer, api_keys["binance"])
    audit = [json.loads(line) for line in (env.root / "state" / "audit.jsonl").read_text().splitlines()]
    sent = [a for a in audit if a.get("event") == "send" and a.get("client_order_id") == answer.client_order_id]
    assert len(sent) == 1 and sent[0]["http_status"] == 200 and sent[0]["order_id"] == "28"
    assert not any(api_keys["binance"] in json.dumps(a) for a in sent)


def test_a_bots_client_order_id_is_kept(deployment):
    _, _, server, client, _ = deployment
    answer = client.send("bn", "POST", "/api/v3/order", body={
        "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
        "price": "60000", "newClientOrderId": "bot-own-1"})
    assert answer.client_order_id == "bot-own-1" and "bot-own-1" in server._families["binance"][0].orders


def test_htx_body_reaches_the_exchange_exactly_as_checked(deployment):
    _, _, server, client, _ = deployment
    before = len(server.received("htx"))
    body = json.dumps(HTX_ORDER, separators=(",", ":"))
    answer = client.send("htx", "POST", "/v1/order/orders/place", body=body)
    assert answer.status == 200 and answer.json()["status"] == "ok"
    seen = _private(server, "htx", before)
    assert len(seen) == 1 and seen[0].verdict.ok
    # Byte for byte what the policy read: the bot's body, and the client order id the agent added
    # before the rules read it. Nothing else can be paired with the signature: the bot never has it.
    assert answer.client_order_id and seen[0].http.body == body[:-1] + f',"client-order-id":"{answer.client_order_id}"}}'
    with pytest.raises(RefusedError, match="order-size"):  # over the cap: refused before anything is sent
        client.send("htx", "POST", "/v1/order/orders/place", body=json.dumps({**HTX_ORDER, "amount": "5"}))
    with pytest.raises(RefusedError, match="symbol"):
        client.send("htx", "POST", "/v1/order/orders/place", body=json.dumps({**HTX_ORDER, "symbol": "ethusdt"}))
    assert len(_private(server, "htx", before)) == 1


def test_coinbase_cdp_body_reaches_the_exchange_exactly_as_checked(deployment):
    _, _, server, client, api_keys = deployment
    before = len(server.received("coinbase"))
    body = json.dumps(CB_ORDER, separators=(",", ":"))
    answer = client.send("cb", "POST", "/api/v3/brokerage/orders", body=body)
    assert answer.status == 200 and answer.json()["success"] is True
    seen = _private(server, "coinbase", before)
    assert len(seen) == 1 and seen[0].verdict.ok and "JWT" in seen[0].verdict.why
    assert seen[0].http.body == body
    _no_signature_in(answer, api_keys["coinbase"])
    big = {**CB_ORDER, "order_configuration": {"limit_limit_gtc": {"base_size": "3", "limit_price": "50000"}}}
    with pytest.raises(RefusedError, match="order-size"):
        client.send("cb", "POST", "/api/v3/brokerage/orders", body=json.dumps(big))
    assert len(_private(server, "coinbase", before)) == 1


def test_sign_is_refused_on_a_send_only_key_and_send_on_a_sign_only_key(deployment):
    _, _, server, client, _ = deployment
    before = len(server.received())
    with pytest.raises(RefusedError, match=r"rule 'delivery'.*call Send"):
        client.sign("htx", "POST", "/v1/order/orders/place", body=json.dumps(HTX_ORDER))
    with pytest.raises(RefusedError, match=r"rule 'delivery'.*sign-only"):
        client.send("bn-sign", "GET", "/api/v3/account")
    assert client.sign("bn-sign", "GET", "/api/v3/account").path.startswith("/api/v3/account?")
    assert len(server.received()) == before


def test_a_lost_answer_to_an_accepted_order_is_reconciled_without_a_second_order(deployment):
    _, _, server, client, _ = deployment
    orders = server._families["binance"][0].orders
    before, placed_before = len(server.received("binance")), len(orders)
    server.drop("binance")  # the order is accepted, then the connection closes with no answer
    answer = client.send("bn", "POST", "/api/v3/order", body={
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
        "price": "50000"})
    assert answer.reconciled and answer.status == 200
    assert answer.json()["clientOrderId"] == answer.client_order_id and answer.json()["origQty"] == "0.002"
    seen = _private(server, "binance", before)
    assert [(r.http.method, r.http.path) for r in seen].count(("POST", "/api/v3/order")) == 1
    assert ("GET", "/api/v3/order") in [(r.http.method, r.http.path) for r in seen]
    assert len(orders) == placed_before + 1 and all(r.verdict.ok for r in seen)


def test_a_slow_answer_to_a_write_without_client_ids_is_not_sent_again(deployment):
    _, _, server, client, _ = deployment
    client.send("bn", "POST", "/api/v3/order", body={
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
        "price": "50000", "newClientOrderId": "bot-cancel-1"})
    before = len(server.received("binance"))
    server.delay("binance", 2.0)  # over read_timeout_ms = 1000
    # A cancel is a write the agent has no lookup for: never sent twice, the bot is told to check.
    with pytest.raises(OutcomeUnknownError, match="not send it again") as refused:
        client.send("bn", "DELETE", "/api/v3/order", query={"symbol": "BTCUSDT", "origClientOrderId": "bot-cancel-1"})
    assert refused.value.code == "DEADLINE_EXCEEDED"
    time.sleep(1.5)  # the exchange finishes the slow one
    assert [r.http.method for r in _private(server, "binance", before)] == ["DELETE"]
    assert server._families["binance"][0].orders["bot-cancel-1"]["status"] == "CANCELED"


def test_htx_a_lost_answer_is_reconciled_and_a_late_order_is_never_called_absent_and_resent(deployment):
    _, _, server, client, _ = deployment
    htx_orders = server._families["htx"][0].orders
    server.drop("htx")
    answer = client.send("htx", "POST", "/v1/order/orders/place", body=json.dumps(HTX_ORDER))
    assert answer.reconciled and answer.json()["data"]["client-order-id"] == answer.client_order_id
    assert answer.client_order_id in htx_orders
    # An exchange slower than the agent's lookups: they find nothing, and the agent says so without
    # claiming the order was not placed; it was, once, later.
    placed = len(htx_orders)
    server.delay("htx", 5.0)
    with pytest.raises(OutcomeUnknownError, match="no order with that id yet.*same client order id") as lost:
        client.send("htx", "POST", "/v1/order/orders/place", body=json.dumps(HTX_ORDER))
    client_id = lost.value.message.split("client order id '")[1].split("'")[0]
    assert client_id not in htx_orders
    deadline = time.monotonic() + 6
    while client_id not in htx_orders and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client_id in htx_orders and len(htx_orders) == placed + 1


def test_a_read_is_retried_with_a_fresh_signature(deployment):
    _, _, server, client, _ = deployment
    before = len(server.received("binance"))
    server.fail("binance", 503, body={"code": -1001, "msg": "Internal error"})
    answer = client.send("bn", "GET", "/api/v3/account")
    assert answer.status == 200 and answer.json()["canTrade"] is True
    seen = _private(server, "binance", before)
    assert [r.status for r in seen] == [503, 200] and all(r.verdict.ok for r in seen)
    assert seen[0].params["signature"] != seen[1].params["signature"]


def test_a_429_is_handed_back_after_the_retries(deployment):
    _, _, server, client, _ = deployment
    before = len(server.received("binance"))
    server.fail("binance", 429, headers={"Retry-After": "0"}, body={"code": -1003, "msg": "Too many requests"},
                times=5)
    answer = client.send("bn", "GET", "/api/v3/account")
    assert answer.status == 429 and answer.header("Retry-After") == "0" and answer.json()["code"] == -1003
    assert len(_private(server, "binance", before)) == 3
    server._faults.clear()  # the two left over must not fail the next test


def test_the_exchanges_retry_after_holds_the_keys_next_sends(deployment):
    _, _, server, client, _ = deployment
    server.fail("binance", 429, headers={"Retry-After": "1"}, body={"code": -1003, "msg": "Too many requests"},
                times=3)
    assert client.send("bn", "GET", "/api/v3/account").status == 429  # after the agent's own retries
    before = len(server.received("binance"))
    with pytest.raises(RateLimitedError, match=r"rate:exchange.*Retry-After"):
        client.send("bn", "GET", "/api/v3/account")
    assert len(server.received("binance")) == before  # held in the agent, not sent
    time.sleep(1.1)
    assert client.send("bn", "GET", "/api/v3/account").status == 200


def test_an_unreachable_exchange_is_unavailable_and_nothing_was_placed(deployment):
    _, _, _, client, _ = deployment
    with pytest.raises(AgentUnavailableError, match="cannot connect.*Nothing was placed") as refused:
        client.send("dead", "POST", "/api/v3/order", body={"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                            "quantity": "0.001"})
    assert refused.value.code == "UNAVAILABLE"


def test_policy_check_and_the_live_reload_refuse_signatures_over_an_unbound_body(deployment):
    env, agent, server, client, _ = deployment
    policy = env.root / "policy.toml"
    good = policy.read_text()
    bad = good.replace('[keys.htx]\nendpoints = ["POST /v1/order/orders/place", "GET /v1/account/accounts"]\n'
                       'symbols = ["btcusdt"]\nmax_order = { btcusdt = "0.01" }\ndelivery = "send"',
                       '[keys.htx]\nendpoints = ["POST /v1/order/orders/place", "GET /v1/account/accounts"]\n'
                       'symbols = ["btcusdt"]\nmax_order = { btcusdt = "0.01" }\ndelivery = "both"')
    bad = bad.replace('symbols = ["BTC-USD"]\nmax_order = { BTC-USD = "0.01" }\ndelivery = "send"',
                      'symbols = ["BTC-USD"]\nmax_order = { BTC-USD = "0.01" }')  # absent: "sign"
    assert bad.count('delivery = "send"') == 1  # only bn is left sending
    candidate = env.root / "candidate.toml"
    candidate.write_text(bad)
    checked = run_cli(env, "policy", "check", "--file", str(candidate), config=env.root / "send.toml")
    assert checked.returncode != 0
    assert "'htx' (htx, hmac)" in checked.stderr and "POST body" in checked.stderr
    assert "'cb' (coinbase, ec-p256)" in checked.stderr and "JWT" in checked.stderr
    assert 'delivery = "send"' in checked.stderr
    policy.write_text(bad)
    try:
        deadline = time.monotonic() + 5
        audit = env.root / "state" / "audit.jsonl"
        while time.monotonic() < deadline and '"decision":"rejected"' not in audit.read_text().replace(" ", ""):
            time.sleep(0.1)
        reloads = [json.loads(line) for line in audit.read_text().splitlines() if '"policy.reload"' in line]
        assert reloads[-1]["decision"] == "rejected" and "restricts symbols, max_order" in reloads[-1]["reason"]
        assert "POST body" in agent.log.read_text()  # the whole reason, in the agent's log
        # The policy in force is still the good one: HTX orders are sent, Sign on the key refused.
        assert client.send("htx", "POST", "/v1/order/orders/place", body=json.dumps(HTX_ORDER)).status == 200
        with pytest.raises(RefusedError, match="delivery"):
            client.sign("htx", "POST", "/v1/order/orders/place", body=json.dumps(HTX_ORDER))
    finally:
        policy.write_text(good)


def test_a_ccxt_bot_in_send_mode_keeps_its_code_and_ccxt_parses_the_answers(deployment):
    import ccxt

    from signing_agent_client.ccxt_bridge import agent_exchange

    _, _, server, client, _ = deployment
    before = len(server.received("binance"))
    exchange = agent_exchange("binance", "bn", client=client, send=True)
    account = exchange.private_get_account()
    assert account["canTrade"] is True and {b["asset"] for b in account["balances"]} == {"BTC", "USDT"}
    placed = exchange.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                          "quantity": "0.003", "price": "50000"})
    assert placed["orderId"] == 28 and placed["origQty"] == "0.003"
    # The exchange's error goes through ccxt's own error handling: Binance -2013 is OrderNotFound.
    with pytest.raises(ccxt.OrderNotFound):
        exchange.private_get_order({"symbol": "BTCUSDT", "origClientOrderId": "never-placed"})
    with pytest.raises(ccxt.PermissionDenied, match="delivery"):  # a sign-only key, in send mode
        agent_exchange("binance", "bn-sign", client=client, send=True).private_get_account()
    seen = _private(server, "binance", before)
    assert len(seen) == 3 and all(r.verdict.ok for r in seen)
    # ccxt's placeholder credentials never reached the exchange: the agent's key did.
    assert all(r.http.header("X-MBX-APIKEY") != "agent-held" for r in seen)


def test_a_ccxt_async_bot_in_send_mode(deployment):
    import asyncio

    from signing_agent_client.aio import AsyncSignerClient
    from signing_agent_client.ccxt_bridge import agent_exchange_async

    _, agent, server, _, _ = deployment
    before = len(server.received("binance"))

    async def run():
        exchange = agent_exchange_async("binance", "bn", client=AsyncSignerClient(agent.target), send=True)
        try:
            return await asyncio.gather(exchange.private_get_account(), exchange.private_post_order(
                {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.004",
                 "price": "70000"}))
        finally:
            await exchange.close()

    account, placed = asyncio.run(run())
    assert account["canTrade"] is True and placed["side"] == "SELL" and placed["origQty"] == "0.004"
    seen = _private(server, "binance", before)
    assert len(seen) == 2 and all(r.verdict.ok for r in seen)


def test_an_agent_does_not_start_on_a_policy_handing_out_unbound_signatures(deployment):
    env, _, _, _, _ = deployment
    bad = env.root / "unbound-policy.toml"
    bad.write_text(f'[bots.{TEST_BOT}]\nkeys = ["*"]\n\n[keys.htx]\nendpoints = ["POST /v1/order/orders/place"]\n'
                   'symbols = ["btcusdt"]\n')  # no delivery: "sign"
    config = env.write_config("bad-start", extra='[policy]\nfile = "unbound-policy.toml"\n')
    refused = start_agent(env, config, wait=False)
    assert refused.proc.wait(timeout=60) != 0
    log = refused.log.read_text()
    assert "'htx' (htx, hmac)" in log and "POST body" in log and "delivery = " in log, log


def test_a_ccxt_htx_bot_in_send_mode_places_its_order_with_the_body_the_policy_read(deployment):
    import ccxt

    from signing_agent_client.ccxt_bridge import agent_exchange
    from support.ccxt_calls import unified_market

    _, _, server, client, _ = deployment
    before = len(server.received("htx"))
    exchange = agent_exchange("htx", "htx", client=client, send=True, config={"enableRateLimit": False})
    exchange.set_markets([unified_market(exchange, "htx")])
    order = exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 50000)
    seen = _private(server, "htx", before)
    placed = [r for r in seen if r.http.path == "/v1/order/orders/place"]
    assert len(placed) == 1 and all(r.verdict.ok for r in seen)
    body = json.loads(placed[0].http.body)
    assert (body["symbol"], body["amount"], body["type"]) == ("btcusdt", "0.01", "buy-limit")
    assert order["id"] == server._families["htx"][0].orders[body.get("client-order-id") or order["id"]]["id"]
    with pytest.raises(ccxt.PermissionDenied, match="order-size"):  # over the cap: refused, nothing sent
        exchange.create_order("BTC/USDT", "limit", "buy", 1, 50000)
    assert len([r for r in _private(server, "htx", before) if r.http.path == "/v1/order/orders/place"]) == 1
