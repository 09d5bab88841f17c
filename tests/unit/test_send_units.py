"""Send mode's parts on their own: delivery in the policy, the host registry, client order ids, the
transport's TLS and failure kinds (against the local exchange), the audit summary."""

from __future__ import annotations

import json

import pytest

from agent.delivery import UNBOUND, check_policy
from agent.exchanges import EXCHANGES
from agent.policy import PolicyError, parse_policy
from agent.policy_templates import default_policy
from agent.send import hosts, orders
from agent.send.sender import summary
from agent.send.transport import Answer, SendFailure, SendSettings, Transport
from support.exchange_server import ExchangeServer, TestCA, binance_spot
from support.reference import hmac_credential
from signing_agent_client.request import RawBody, RequestInvalid, UnsignedRequest

RESTRICTED = 'symbols = ["btcusdt"]\nmax_order = { btcusdt = "0.01" }\n'


def _policy(table: str) -> bytes:
    return f'[keys.k]\nendpoints = ["* /**"]\n{table}'.encode()


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
def test_every_template_sends_and_is_accepted_for_its_exchange(exchange: str):
    policy = parse_policy(default_policy(exchange, "k", bot="b").encode())
    assert policy.keys["k"].delivery == "send" and policy.keys["k"].send_to == "production"
    key_type = EXCHANGES[exchange].key_types[0]
    assert check_policy(policy, [("k", exchange, key_type)]) == []


@pytest.mark.parametrize("delivery", ['delivery = "sign"\n', 'delivery = "both"\n', ""])
@pytest.mark.parametrize("exchange,key_type", [("htx", "hmac"), ("htx", "ed25519"), ("coinbase", "ec-p256"),
                                               ("coinbase", "ed25519")])
def test_signatures_over_an_unbound_body_are_refused_with_restrictions(delivery, exchange, key_type):
    policy = parse_policy(_policy(RESTRICTED + delivery))
    [problem] = check_policy(policy, [("k", exchange, key_type)])
    assert f"({exchange}, {key_type})" in problem and 'delivery = "send"' in problem
    assert "POST body" in problem if exchange == "htx" else "JWT" in problem
    # Without restrictions, or sent by the agent, or a key type whose signature covers the body: accepted.
    assert check_policy(parse_policy(_policy(delivery)), [("k", exchange, key_type)]) == []
    assert check_policy(parse_policy(_policy(RESTRICTED + 'delivery = "send"\n')), [("k", exchange, key_type)]) == []
    assert check_policy(policy, [("k", "coinbase", "hmac"), ("k", "binance", "hmac")]) == []


def test_a_key_under_the_default_table_and_an_unknown_key_type_are_checked_too():
    policy = parse_policy(b'[keys."*"]\nendpoints = ["* /**"]\n' + RESTRICTED.encode())
    [problem] = check_policy(policy, [("any", "htx", "hmac")])
    assert '[keys."*"]' in problem
    [problem] = check_policy(parse_policy(_policy(RESTRICTED)), [("k", "coinbase", "")])
    assert "key type unknown" in problem


def test_unbound_names_only_registered_exchanges():
    assert set(UNBOUND) <= set(EXCHANGES)


@pytest.mark.parametrize("value,error", [
    ("http://127.0.0.1:8443", "https"), ("https://", "host"), ("https://u:p@host", "user"),
    ("https://host/api", "no path"), ("https://host:99999", "port"), ("https://host?x=1", "no path"),
])
def test_send_to_is_a_registry_name_or_a_plain_https_base_url(value: str, error: str):
    with pytest.raises(PolicyError, match=f"send_to must be.*{error}"):
        parse_policy(_policy(f'send_to = "{value}"\n'))
    assert parse_policy(_policy('send_to = "https://Exchange.Test:8443/"\n')).keys["k"].send_to == \
        "https://exchange.test:8443"


def test_every_exchange_has_a_production_host_and_htx_follows_the_path_and_the_key_options():
    for exchange in EXCHANGES:
        if exchange == "binancetr":  # no verified host: an operator's base URL only
            with pytest.raises(hosts.NoHost, match="base URL"):
                hosts.base_url(exchange, "production", "/api/v3/order", {})
            continue
        path = "/v1/order/orders/place" if exchange == "htx" else "/api/v3/order"
        assert hosts.base_url(exchange, "production", path, {}).startswith("https://")
    assert hosts.base_url("htx", "production", "/swap-api/v1/swap_order", {"contract_host": "api.hbdm.com"}) == \
        "https://api.hbdm.com"
    assert hosts.base_url("binanceusdm", "production", "/fapi/v1/order", {}) == "https://fapi.binance.com"
    assert hosts.base_url("binance", "testnet", "/api/v3/order", {}) == "https://testnet.binance.vision"
    with pytest.raises(hosts.NoHost, match="kraken has no testnet"):
        hosts.base_url("kraken", "testnet", "/0/private/AddOrder", {})
    assert hosts.base_url("kraken", "https://127.0.0.1:9", "/0/private/AddOrder", {}) == "https://127.0.0.1:9"


def test_a_client_order_id_is_added_without_touching_the_bots_bytes():
    raw = UnsignedRequest("POST", "/api/v5/trade/order", body=RawBody('{"instId": "BTC-USDT",  "sz": 1.10}'))
    added = orders.with_param(raw, "clOrdId", "sa1")
    assert added.body.text == '{"instId": "BTC-USDT",  "sz": 1.10,"clOrdId":"sa1"}'
    assert orders.param(added, "clOrdId") == "sa1" and orders.param(raw, "clOrdId") is None
    form = orders.with_param(UnsignedRequest("POST", "/api/v3/order", body=(("symbol", "BTCUSDT"),)), "n", "v")
    assert form.body == (("symbol", "BTCUSDT"), ("n", "v"))
    made = {orders.REGISTRY["binance"].make() for _ in range(100)}
    assert len(made) == 100 and all(len(m) == 32 and m.isalnum() for m in made)
    assert orders.for_request("binance", UnsignedRequest("POST", "/api/v3/order")) is not None
    assert orders.for_request("binance", UnsignedRequest("DELETE", "/api/v3/order")) is None
    assert orders.for_request("htx", UnsignedRequest("POST", "/v1/order/orders/place")) is not None
    assert orders.for_request("coinbase", UnsignedRequest("POST", "/api/v3/brokerage/orders")) is not None
    assert orders.for_request("kraken", UnsignedRequest("POST", "/0/private/AddOrder")) is None


@pytest.mark.parametrize("exchange", sorted(orders.REGISTRY))
def test_every_id_the_agent_makes_has_the_exchanges_form_and_the_form_refuses_others(exchange: str):
    rules = orders.REGISTRY[exchange]
    made = {rules.make() for _ in range(50)}
    assert len(made) == 50 and all(rules.valid.fullmatch(m) for m in made)
    for bad in ("", "a b", "x" * 65, "a&b=c", "é", 12):
        with pytest.raises(RequestInvalid, match=rf"{rules.param} .* is not a client order id X takes"):
            rules.checked("X", bad)


def test_cryptocom_and_deribit_look_an_order_up_where_their_documentation_says():
    create = UnsignedRequest("POST", "/exchange/v1/private/create-order", body=RawBody('{"instrument_name":"BTC_USD"}'))
    lookup = orders.REGISTRY["cryptocom"].lookup(create, "SA1")
    assert (lookup.method, lookup.path) == ("POST", "/exchange/v1/private/get-order-detail")
    assert json.loads(lookup.body.text) == {"client_oid": "SA1"}
    deribit = orders.REGISTRY["deribit"]
    for instrument, currency in (("BTC-PERPETUAL", "BTC"), ("ETH-27DEC24-3000-C", "ETH"),
                                 ("BTC_USDC-PERPETUAL", "USDC"), ("SOL_USDC-PERPETUAL", "USDC")):
        buy = UnsignedRequest("GET", "/api/v2/private/buy", query=(("instrument_name", instrument),))
        found = deribit.lookup(buy, "sa1")
        assert (found.method, found.path) == ("GET", "/api/v2/private/get_order_state_by_label")
        assert found.query == (("currency", currency), ("label", "sa1"))
    assert orders.for_request("deribit", UnsignedRequest("GET", "/api/v2/private/sell")) is deribit
    assert orders.for_request("deribit", UnsignedRequest("GET", "/api/v2/private/edit")) is None
    # Crypto.com's signed text takes no lower case in a value: the agent's ids have none, a bot's is refused.
    made = orders.REGISTRY["cryptocom"].make()
    assert made == made.upper() and len(made) <= 36
    with pytest.raises(RequestInvalid, match="capital letters"):
        orders.REGISTRY["cryptocom"].checked("Crypto.com", "ccxt_abc")


def test_a_raw_form_body_is_read_and_given_an_id_after_the_bots_bytes():
    # ccxt sends Binance's, MEXC's and Bitstamp's orders as form text, signed byte for byte.
    raw = UnsignedRequest("POST", "/api/v2/buy/btcusd/", body=RawBody("amount=0.01&price=50000.10"))
    added = orders.with_param(raw, "client_order_id", "sa1")
    assert added.body.text == "amount=0.01&price=50000.10&client_order_id=sa1"
    assert orders.param(added, "client_order_id") == "sa1" and orders.param(raw, "client_order_id") is None
    given = UnsignedRequest("POST", "/api/v3/order", body=RawBody("symbol=BTCUSDT&newClientOrderId=x-R4%2F1"))
    assert orders.param(given, "newClientOrderId") == "x-R4/1" and orders.text_param(given, "symbol") == "BTCUSDT"
    unreadable = UnsignedRequest("POST", "/api/v2/buy/btcusd/", body=RawBody("amount=1&&price=2"))
    assert orders.with_param(unreadable, "client_order_id", "sa1") == unreadable  # the signer refuses it
    assert orders.param(unreadable, "amount") is None


def test_bitstamp_orders_are_found_by_their_pair_path_and_looked_up_by_order_status():
    bitstamp = orders.REGISTRY["bitstamp"]
    for path in ("/api/v2/buy/btcusd/", "/api/v2/sell/ethusd/", "/api/v2/buy/market/btcusd/"):
        assert orders.for_request("bitstamp", UnsignedRequest("POST", path)) is bitstamp, path
    for method, path in (("POST", "/api/v2/buy/instant/btcusd/"), ("POST", "/api/v2/cancel_order/"),
                         ("GET", "/api/v2/buy/btcusd/"), ("POST", "/api/v2/buy/btcusd")):
        assert orders.for_request("bitstamp", UnsignedRequest(method, path)) is None, (method, path)
    lookup = bitstamp.lookup(UnsignedRequest("POST", "/api/v2/buy/btcusd/", body=(("amount", "1"),)), "sa1")
    assert (lookup.method, lookup.path, lookup.body) == ("POST", "/api/v2/order_status/", (("client_order_id", "sa1"),))


def test_a_one_order_batch_is_read_and_a_longer_one_gets_no_id():
    one = UnsignedRequest("POST", "/api/v5/trade/batch-orders", body=RawBody('[{"instId":"BTC-USDT","clOrdId":"a1"}]'))
    assert orders.param(one, "clOrdId") == "a1" and orders.text_param(one, "instId") == "BTC-USDT"
    two = UnsignedRequest("POST", "/api/v5/trade/batch-orders", body=RawBody('[{"instId":"A"},{"instId":"B"}]'))
    assert orders.with_param(two, "clOrdId", "sa1") == two and orders.param(two, "instId") is None


# (exchange, the lookup's HTTP status, its body, what the agent makes of it)
LOOKUP_ANSWERS = [
    ("binance", 200, b'{"orderId": 1}', orders.FOUND),
    ("binance", 400, b'{"code": -2013, "msg": "Order does not exist."}', orders.ABSENT),
    ("binance", 400, b'{"code": -1021, "msg": "Timestamp outside recvWindow"}', orders.UNKNOWN),
    ("binance", 502, b"<html>", orders.UNKNOWN),
    # Gate finds an order by its text only while it is open: its "not found" is not "never placed".
    ("gate", 200, b'{"id": "7", "text": "t-sa1"}', orders.FOUND),
    ("gate", 404, b'{"label": "ORDER_NOT_FOUND", "message": "Order not found"}', orders.UNKNOWN),
    ("coinbase", 200, b'{"success": true, "success_response": {"order_id": "o1"}}', orders.FOUND),
    ("coinbase", 200, b'{"success": false, "error_response": {"error": "INSUFFICIENT_FUND"}}', orders.UNKNOWN),
    # Crypto.com's INVALID_ORDERID and Deribit's empty list (it lists recent orders only) are not "never placed".
    ("cryptocom", 200, b'{"id": 1, "code": 0, "result": {"order_id": "9", "client_oid": "SA1"}}', orders.FOUND),
    ("cryptocom", 400, b'{"id": 1, "code": 212, "message": "INVALID_ORDERID"}', orders.UNKNOWN),
    ("cryptocom", 200, b'{"id": 1, "code": 40401, "result": {"order_id": "9"}}', orders.UNKNOWN),
    ("deribit", 200, b'{"jsonrpc": "2.0", "result": [{"order_id": "BTC-1", "label": "sa1"}]}', orders.FOUND),
    ("deribit", 200, b'{"jsonrpc": "2.0", "result": []}', orders.UNKNOWN),
    ("deribit", 400, b'{"jsonrpc": "2.0", "error": {"message": "invalid_signature", "code": 13004}}', orders.UNKNOWN),
    ("bitstamp", 200, b'{"id": "7", "status": "Open", "client_order_id": "sa1", "transactions": []}', orders.FOUND),
    ("bitstamp", 400, b'{"status": "error", "reason": "Order not found.", "code": "API0014"}', orders.UNKNOWN),
    ("bitstamp", 200, b'{"status": "error", "reason": "Order not found.", "id": "7"}', orders.UNKNOWN),
]


@pytest.mark.parametrize(("exchange", "status", "body", "state"), LOOKUP_ANSWERS)
def test_lookup_answers_are_read_conservatively(exchange: str, status: int, body: bytes, state: str):
    assert orders.REGISTRY[exchange].state(status, body) == state


def test_no_odd_lookup_answer_is_taken_for_the_order():
    for exchange, rules in orders.REGISTRY.items():  # no answer, however odd, breaks a lookup
        for body in (b"<html>", b"[]", b"null", b'{"data": 1, "result": [], "code": "0"}',
                     b'{"retCode": 0, "result": [1]}', b'{"code": "200000", "data": [1]}'):
            assert rules.state(200, body) in (orders.UNKNOWN, orders.ABSENT), (exchange, body)


def test_tls_is_verified_and_failures_say_whether_the_request_went_out(tmp_path):
    ca = TestCA(tmp_path)
    with ExchangeServer(tls=ca) as server:
        url = server.add(binance_spot(), hmac_credential("binance", "k", "s" * 64))
        trusted = Transport(SendSettings(ca_file=ca.ca_file, read_timeout_s=0.5, total_timeout_s=2))
        answer = trusted.request("GET", url + "/api/v3/exchangeInfo", (), b"")
        assert answer.status == 200 and json.loads(answer.body)["symbols"][0]["symbol"] == "BTCUSDT"
        assert not {n.lower() for n, _ in answer.headers} & {"connection", "keep-alive", "transfer-encoding"}
        with pytest.raises(SendFailure) as failed:  # the system store does not know the test CA
            Transport(SendSettings()).request("GET", url + "/api/v3/exchangeInfo", (), b"")
        assert failed.value.kind == "tls" and failed.value.sent is False
        server.delay("binance", 1.5)
        with pytest.raises(SendFailure) as failed:
            trusted.request("POST", url + "/api/v3/order?signature=abc", (), b"")
        assert failed.value.kind == "timeout" and failed.value.sent is True
        assert "signature" not in str(failed.value)  # the query (a signature, on HTX) is never shown
        server.drop("binance")
        with pytest.raises(SendFailure) as failed:
            trusted.request("GET", url + "/api/v3/exchangeInfo", (), b"")
        assert failed.value.kind == "lost" and failed.value.sent is True
        trusted.close()
    with pytest.raises(SendFailure) as failed:
        trusted.request("GET", url + "/api/v3/exchangeInfo", (), b"")
    assert failed.value.kind == "unreachable" and failed.value.sent is False


def test_the_audit_summary_keeps_ids_and_codes_only():
    body = json.dumps({"code": "0", "data": [{"ordId": "123", "clOrdId": "c", "sCode": "0", "apiKey": "x"}]})
    assert summary(Answer(200, (), body.encode(), 1.0)) == {"order_id": "123", "exchange_code": "0"}
    assert summary(Answer(400, (), b'{"code": -2013, "msg": "Order does not exist."}', 1.0)) == \
        {"exchange_code": "-2013"}
    assert summary(Answer(502, (), b"<html>bad gateway</html>", 1.0)) == {}


class _Exchange:
    """A transport whose answers are scripted (the sender's decisions are what is tested here; the real
    transport is tested above and end to end)."""

    def __init__(self, total_timeout_s: float, script):
        self.settings = SendSettings(total_timeout_s=total_timeout_s)
        self.script, self.calls = list(script), []

    def request(self, method, url, headers, body):
        self.calls.append(method)
        step = self.script.pop(0) if self.script else self.script_last
        if isinstance(step, Exception):
            raise step
        return step


def _job(read: bool, client_id: str | None, exchange: str = "binance",
         request: UnsignedRequest = UnsignedRequest("POST", "/api/v3/order", body=(("symbol", "BTCUSDT"),))):
    from agent.send.sender import Job
    from signing_agent_client.request import SignedRequest

    return Job(exchange=exchange, base_url="https://x", request=request.validated(),
               signed=SignedRequest(request.method, "/p"), sign=lambda r: SignedRequest(r.method, "/again"),
               read=read, client_id=client_id, client_ids=orders.REGISTRY[exchange] if client_id else None)


def test_a_lost_order_is_looked_up_never_sent_again_and_the_bot_is_told_what_was_found():
    from agent.send.sender import Sender, SendError

    absent = Answer(400, (), b'{"code": -2013, "msg": "Order does not exist."}', 1.0)
    exchange = _Exchange(15.0, [SendFailure("timeout", True, "x did not answer in time")])
    exchange.script_last = absent
    audited = []
    sender = Sender(exchange, lambda **f: audited.append(f), sleep=lambda s: None)
    with pytest.raises(SendError) as lost:
        sender.place(_job(read=False, client_id="sa-1"), {"bot": "b", "key": "k", "method": "POST", "path": "/p"})
    assert lost.value.code == "DEADLINE_EXCEEDED" and "'sa-1'" in str(lost.value) and "no order" in str(lost.value)
    assert exchange.calls == ["POST", "GET", "GET", "GET"]  # one order, three lookups
    assert audited[-1]["outcome"] == "failed" and audited[-1]["client_order_id"] == "sa-1"
    assert "the exchange refuses a second order with it" in str(lost.value)
    # A short budget: no lookup starts past it, and the message does not claim what was not asked.
    exchange = _Exchange(0.1, [SendFailure("timeout", True, "x did not answer in time")])
    exchange.script_last = absent
    with pytest.raises(SendError, match="did not say"):
        Sender(exchange, lambda **f: None, sleep=lambda s: None).place(
            _job(read=False, client_id="sa-2"), {"bot": "b", "key": "k", "method": "POST", "path": "/p"})
    assert exchange.calls == ["POST"]


def test_where_an_id_can_be_reused_the_bot_is_not_told_that_resending_with_it_is_safe():
    from agent.send.sender import Sender, SendError

    # Deribit takes many orders with one label: an empty lookup is no proof, and a resend is a second order.
    exchange = _Exchange(15.0, [SendFailure("timeout", True, "x did not answer in time")])
    exchange.script_last = Answer(200, (), b'{"jsonrpc": "2.0", "result": []}', 1.0)
    buy = UnsignedRequest("GET", "/api/v2/private/buy", query=(("instrument_name", "BTC-PERPETUAL"),))
    sender = Sender(exchange, lambda **f: None, sleep=lambda s: None)
    with pytest.raises(SendError) as lost:
        sender.place(_job(read=False, client_id="sa1", exchange="deribit", request=buy),
                     {"bot": "b", "key": "k", "method": "GET", "path": "/p"})
    message = str(lost.value)
    assert lost.value.code == "DEADLINE_EXCEEDED" and exchange.calls == ["GET"] * 4
    assert "did not say whether it exists" in message and "may take a second order with the same id" in message
    assert "refuses a second order" not in message


def test_a_write_that_never_left_is_unavailable_and_one_without_client_ids_is_not_looked_up():
    from agent.send.sender import Sender, SendError

    from prometheus_client import CollectorRegistry

    from agent.metrics import Metrics

    registry = CollectorRegistry()
    exchange = _Exchange(15.0, [SendFailure("unreachable", False, "cannot connect to x")])
    with pytest.raises(SendError, match="Nothing was placed") as failed:
        Sender(exchange, lambda **f: None, sleep=lambda s: None, metrics=Metrics(registry)).place(
            _job(read=False, client_id=None), {"bot": "b", "key": "k", "method": "POST", "path": "/p"})
    assert failed.value.code == "UNAVAILABLE" and exchange.calls == ["POST"]
    sample = registry.get_sample_value("signing_agent_send_total", {"exchange": "binance", "outcome": "unavailable"})
    assert sample == 1.0
    exchange = _Exchange(15.0, [SendFailure("lost", True, "the connection to x broke")])
    with pytest.raises(SendError, match="not send it again") as failed:
        Sender(exchange, lambda **f: None, sleep=lambda s: None).place(
            _job(read=False, client_id=None), {"bot": "b", "key": "k", "method": "POST", "path": "/p"})
    assert failed.value.code == "DEADLINE_EXCEEDED" and exchange.calls == ["POST"]


def test_https_through_the_outbound_proxy_is_a_tunnel_verified_end_to_end(tmp_path):
    import select
    import socket
    import socketserver
    import threading

    tunnels: list[str] = []

    class Connect(socketserver.BaseRequestHandler):
        """An HTTP CONNECT proxy: it relays bytes and never sees the TLS inside."""

        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                head += self.request.recv(4096)
            target = head.split(b" ")[1].decode()
            tunnels.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port))) as upstream:
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                ends = [self.request, upstream]
                while True:
                    readable, _, _ = select.select(ends, [], [], 5)
                    if not readable:
                        return
                    for end in readable:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is self.request else self.request).sendall(data)

    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Connect)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    ca = TestCA(tmp_path)
    try:
        with ExchangeServer(tls=ca) as server:
            url = server.add(binance_spot(), hmac_credential("binance", "k", "s" * 64))
            via = f"http://127.0.0.1:{proxy.server_address[1]}"
            answer = Transport(SendSettings(ca_file=ca.ca_file, proxy=via)).request(
                "GET", url + "/api/v3/exchangeInfo", (), b"")
            assert answer.status == 200 and tunnels == [url.removeprefix("https://")]
            with pytest.raises(SendFailure) as failed:  # through the proxy too, an untrusted certificate is refused
                Transport(SendSettings(proxy=via)).request("GET", url + "/api/v3/exchangeInfo", (), b"")
            assert failed.value.kind == "tls" and failed.value.sent is False
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_under_a_quorum_a_new_delivery_or_destination_is_a_loosening():
    from dataclasses import replace

    from agent.quorum import KEY_FIELDS

    base = parse_policy(_policy('delivery = "both"\n')).keys["k"]
    narrower = KEY_FIELDS["delivery"]
    assert narrower(base, replace(base, delivery="send")) and narrower(base, replace(base, delivery="sign"))
    send = replace(base, delivery="send")
    assert not narrower(send, replace(base, delivery="sign")) and not narrower(send, base)
    assert not KEY_FIELDS["send_to"](base, replace(base, send_to="https://elsewhere.test"))


def test_the_exchanges_rate_limit_answers_are_read_as_documented_and_odd_values_ignored():
    from agent.send.exchange_limits import IP, KEY, ORDERS, spent

    now = 1_000_000_050.0  # 30 s into a minute (1_000_000_020 is a whole minute)
    weight = spent("binance", 200, [("x-mbx-used-weight-1m", "6000")], "GET", "/api/v3/account", now)
    assert [(s.scope, round(s.wait_s)) for s in weight] == [(IP, 30)]
    assert spent("binance", 200, [("X-MBX-USED-WEIGHT-1M", "5999")], "GET", "/api/v3/account", now) == []
    # USD-M has its own limits under the same header names.
    assert spent("binance", 200, [("X-MBX-USED-WEIGHT-1M", "2400")], "GET", "/fapi/v2/account", now)[0].scope == IP
    orders = spent("binance", 200, [("X-MBX-ORDER-COUNT-10S", "100")], "POST", "/api/v3/order", now)
    assert orders[0].scope == ORDERS and 0 < orders[0].wait_s <= 10
    assert spent("okx", 429, [("Retry-After", "2")], "POST", "/api/v5/trade/order", now)[0].scope == KEY
    assert spent("binance", 418, [("Retry-After", "120")], "GET", "/api/v3/account", now)[0].scope == IP
    for odd in ("nan", "inf", "-5", "", "1e400", "abc"):
        assert spent("okx", 429, [("Retry-After", odd)], "GET", "/x", now) == []
        assert spent("binance", 200, [("X-MBX-USED-WEIGHT-1M", odd)], "GET", "/api/v3/account", now) == []
    past = str(int((now - 1) * 1000))
    assert spent("bybit", 200, [("X-Bapi-Limit-Status", "0"), ("X-Bapi-Limit-Reset-Timestamp", past)], "POST",
                 "/v5/order/create", now) == []
