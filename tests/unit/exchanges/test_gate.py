"""Gate, beyond its vectors (tests/vectors/gate.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Gate v4 scheme against references not written by us: ccxt 4.5's own
gate.sign() with the same secret and clock, and Gate's own SDKs' signing code
(gateapi-python ApiClient.gen_sign, gateapi-go prepareRequest), whose signed
query is the percent-decoded query sent. Gate publishes no signature vector.

The scheme is pure; here its MAC is Python's hmac with the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import unquote, unquote_plus, urlencode

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import gate as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.leaks import new_secret
from support.reference import fixed_environment, hmac_credential, recording
from support.strategies import TEXT as values

SCHEME = scheme_for("gate")
NOW_MS = 1_700_000_000_987
BASE = "https://api.gateio.ws"
HEX = "0123456789abcdef"
API_KEY = "a4c1" + "0" * 28  # Gate keys: 32 hex characters (not a secret)
# SHA-512 of the empty string (exchange-signing.md 2.10 (f)): signed for requests without a body.
EMPTY_SHA512 = (
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)
# ccxt's X-Gate-Size-Decimal (futures) is covered by no signature: the scheme does not
# produce it; the bridge keeps it (see test_bridge_*). It is the only header left out.
NOT_SIGNED = ("X-Gate-Size-Decimal",)


def gate_secret() -> str:
    """Gate APIv4 secrets: 64 lowercase hex characters."""
    return new_secret(64, HEX)


def credential(secret: str, api_key: str = API_KEY):
    return hmac_credential("gate", api_key, secret)


def ccxt_gate(secret: str, now_ms: int, api_key: str = API_KEY):
    ex = ccxt.gate({"apiKey": api_key, "secret": secret})
    ex.milliseconds = lambda: now_ms
    return ex


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS):
    return SCHEME.sign(request, credential(secret), fixed_environment(now_ms))


def assert_equals_ccxt(signed, expected):
    assert BASE + signed.path == expected["url"]
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    ccxt_headers = {k: v for k, v in expected["headers"].items() if k not in NOT_SIGNED}
    assert signed.headers_dict() == ccxt_headers


# -- ccxt's own sign() ------------------------------------------------------------------


names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_0123456789"), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n != "query"), values, max_size=8),
    method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, now_ms):
    """Any names and values, non-ASCII included: query on GET/DELETE, JSON body otherwise."""
    secret = "f" * 64
    expected = ccxt_gate(secret, now_ms).sign("orders", ["private", "spot"], method, dict(params))
    pairs = tuple(params.items())
    request = (
        UnsignedRequest(method, "/api/v4/spot/orders", query=pairs) if method in ("GET", "DELETE")
        else UnsignedRequest(method, "/api/v4/spot/orders", body=pairs)
    )
    if request.query and any(c in "&=%+#;" or not c.isprintable() for name, value in pairs for c in name + value):
        # Gate verifies the decoded query: a separator inside a value would sign as other parameters.
        with pytest.raises(RequestInvalid, match="signs the query un-encoded"):
            sign(request, secret, now_ms)
        return
    assert_equals_ccxt(sign(request, secret, now_ms), expected)


# -- Gate's own SDKs: what is signed ------------------------------------------------------


def sdk_payload(method: str, path: str, query: list[tuple[str, str]], body: str, t: str) -> str:
    """gateapi-python ApiClient.gen_sign's string, given update_params_for_auth's query argument
    `unquote_plus(urlencode(querys))` (gateapi-go: url.QueryUnescape(RawQuery), the same text)."""
    hashed = hashlib.sha512(body.encode("utf-8")).hexdigest()
    return "%s\n%s\n%s\n%s\n%s" % (method, path, unquote_plus(urlencode(query)), hashed, t)


@pytest.mark.parametrize(
    "query",
    [
        [("currency_pair", "BTC_USDT"), ("status", "finished"), ("limit", "50")],
        # Non-ASCII, spaces, '/', ':' and ',' in values: the SDKs sign the decoded text.
        [("text", "t-caf\u00e9 \u4e2d\u6587"), ("note", "a b/c:d,e")],
    ],
)
def test_signed_text_is_what_gate_sdks_sign(query):
    secret = gate_secret()
    cred, messages = recording(credential(secret))
    signed = SCHEME.sign(UnsignedRequest("GET", "/api/v4/spot/orders", query=tuple(query)), cred,
                         fixed_environment(NOW_MS))
    t = str(NOW_MS // 1000)
    assert messages == [sdk_payload("GET", "/api/v4/spot/orders", query, "", t).encode("utf-8")]
    # What is sent decodes to what is signed.
    assert unquote(signed.path.partition("?")[2]) == messages[0].decode().split("\n")[2]
    expected = hmac.new(secret.encode(), messages[0], hashlib.sha512).hexdigest()
    assert signed.headers_dict() == {"KEY": API_KEY, "Timestamp": t, "SIGN": expected,
                                     "Content-Type": "application/json"}


def test_empty_body_hash_and_body_hash():
    secret = gate_secret()
    cred, messages = recording(credential(secret))
    SCHEME.sign(UnsignedRequest("GET", "/api/v4/spot/accounts"), cred, fixed_environment(NOW_MS))
    SCHEME.sign(UnsignedRequest("POST", "/api/v4/spot/orders", body=RawBody('{"a": 1}')), cred,
                fixed_environment(NOW_MS))
    assert messages[0].decode().split("\n") == ["GET", "/api/v4/spot/accounts", "", EMPTY_SHA512, "1700000000"]
    assert messages[1].decode().split("\n")[3] == hashlib.sha512(b'{"a": 1}').hexdigest()


def test_post_query_is_signed_unlike_ccxt():
    """ccxt sends params['query'] on POST but signs an empty query line (its rawQueryString stays
    ''). Gate's docs and SDKs sign the query sent: the scheme does; ccxt's signature would fail."""
    secret = gate_secret()
    expected = ccxt_gate(secret, NOW_MS).sign("orders", ["private", "spot"], "POST", {"query": {"a": "1"}, "x": "y"})
    cred, messages = recording(credential(secret))
    signed = SCHEME.sign(UnsignedRequest("POST", "/api/v4/spot/orders", query=(("a", "1"),), body=(("x", "y"),)),
                         cred, fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"] and signed.body == expected["body"]
    assert messages == [sdk_payload("POST", "/api/v4/spot/orders", [("a", "1")], '{"x":"y"}', "1700000000").encode()]
    assert signed.headers_dict()["SIGN"] != expected["headers"]["SIGN"]


# -- the agent's own rules ----------------------------------------------------------------


def test_batch_body_array_and_empty_raw_body():
    secret = gate_secret()
    batch = '[{"currency_pair":"BTC_USDT","id":"1"}]'
    signed = sign(UnsignedRequest("POST", "/api/v4/spot/cancel_batch_orders", body=RawBody(batch)), secret)
    assert signed.body == batch
    assert sign(UnsignedRequest("DELETE", "/api/v4/spot/orders/1", body=RawBody("")), secret).body == ""


# -- the ccxt bridge ---------------------------------------------------------------------


def test_bridge_body_is_byte_for_byte():
    placeholder = ccxt.gate(dict(bridge.PLACEHOLDER))
    built = placeholder.sign("{settle}/orders", ["private", "futures"], "POST",
                             {"settle": "usdt", "contract": "BTC_USDT", "size": 2, "price": "1.5"})
    unsigned = bridge.unsign(placeholder, built, ["private", "futures"])
    assert unsigned.request.body == RawBody(built["body"])
    assert json.loads(built["body"])["size"] == 2  # a JSON number, which parameter pairs cannot carry


def test_the_spot_amend_patch_equals_ccxt_and_no_other_exchange_signs_patch():
    # ccxt's edit_order on a spot market: PATCH /spot/orders/{order_id} with the fields in the query and
    # the same JSON in the body (gate.sign). Gate's scheme signs it as ccxt does, from the request the
    # bridge rebuilds out of ccxt's; every other exchange's scheme refuses PATCH (its API never uses it).
    from agent.exchanges import EXCHANGES

    secret = gate_secret()
    params = {"order_id": "7000001", "currency_pair": "BTC_USDT", "account": "spot", "amount": "0.02",
              "price": "51000"}
    expected = ccxt_gate(secret, NOW_MS).sign("orders/{order_id}", ["private", "spot"], "PATCH", dict(params))
    placeholder = ccxt.gate(dict(bridge.PLACEHOLDER))
    placeholder.milliseconds = lambda: NOW_MS
    built = placeholder.sign("orders/{order_id}", ["private", "spot"], "PATCH", dict(params))
    unsigned = bridge.unsign(placeholder, built, ["private", "spot"])
    assert unsigned.request.method == "PATCH" and unsigned.request.path == "/api/v4/spot/orders/7000001"
    assert_equals_ccxt(sign(unsigned.request, secret), expected)
    for exchange_id, record in EXCHANGES.items():
        if exchange_id != "gate":
            with pytest.raises(RequestInvalid, match=r"method 'PATCH' is not one of GET, POST, PUT, DELETE"):
                record.scheme.sign(UnsignedRequest("PATCH", "/api/v3/order"), credential(secret), fixed_environment(NOW_MS))
