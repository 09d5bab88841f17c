"""The local exchange (exchange_server.py) itself: it rejects what the exchange would reject, its
failure hooks reach a ccxt bot as the errors ccxt's retry logic expects, and it speaks TLS with a
throw-away CA. Requests are signed by the real agent on a fresh SoftHSM2 token."""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request

import ccxt
import pytest

from support.deploy import Env, run_cli
from support.leaks import new_secret
from support.exchange_server import ExchangeServer, TestCA, binance_spot
from support.reference import hmac_credential
from signing_agent_client import SignerClient
from signing_agent_client.ccxt_bridge import agent_exchange

ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}


@pytest.fixture
def binance(env: Env, agent, label: str):
    """(server, signer, key label): the local Binance checking the key LABEL the agent holds."""
    api_key, secret = f"ak-{secrets.token_hex(8)}", new_secret(64)
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", api_key,
            stdin=secret + "\n", check=True)
    with ExchangeServer() as server, SignerClient(agent.target) as signer:
        server.add(binance_spot(), hmac_credential("binance", api_key, secret))
        yield server, signer, label


def send(url: str, req, *, body: str | None = None, context: ssl.SSLContext | None = None):
    data = (req.body if body is None else body).encode() or None
    request = urllib.request.Request(url + req.path, method=req.method, headers=req.headers_dict(), data=data)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.e2e
def test_a_signed_request_verifies_and_the_same_request_altered_does_not(binance):
    server, signer, label = binance
    req = signer.sign(label, "POST", "/api/v3/order", body=ORDER)
    status, order = send(server.url("binance"), req)
    assert status == 200 and order["symbol"] == "BTCUSDT" and order["origQty"] == "0.001"
    # One more BTC, same signature: Binance answers -1022 and places nothing.
    status, error = send(server.url("binance"), req, body=req.body.replace("quantity=0.001", "quantity=1.001"))
    assert status == 401 and error["code"] == -1022
    assert [r.http.method for r in server.verified()] == ["POST"]
    assert [r.params["quantity"] for r in server.rejected()] == ["1.001"]
    assert server.rejected()[0].verdict.why.endswith("differs")
    status, _ = send(server.url("binance"), signer.sign(label, "GET", "/api/v3/allOrderList"))
    assert status == 404 and server.received()[-1].verdict is None  # unknown route: not found, not checked


def _bridged(server: ExchangeServer, signer: SignerClient, label: str, **config):
    exchange = agent_exchange("binance", label, client=signer,
                              config={"options": {"fetchMarkets": {"types": ["spot"]}}, **config})
    exchange.urls["api"] = {name: server.url("binance") + url.split(".com", 1)[1]
                            for name, url in exchange.urls["api"].items()}
    return exchange


@pytest.mark.e2e
def test_failure_hooks_reach_a_ccxt_bot_as_the_errors_its_retries_expect(binance):
    server, signer, label = binance
    exchange = _bridged(server, signer, label, timeout=1000)
    exchange.load_markets()
    server.fail("binance", 429, headers={"Retry-After": "3"}, body={"code": -1003, "msg": "Too many requests."})
    with pytest.raises(ccxt.DDoSProtection):  # Binance's 429 in ccxt: a NetworkError, the back-off kind
        exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)
    assert server.received()[-1].status == 429
    server.fail(None, 503, body=b"<html>503 Service Temporarily Unavailable</html>")  # a load balancer's answer
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_balance()
    server.delay("binance", 2.0)
    with pytest.raises(ccxt.RequestTimeout):
        exchange.fetch_balance()
    # Each hook was used once: the next call is answered, and verified, as usual.
    assert exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 50000)["id"] == "28"
    assert server.verified()[-1].http.path == "/api/v3/order"


@pytest.mark.e2e
def test_tls_with_a_test_ca(binance, tmp_path):
    _, signer, label = binance
    ca = TestCA(tmp_path)
    credential = hmac_credential("binance", "ak-tls", new_secret(64))
    with ExchangeServer(tls=ca) as server:
        url = server.add(binance_spot(), credential)
        assert url.startswith("https://127.0.0.1:")
        status, info = send(url, signer.sign(label, "GET", "/api/v3/exchangeInfo"), context=ca.client_context())
        assert status == 200 and info["symbols"][0]["symbol"] == "BTCUSDT"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            send(url, signer.sign(label, "GET", "/api/v3/exchangeInfo"), context=ssl.create_default_context())
        # The certificate names the real host too: what a send-mode agent connects to.
        with ssl.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw, \
                ca.client_context().wrap_socket(raw, server_hostname="api.binance.com") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
