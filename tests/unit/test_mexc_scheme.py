"""The MEXC scheme (spot v3 and futures, chosen by path prefix) against references not
written by us: MEXC's published spot examples and ccxt 4.5's own mexc.sign() with the
same secret and timestamp.

Excluded from header comparisons, explicitly: ccxt's `source: CCXT` (its broker id, no
part of any signature, exchange-signing.md 0.7).
"""

from __future__ import annotations

import hashlib
import hmac

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import mexc as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, asymmetric_credential, fixed_environment, hmac_credential

SCHEME = scheme_for("mexc")
BASE = "https://api.mexc.com"
NOW_MS = 1_700_000_000_123
API_KEY = "mx0vglAKIDtest0001"
HEX = "0123456789abcdef"
DECORATIVE = {"source"}  # ccxt's broker id (exchange-signing.md 0.7)

# mexcdevelop/apidocs spot_v3_en "SIGNED Endpoint Examples for POST /api/v3/order".
DOC_SECRET = register_secret("45d0b3c26f2644f19bfb98b07741b2f5")
DOC_API_KEY = "mx0aBYs33eIilxBWC5"
DOC_PARAMS = (
    ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "11"),
    ("recvWindow", "5000"), ("timestamp", "1644489390087"),
)
# Examples 1 (body) and 2 (query) sign the very same string. Example 2's signature is the HMAC;
# example 1 prints 323c96ab85a745712e95e63cad28903dd8292e4a905e99c4ee3932023843a117, which is
# not the HMAC of anything shown: a doc error (exchange-signing.md 2.15).
DOC_SIG_1_AND_2 = "fd3e4e8543c5188531eb7279d68ae7d26a573d0fc5ab0d18eb692451654d837a"
DOC_SIG_1_AS_PRINTED = "323c96ab85a745712e95e63cad28903dd8292e4a905e99c4ee3932023843a117"
DOC_SIG_3_MIXED = "d1a676610ceb39174c8039b3f548357994b2a34139a8addd33baadba65684592"


def sign(request: UnsignedRequest, secret: str, api_key: str = API_KEY, now_ms: int = NOW_MS):
    return SCHEME.sign(request, hmac_credential("mexc", api_key, secret), fixed_environment(now_ms))


def ccxt_exchange(secret: str, now_ms: int, api_key: str = API_KEY) -> ccxt.mexc:
    ex = ccxt.mexc({"apiKey": api_key, "secret": secret})
    ex.nonce = lambda: now_ms
    ex.milliseconds = lambda: now_ms
    return ex


def ccxt_sign(section: str, path: str, method: str, params: dict, secret: str, now_ms: int = NOW_MS) -> dict:
    return ccxt_exchange(secret, now_ms).sign(path, [section, "private"], method, dict(params))


def ccxt_headers(expected: dict) -> dict:
    return {k: v for k, v in expected["headers"].items() if k not in DECORATIVE}


# -- the exchange record -----------------------------------------------------------------------


def test_exchange_record():
    exchange = exchange_for("mexc")
    assert exchange.key_types == ("hmac",) and exchange.generated == () and not exchange.passphrase
    assert exchange.ccxt_id == "mexc"
    # ccxt's URLs, which the path-prefix dispatch relies on.
    urls = ccxt.mexc().urls["api"]
    assert urls["spot"]["private"] == BASE  # + /api/v3/<path>
    assert urls["broker"]["private"] == BASE + "/api/v3/broker"
    assert urls["contract"]["private"] == BASE + "/api/v1/private"
    assert urls["contract"]["public"] == BASE + "/api/v1/contract"


# -- MEXC's published spot examples -----------------------------------------------------------------


def test_doc_example_2_query_string():
    signed = sign(UnsignedRequest("POST", "/api/v3/order", query=DOC_PARAMS), DOC_SECRET, DOC_API_KEY)
    assert signed.path == (
        "/api/v3/order?symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000"
        f"&timestamp=1644489390087&signature={DOC_SIG_1_AND_2}"
    )
    assert signed.body == ""
    assert dict(signed.headers) == {"X-MEXC-APIKEY": DOC_API_KEY, "Content-Type": "application/json"}


@pytest.mark.parametrize("raw", [False, True])
def test_doc_example_1_request_body(raw: bool):
    text = "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000&timestamp=1644489390087"
    body = RawBody(text) if raw else DOC_PARAMS
    signed = sign(UnsignedRequest("POST", "/api/v3/order", body=body), DOC_SECRET, DOC_API_KEY)
    assert signed.path == "/api/v3/order"
    # The doc prints DOC_SIG_1_AS_PRINTED here; the HMAC of its own string is example 2's.
    assert signed.body == f"{text}&signature={DOC_SIG_1_AND_2}"
    assert DOC_SIG_1_AS_PRINTED not in signed.body
    assert dict(signed.headers)["Content-Type"] == "application/x-www-form-urlencoded"


def test_doc_example_1_printed_signature_is_a_doc_error():
    text = b"symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000&timestamp=1644489390087"
    assert hmac.new(DOC_SECRET.encode(), text, hashlib.sha256).hexdigest() == DOC_SIG_1_AND_2 != DOC_SIG_1_AS_PRINTED


@pytest.mark.parametrize("raw", [False, True])
def test_doc_example_3_mixed_query_and_body(raw: bool):
    # The published signature is the HMAC of query + body joined with no separator...
    text = "quantity=1&price=11&recvWindow=5000&timestamp=1644489390087"
    total = ("symbol=BTCUSDT&side=BUY&type=LIMIT" + text).encode()
    assert hmac.new(DOC_SECRET.encode(), total, hashlib.sha256).hexdigest() == DOC_SIG_3_MIXED
    # ...which is why the agent refuses to sign such a request: a bot could move that boundary.
    request = UnsignedRequest("POST", "/api/v3/order", query=DOC_PARAMS[:3], body=RawBody(text) if raw else DOC_PARAMS[3:])
    with pytest.raises(RequestInvalid, match="one or the other"):
        sign(request, DOC_SECRET, DOC_API_KEY)


# -- the futures doc's description (integration guide: no vector with a secret is published) -------


class Recording(SoftwareCredential):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: list[bytes] = []

    def mac(self, message: bytes, hash_name: str) -> bytes:
        self.messages.append(message)
        return super().mac(message, hash_name)


def test_contract_signed_text_is_access_key_time_and_sorted_params():
    key = Recording(api_key=API_KEY, secret=new_secret(32, HEX).encode())
    signed = SCHEME.sign(
        UnsignedRequest("GET", "/api/v1/private/order/list/history_orders",
                        query=(("symbol", "BTC_USDT"), ("page_size", "100"), ("page_num", "1"))),
        key, fixed_environment(NOW_MS),
    )
    assert key.messages == [f"{API_KEY}{NOW_MS}page_num=1&page_size=100&symbol=BTC_USDT".encode()]
    assert signed.path == "/api/v1/private/order/list/history_orders?page_num=1&page_size=100&symbol=BTC_USDT"
    headers = dict(signed.headers)
    assert headers["ApiKey"] == API_KEY and headers["Request-Time"] == str(NOW_MS)
    assert headers["Signature"] == key.mac(key.messages[0], "sha256").hex()


def test_contract_post_signs_the_json_body_unsorted():
    key = Recording(api_key=API_KEY, secret=new_secret(32, HEX).encode())
    raw = '{"symbol":"BTC_USDT","price":8800,"vol":100,"side":1,"type":1,"openType":1}'
    signed = SCHEME.sign(UnsignedRequest("POST", "/api/v1/private/order/submit", body=RawBody(raw)), key, fixed_environment(NOW_MS))
    assert key.messages == [f"{API_KEY}{NOW_MS}{raw}".encode()]
    assert signed.body == raw and signed.path == "/api/v1/private/order/submit"


# -- ccxt's own sign() ------------------------------------------------------------------------------------

CASES = [
    # ccxt section, ccxt path, our path, method, params
    ("spot", "order", "/api/v3/order", "POST",
     {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.001", "price": "50000",
      "newClientOrderId": "bot-42"}),
    ("spot", "order", "/api/v3/order", "DELETE", {"symbol": "BTCUSDT", "orderId": "C02__123456"}),
    ("spot", "account", "/api/v3/account", "GET", {}),
    ("spot", "openOrders", "/api/v3/openOrders", "GET", {"symbol": "ETHUSDT"}),
    ("spot", "batchOrders", "/api/v3/batchOrders", "POST",
     {"batchOrders": '[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"1","price":"11"}]'}),
    ("spot", "userDataStream", "/api/v3/userDataStream", "PUT", {"listenKey": "pqia91ma19a5s61cv6a81va65sdf19v8a65a1"}),
    ("broker", "sub-account/list", "/api/v3/broker/sub-account/list", "GET", {"page": "1", "limit": "10"}),
    ("contract", "account/assets", "/api/v1/private/account/assets", "GET", {}),
    ("contract", "account/asset/{currency}", "/api/v1/private/account/asset/USDT", "GET", {"currency": "USDT"}),
    ("contract", "position/open_positions", "/api/v1/private/position/open_positions", "GET", {"symbol": "BTC_USDT"}),
    ("contract", "order/list/history_orders", "/api/v1/private/order/list/history_orders", "GET",
     {"symbol": "BTC_USDT", "page_size": "100", "page_num": "1", "states": "3,4"}),
    ("contract", "order/submit", "/api/v1/private/order/submit", "POST",
     {"symbol": "BTC_USDT", "price": "8800", "vol": "100", "side": "1", "type": "1", "openType": "1"}),
    ("contract", "order/cancel_all", "/api/v1/private/order/cancel_all", "POST", {}),
]


def request_for(section: str, ccxt_path: str, path: str, method: str, params: dict) -> UnsignedRequest:
    # Path parameters ({currency}) are in PATH already.
    pairs = tuple((k, v) for k, v in params.items() if f"{{{k}}}" not in ccxt_path)
    if section == "contract" and method == "POST":
        return UnsignedRequest(method, path, body=pairs)
    return UnsignedRequest(method, path, query=pairs)  # ccxt sends spot parameters in the query, any method


@pytest.mark.parametrize("section,ccxt_path,path,method,params", CASES)
def test_equals_ccxt_sign(section, ccxt_path, path, method, params):
    secret = new_secret(32, HEX)
    expected = ccxt_sign(section, ccxt_path, method, params, secret)
    signed = sign(request_for(section, ccxt_path, path, method, params), secret)
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == ccxt_headers(expected)
    assert signed.method == expected["method"]


names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
printable_names = st.text(st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Zs")), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n not in ("timestamp", "recvWindow", "signature")), values, max_size=8),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_spot_parameters_equal_ccxt(params, method, now_ms):
    secret = "s" * 32
    expected = ccxt_sign("spot", "openOrders", method, params, secret, now_ms)
    signed = sign(UnsignedRequest(method, "/api/v3/openOrders", query=tuple(params.items())), secret, now_ms=now_ms)
    assert BASE + signed.path == expected["url"]
    assert signed.body == ""
    assert dict(signed.headers) == ccxt_headers(expected)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(printable_names, values, max_size=8),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_contract_parameters_equal_ccxt(params, method, now_ms):
    # GET/DELETE: sorted and percent-encoded; POST: ccxt's json() (orjson), non-ASCII and all.
    secret = "s" * 32
    expected = ccxt_sign("contract", "order/list/open_orders", method, params, secret, now_ms)
    pairs = tuple(params.items())
    path = "/api/v1/private/order/list/open_orders"
    request = UnsignedRequest(method, path, body=pairs) if method == "POST" else UnsignedRequest(method, path, query=pairs)
    if method == "POST" and any(c in "&=" for c in expected["body"] or ""):
        # The contract scheme signs neither method nor path: such JSON could be read as a GET query.
        with pytest.raises(RequestInvalid, match="could also be read as form parameters"):
            sign(request, secret, now_ms=now_ms)
        return
    signed = sign(request, secret, now_ms=now_ms)
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == ccxt_headers(expected)


# -- the agent's own rules -------------------------------------------------------------------------------


def test_timestamp_and_recv_window_are_appended_last_when_absent():
    signed = sign(UnsignedRequest("GET", "/api/v3/openOrders", query=(("symbol", "BTCUSDT"),)), "s" * 32)
    assert signed.path.startswith(f"/api/v3/openOrders?symbol=BTCUSDT&timestamp={NOW_MS}&recvWindow=5000&signature=")


def test_caller_timestamp_and_recv_window_are_kept():
    query = (("recvWindow", "2000"), ("symbol", "BTCUSDT"), ("timestamp", "1644489390087"))
    signed = sign(UnsignedRequest("GET", "/api/v3/openOrders", query=query), "s" * 32)
    assert signed.path.startswith("/api/v3/openOrders?recvWindow=2000&symbol=BTCUSDT&timestamp=1644489390087&signature=")
    assert str(NOW_MS) not in signed.path


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("GET", "/api/v1/contract/ticker"), "/api/v1/contract/ is public"),
        (UnsignedRequest("GET", "/open/api/v2/order/list"), "/api/v3/ .spot. or /api/v1/private/"),
        (UnsignedRequest("GET", "/api/v2/account"), "/api/v3/ .spot. or /api/v1/private/"),
        (UnsignedRequest("GET", "/api/v3"), "/api/v3/ .spot. or /api/v1/private/"),
        (UnsignedRequest("GET", "/api/v3/account", query=(("signature", "abc"),)), "signature"),
        (UnsignedRequest("POST", "/api/v3/order", body=(("signature", "abc"),)), "signature"),
        (UnsignedRequest("GET", "/api/v3/account", query=(("timestamp", "now"),)), "timestamp"),
        (UnsignedRequest("GET", "/api/v3/account", query=(("recvWindow", "5s"),)), "recvWindow"),
        (UnsignedRequest("GET", "/api/v3/account", body=(("a", "1"),)), "query only"),
        (UnsignedRequest("POST", "/api/v3/order", query=(("a", "1"),), body=(("a", "2"),)), "one or the other"),
        (UnsignedRequest("POST", "/api/v3/order", body=RawBody('{"symbol":"BTCUSDT"}')), "not JSON"),
        (UnsignedRequest("POST", "/api/v3/order", body=RawBody("not a form")), "form-encoded"),
        (UnsignedRequest("POST", "/api/v3/order", body=RawBody("a=\u00e9")), "ASCII"),
        (UnsignedRequest("POST", "/api/v3/broker/sub-account/virtualSubAccount", body=RawBody('{"subAccount":"x"}')),
         "broker endpoints do not sign the request body"),
        (UnsignedRequest("POST", "/api/v3/broker/sub-account/virtualSubAccount", body=(("subAccount", "x"),)),
         "broker endpoints do not sign the request body"),
        (UnsignedRequest("GET", "/api/v1/private/account/assets", body=(("a", "1"),)), "query only"),
        (UnsignedRequest("DELETE", "/api/v1/private/order/cancel", body=RawBody("[1]")), "query only"),
        (UnsignedRequest("POST", "/api/v1/private/order/submit", query=(("symbol", "BTC_USDT"),)), "POST body only"),
        (UnsignedRequest("PUT", "/api/v1/private/order/submit"), "GET, POST or DELETE"),
        (UnsignedRequest("POST", "/api/v1/private/order/submit", body=RawBody("symbol=BTC_USDT")), "JSON"),
        (UnsignedRequest("POST", "/api/v1/private/order/submit", body=RawBody('"text"')), "object or array"),
        (UnsignedRequest("POST", "/api/v1/private/order/submit", body=RawBody('{"a":1,"a":2}')), "twice"),
        (UnsignedRequest("get", "/api/v3/account"), "method"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_, "s" * 32)


def test_asymmetric_key_is_refused():
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsupportedKey, match="HMAC keys only"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v3/account"), asymmetric_credential(API_KEY, pem), fixed_environment(NOW_MS))


def test_signed_request_never_carries_the_secret():
    secret = new_secret(32, HEX)
    for section, ccxt_path, path, method, params in CASES:
        assert secret not in repr(sign(request_for(section, ccxt_path, path, method, params), secret))


# -- the ccxt bridge, without an agent ------------------------------------------------------------------------


def placeholder_exchange(now_ms: int = NOW_MS) -> ccxt.mexc:
    return ccxt_exchange(bridge.PLACEHOLDER["secret"], now_ms, api_key=bridge.PLACEHOLDER["apiKey"])


@pytest.mark.parametrize("section,ccxt_path,path,method,params", CASES)
def test_bridge_equals_plain_ccxt(section, ccxt_path, path, method, params):
    secret = new_secret(32, HEX)
    ex = placeholder_exchange()
    built = ex.sign(ccxt_path, [section, "private"], method, dict(params))
    unsigned = bridge.unsign(ex, built, [section, "private"])
    assert unsigned is not None and "agent-held" not in repr(unsigned.request)
    assert unsigned.request.path == path
    env = fixed_environment(unsigned.timestamp_ms if unsigned.timestamp_ms is not None else NOW_MS + 999)
    signed = SCHEME.sign(unsigned.request, hmac_credential("mexc", API_KEY, secret), env)
    expected = ccxt_sign(section, ccxt_path, method, params, secret)
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == ccxt_headers(expected)
    assert signed.method == expected["method"]


@pytest.mark.parametrize(
    "section,ccxt_path,params",
    [("spot", "ticker/price", {"symbol": "BTCUSDT"}), ("contract", "ticker", {"symbol": "BTC_USDT"}), ("spot", "time", {})],
)
def test_bridge_public_call_is_left_alone(section, ccxt_path, params):
    ex = placeholder_exchange()
    built = ex.sign(ccxt_path, [section, "public"], "GET", params)
    assert bridge.unsign(ex, built, [section, "public"]) is None


def test_bridge_broker_body_is_refused_by_the_scheme():
    # ccxt sends broker POST parameters as a JSON body that its signature does not cover.
    ex = placeholder_exchange()
    built = ex.sign("sub-account/virtualSubAccount", ["broker", "private"], "POST", {"subAccount": "bot1", "note": "x"})
    unsigned = bridge.unsign(ex, built, ["broker", "private"])
    with pytest.raises(RequestInvalid, match="broker"):
        SCHEME.sign(unsigned.request, hmac_credential("mexc", API_KEY, "s" * 32), fixed_environment(NOW_MS))


def test_bridge_retired_spot2_is_refused_by_the_scheme():
    ex = placeholder_exchange()
    built = ex.sign("account/info", ["spot2", "private"], "GET", {})
    unsigned = bridge.unsign(ex, built, ["spot2", "private"])
    with pytest.raises(RequestInvalid, match="retired"):
        SCHEME.sign(unsigned.request, hmac_credential("mexc", API_KEY, "s" * 32), fixed_environment(NOW_MS))
