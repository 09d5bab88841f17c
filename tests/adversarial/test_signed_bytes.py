"""Signed bytes read back as the checked request, for every exchange in the registry.

A bot with a valid credential asks the agent to sign a request of its choosing, then sends the
exchange whatever HTTP request verifies with that signature (exchange_readers.py: cut the query from
the body elsewhere, spell the query another way, change the method, the path or the Content-Type where
they are not signed). For requests generated with separators, escapes and JSON openers in names and
values, in queries, form bodies and raw JSON bodies, this checks that

  * the agent refuses the request (RequestInvalid, naming what to change), or
  * the request as sent reads as exactly the parameters the policy checked (agent.rules.view), and
    every reshape that verifies is read the same way by the exchange, or refused by it.

A new exchange enters the registry only with a reader here and endpoints to generate requests for
(test_every_registered_exchange_has_a_reader).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.exchanges import EXCHANGES, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.exchange_readers import READERS, Http, Reading
from support.reference import fixed_environment
from support.signed_bytes import NOW_MS, assert_signed_bytes_read_as_checked, credential

ROOT = Path(__file__).resolve().parents[2]
SECURITY_MODEL = ROOT / "docs" / "security-model.md"

# (method, path, where parameters go: "query", "form" or "json") per exchange: real private endpoints.
BINANCE = (("POST", "/api/v3/order", "form"), ("GET", "/api/v3/openOrders", "query"),
           ("DELETE", "/api/v3/order", "query"), ("POST", "/fapi/v1/order", "query"))
ENDPOINTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "binance": BINANCE, "binanceusdm": BINANCE, "binanceus": BINANCE, "binancetr": BINANCE,
    "mexc": (("POST", "/api/v3/order", "form"), ("GET", "/api/v3/openOrders", "query"),
             ("GET", "/api/v1/private/order/list/open_orders", "query"),
             ("DELETE", "/api/v1/private/order/cancel_all", "query"),
             ("POST", "/api/v1/private/order/submit", "json")),
    "bybit": (("GET", "/v5/order/realtime", "query"), ("POST", "/v5/order/create", "json")),
    "okx": (("GET", "/api/v5/trade/orders-pending", "query"), ("POST", "/api/v5/trade/order", "json")),
    "kucoin": (("GET", "/api/v1/orders", "query"), ("DELETE", "/api/v1/orders", "query"),
               ("POST", "/api/v1/orders", "json")),
    "kucoinfutures": (("GET", "/api/v1/orders", "query"), ("POST", "/api/v1/orders", "json")),
    "bitget": (("GET", "/api/v2/spot/trade/unfilled-orders", "query"),
               ("POST", "/api/v2/spot/trade/place-order", "json")),
    "gate": (("GET", "/api/v4/spot/orders", "query"), ("DELETE", "/api/v4/spot/orders", "query"),
             ("POST", "/api/v4/spot/orders", "json")),
    "htx": (("GET", "/v1/order/openOrders", "query"), ("POST", "/v1/order/orders/place", "json")),
    "kraken": (("POST", "/0/private/AddOrder", "form"), ("POST", "/0/private/AddOrder", "json")),
    "bitfinex": (("POST", "/v2/auth/w/order/submit", "json"), ("POST", "/v2/auth/r/orders/tBTCUSD", "json")),
    "gemini": (("POST", "/v1/order/new", "json"),),
    "bitstamp": (("POST", "/api/v2/buy/btcusd/", "form"), ("POST", "/api/v2/open_orders/all/", "form")),
    "deribit": (("GET", "/api/v2/private/buy", "query"),),
    "coinbase": (("GET", "/api/v3/brokerage/orders/historical/batch", "query"), ("GET", "/v2/accounts", "query"),
                 ("POST", "/api/v3/brokerage/orders", "json")),
    "cryptocom": (("POST", "/exchange/v1/private/create-order", "json"),),
}

# Separators, escapes and JSON openers. A name or value holds at most one of them, next to ordinary
# text: one shape at a time, so that a request is not refused for another character than the one tried.
SPECIAL = "&=%+#;{[\"' \n/:,é"
PLAIN = st.text("abXY01_.-", min_size=1, max_size=6)
ONE_SPECIAL = st.builds(lambda head, char, tail: head + char + tail,
                        st.one_of(st.just(""), PLAIN), st.sampled_from(SPECIAL), st.one_of(st.just(""), PLAIN))
NAMES = st.one_of(
    st.sampled_from(["symbol", "amount", "quantity", "side", "coin", "address", "currency_pair", "instId"]),
    PLAIN, ONE_SPECIAL,
)
VALUES = st.one_of(PLAIN, ONE_SPECIAL, st.just(""),
                   st.sampled_from(["BTCUSDT", "1.5", "buy&currency_pair=PEPE_USDT", "Xamount=1.5", '{"a":"1"}']))
PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=3, unique_by=lambda p: p[0])


def body_of(kind: str, pairs: list[tuple[str, str]], raw: bool):
    if kind == "query" or not pairs and not raw:
        return None
    if not raw:
        return tuple(pairs)
    if kind == "form":
        return RawBody("&".join(f"{name}={value}" for name, value in pairs))
    return RawBody(json.dumps(dict(pairs), ensure_ascii=False))


def requests_for(exchange_id: str):
    @st.composite
    def build(draw):
        method, path, kind = draw(st.sampled_from(ENDPOINTS[exchange_id]))
        query = draw(PAIRS) if kind == "query" or draw(st.booleans()) else []
        body = body_of(kind, draw(PAIRS), raw=draw(st.booleans()))
        return UnsignedRequest(method, path, query=tuple(query), body=body)
    return build()


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
def test_every_registered_exchange_has_a_reader(exchange_id):
    assert exchange_id in READERS, f"{exchange_id}: write how it verifies and parses (exchange_readers.py)"
    assert ENDPOINTS.get(exchange_id), f"{exchange_id}: name endpoints to generate requests for"


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_signed_bytes_read_as_checked(exchange_id, data):
    request = data.draw(requests_for(exchange_id))
    assert_signed_bytes_read_as_checked(exchange_id, request)


def grid(exchange_id: str):
    """One request per (place parameters go, special character, name or value, template, pairs or raw):
    the shapes the random property finds by chance, tried every time."""
    kinds = {}
    for method, path, kind in ENDPOINTS[exchange_id]:
        kinds.setdefault((method, kind), path)
    for (method, kind), path in kinds.items():
        plain = [("symbol", "BTCUSDT"), ("note", "V1")]  # a request every scheme signs
        yield UnsignedRequest(method, path, query=tuple(plain) if kind == "query" else (),
                              body=body_of(kind, plain, raw=False))
        for char in SPECIAL:
            for template in ("a{}b", "a{}amount=1"):
                text = template.format(char)
                for pair in (("note", text), (text.replace("=", "_"), "v")):
                    pairs = [("symbol", "BTCUSDT"), pair]
                    query = tuple(pairs) if kind == "query" else ()
                    for raw in ((False,) if kind == "query" else (False, True)):
                        yield UnsignedRequest(method, path, query=query, body=body_of(kind, pairs, raw=raw))
                        if kind != "query":  # and a query beside the body, where the two are joined
                            yield UnsignedRequest(method, path, query=(("tag", "x1"),),
                                                  body=body_of(kind, pairs, raw=raw))


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
def test_signed_bytes_read_as_checked_for_each_special_character(exchange_id):
    outcomes = [assert_signed_bytes_read_as_checked(exchange_id, request) for request in grid(exchange_id)]
    assert "signed" in outcomes  # the grid reaches the signing path, not only refusals


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_coinbase_cdp_keys_bind_method_and_path(data):
    request = data.draw(requests_for("coinbase"))
    assert_signed_bytes_read_as_checked("coinbase", request, key_type="ed25519")


# -- cases as data: each one a member of a class above, refused with a message naming the shape ----

CASES = [
    # Binance signs query + body with no separator: a raw '=' in a value lets a cut read `amount=1.5`,
    # and the parameters of a withdrawal verify at /sapi/v1/capital/withdraw/apply.
    ("binance", UnsignedRequest("POST", "/api/v3/order", body=RawBody(
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000&coin=BTC"
        "&address=bc1qxyz&network=BTC&name=Xamount=1.5")), "holds a raw '='"),
    ("mexc", UnsignedRequest("POST", "/api/v3/order", body=RawBody("symbol=BTCUSDT&note=a+b")), "reads as a space"),
    ("binance", UnsignedRequest("POST", "/api/v3/order", body=RawBody("symbol=BTCUSDT&&side=BUY")), "empty segment"),
    ("binance", UnsignedRequest("POST", "/api/v3/order", body=RawBody("symbol=BTCUSDT&side")), "not name=value"),
    # Gate verifies the decoded query: `side` would sign as two parameters, one a refused pair.
    ("gate", UnsignedRequest("DELETE", "/api/v4/spot/orders", query=(
        ("currency_pair", "BTC_USDT"), ("side", "buy&currency_pair=PEPE_USDT"))), "signs the query un-encoded"),
    ("bitget", UnsignedRequest("GET", "/api/v2/spot/trade/history-orders", query=(
        ("symbol", "BTCUSDT"), ("limit", "100&symbol=ETHUSDT"))), "signs the query un-encoded"),
    ("kucoin", UnsignedRequest("GET", "/api/v1/orders", query=(("tag", '{"symbol":"ETH-USDT"}'),)),
     "could start a JSON body"),
    # Query and form body joined with nothing between them (Binance, MEXC spot).
    ("binance", UnsignedRequest("POST", "/api/v3/order", query=(("symbol", "BTCUSDT"),),
                                body=(("side", "BUY"), ("quantity", "1"))), "one or the other"),
    ("mexc", UnsignedRequest("POST", "/api/v3/order", query=(("symbol", "BTCUSDT"),), body=(("side", "BUY"),)),
     "one or the other"),
    # ... and JSON bodies (OKX, KuCoin, Bitget): the body's head could end the query, leaving a nested
    # object that a lenient JSON reader takes for the body (a 50 BTC order inside a 0.001 BTC one).
    ("kucoin", UnsignedRequest("POST", "/api/v1/orders", query=(("x", "1"),), body=RawBody(
        '{"symbol":"BTC-USDT","size":"0.001","y":{"symbol":"BTC-USDT","size":"50"}}')), "one or the other"),
    ("okx", UnsignedRequest("POST", "/api/v5/trade/order", query=(("instId", "BTC-USDT"),),
                            body=RawBody('{"instId":"ETH-USDT","sz":"100"}')), "one or the other"),
    # Method not signed: this JSON could be sent as a GET query that reads as parameters.
    ("bybit", UnsignedRequest("POST", "/v5/order/create", body=RawBody(
        '{"category":"spot","a=":"&symbol=ETHUSDT&qty=100"}')), "could also be read as form parameters"),
    ("mexc", UnsignedRequest("POST", "/api/v1/private/order/submit", body=(("note", "x=1"),)),
     "could also be read as form parameters"),
    # Content-Type not signed: JSON read as form text.
    ("kraken", UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody(
        '{"pair":"XBTUSD","a":"&pair=ETHUSD&volume=100"}')), "could also be read as form parameters"),
    # Path, query and Content-Type joined: no query, and paths end with '/'.
    ("bitstamp", UnsignedRequest("POST", "/api/v2/buy/btcusd/", query=(("amount", "1"),)), "move the query"),
    ("bitstamp", UnsignedRequest("POST", "/api/v2/balance"), "end with '/'"),
    # The same key, another protocol: a signed apiKey + timestamp is a WebSocket session.logon.
    ("binance", UnsignedRequest("GET", "/api/v3/account", query=(("apiKey", "K"), ("timestamp", "1700000000000"))),
     "remove 'apiKey'"),
    # MEXC spot and futures share the secret: a raw spot body spelling a futures request.
    ("mexc", UnsignedRequest("POST", "/api/v3/order", body=RawBody(
        'K1700000000000{"a":"=","symbol":"PEPE_USDT","vol":1000000,"b":"&timestamp=1&recvWindow=5000&z=1"}')),
     "raw body"),
    ("mexc", UnsignedRequest("POST", "/api/v3/order", body=RawBody("symbol=BTC_USDT&note=%7b")), "exactly as the agent"),
    # Path and nonce joined: trailing digits could move into the nonce.
    ("bitfinex", UnsignedRequest("POST", "/v2/auth/r/orders/tBTCF0:USTF0", body=()), "ending in a digit"),
]


@pytest.mark.parametrize("exchange_id,request_,message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_ambiguous_requests_are_refused_naming_the_shape(exchange_id, request_, message):
    with pytest.raises(RequestInvalid, match=message):
        scheme_for(exchange_id).sign(request_, credential(exchange_id), fixed_environment(NOW_MS))


def test_the_withdrawal_cut_is_what_the_reader_finds():
    """The Binance case, signed as the agent used to (the raw body kept): the reader finds the cut
    that reads a withdrawal's `amount`, so the property above would have failed on it."""
    body = "symbol=BTCUSDT&coin=BTC&address=bc1qxyz&name=Xamount=1.5"
    signature = "signature=00"
    sent = Http("POST", "/api/v3/order", "", f"{body}&timestamp={NOW_MS}&{signature}",
                (("Content-Type", "application/x-www-form-urlencoded"),))
    reader = READERS["binance"]
    readings = [reader.read(r) for r in reader.reshapes(sent) if reader.verified(r) == reader.verified(sent)]
    assert any(isinstance(r, Reading) and ("amount", "1.5") in r.params for r in readings)


# -- what the signature does not cover at all: named in the security model -------------------------


UNBOUND = [
    ("htx", UnsignedRequest("POST", "/v1/order/orders/place", body=(("symbol", "btcusdt"), ("amount", "1"))), "hmac",
     ("body",)),
    ("coinbase", UnsignedRequest("POST", "/api/v3/brokerage/orders", body=(("product_id", "BTC-USD"),)), "ed25519",
     ("query", "body")),
    ("coinbase", UnsignedRequest("GET", "/api/v3/brokerage/orders/historical/batch", query=(("product_id", "BTC-USD"),)),
     "hmac", ("query",)),
]


@pytest.mark.parametrize("exchange_id,request_,key_type,parts", UNBOUND)
def test_unbound_parts_are_real_and_documented(exchange_id, request_, key_type, parts):
    reader = READERS[exchange_id]
    signed = scheme_for(exchange_id).sign(request_, credential(exchange_id, key_type), fixed_environment(NOW_MS))
    sent = Http.of(signed)
    assert reader.unbound(sent) == parts
    # Another body (or query) verifies just the same: only send mode can bind these.
    other = Http(sent.method, sent.path, "product_id=ETH-USD" if "query" in parts else sent.query,
                 '{"symbol":"pepeusdt","amount":"1000000"}' if "body" in parts else sent.body, sent.headers)
    assert reader.verified(other) == reader.verified(sent)
    text = SECURITY_MODEL.read_text()
    for part in parts:
        assert f"{exchange_id}: unsigned {part}" in text.lower(), f"docs/security-model.md must name {exchange_id}'s {part}"
