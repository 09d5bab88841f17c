"""The exchange's rate-limit answers feed the agent's own limits (agent/send/exchange_limits.py): a real
agent sending to the local exchange, whose answers carry the headers the test sets. Once the exchange
says a budget is spent, the Sends it covers are refused (RESOURCE_EXHAUSTED, rule rate:exchange, naming
the exchange's limit and how long) and never reach the exchange; what it does not cover still goes."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from signing_agent_client import RateLimitedError, SignerClient
from support.deploy import TEST_BOT, Env, make_env, run_cli, start_agent
from support.exchange_server import ExchangeServer, TestCA, binance_spot, bybit_spot
from support.leaks import new_secret
from support.reference import hmac_credential

pytestmark = pytest.mark.e2e

ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}
BYBIT_ORDER = json.dumps({"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
                          "qty": "0.01", "price": "50000"})


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    env: Env = make_env(tmp_path_factory, "send-limits")
    ca = TestCA(env.root)
    server = ExchangeServer(tls=ca)
    bn_key, bn_secret = f"ak-{secrets.token_hex(8)}", new_secret(64)
    by_key, by_secret = f"ak-{secrets.token_hex(8)}", new_secret(36)
    urls = {"bn": server.add(binance_spot(), hmac_credential("binance", bn_key, bn_secret)),
            "by": server.add(bybit_spot(), hmac_credential("bybit", by_key, by_secret))}
    for label in ("bn1", "bn2"):
        run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", bn_key,
                stdin=bn_secret + "\n", check=True)
    run_cli(env, "keys", "import", "--label", "by", "--exchange", "bybit", "--api-key", by_key,
            stdin=by_secret + "\n", check=True)
    tables = "".join(f'\n[keys.{label}]\nendpoints = ["* /**"]\ndelivery = "send"\nsend_to = "{urls[label[:2]]}"\n'
                     for label in ("bn1", "bn2", "by"))
    (env.root / "policy.toml").write_text(f'[bots.{TEST_BOT}]\nkeys = ["*"]\n{tables}')
    config = env.write_config("send", extra=f'[send]\nca_file = "{ca.ca_file}"\n')
    agent = start_agent(env, config)
    client = SignerClient(agent.target)
    try:
        yield server, client
    finally:
        client.close()
        server.close()
        assert agent.stop() == 0, agent.log.read_text()


def _family(server: ExchangeServer, exchange: str):
    return server._families[exchange][0]


def test_bybit_a_spent_endpoint_is_held_until_its_reset_and_other_endpoints_still_go(deployment):
    server, client = deployment
    family = _family(server, "bybit")
    reset_ms = int((time.time() + 1.5) * 1000)
    family.headers.update({"X-Bapi-Limit": "20", "X-Bapi-Limit-Status": "0",
                           "X-Bapi-Limit-Reset-Timestamp": str(reset_ms)})
    try:
        assert client.send("by", "POST", "/v5/order/create", body=BYBIT_ORDER).status == 200
    finally:
        family.headers.clear()
    before = len(server.received("bybit"))
    with pytest.raises(RateLimitedError, match=r"rate:exchange.*POST /v5/order/create.*X-Bapi-Limit-Status 0 of "
                                               r"X-Bapi-Limit 20.*send again after") as refused:
        client.send("by", "POST", "/v5/order/create", body=BYBIT_ORDER)
    assert refused.value.code == "RESOURCE_EXHAUSTED" and len(server.received("bybit")) == before
    # Another endpoint of the same key has its own budget.
    assert client.send("by", "GET", "/v5/order/realtime", query={"category": "spot"}).status == 200
    time.sleep(max(0.0, reset_ms / 1000 - time.time()) + 0.2)
    assert client.send("by", "POST", "/v5/order/create", body=BYBIT_ORDER).status == 200


def test_binance_a_spent_order_count_holds_the_keys_orders_not_its_reads_nor_other_keys(deployment):
    server, client = deployment
    family = _family(server, "binance")
    family.headers["X-MBX-ORDER-COUNT-10S"] = "100"
    try:
        assert client.send("bn1", "POST", "/api/v3/order", body=ORDER).status == 200
    finally:
        family.headers.clear()
    before = len(server.received("binance"))
    with pytest.raises(RateLimitedError, match=r"X-MBX-ORDER-COUNT-10S: 100 of 100.*reads and cancels still go"):
        client.send("bn1", "POST", "/api/v3/order", body=ORDER)
    assert len(server.received("binance")) == before
    assert client.send("bn1", "GET", "/api/v3/account").status == 200  # reads do not count
    assert client.send("bn2", "POST", "/api/v3/order", body=ORDER).status == 200  # another account's budget


def test_binance_a_spent_ip_weight_holds_every_key_at_that_host(deployment):
    server, client = deployment
    family = _family(server, "binance")
    family.headers["X-MBX-USED-WEIGHT-1M"] = "6000"
    try:
        assert client.send("bn2", "GET", "/api/v3/account").status == 200
    finally:
        family.headers.clear()
    before = len(server.received("binance"))
    for label in ("bn1", "bn2"):
        with pytest.raises(RateLimitedError, match=r"the IP's request weight \(X-MBX-USED-WEIGHT-1M: 6000 of 6000\)"):
            client.send(label, "GET", "/api/v3/account")
    assert len(server.received("binance")) == before  # nothing more reached the exchange
    assert client.send("by", "GET", "/v5/order/realtime", query={"category": "spot"}).status == 200
