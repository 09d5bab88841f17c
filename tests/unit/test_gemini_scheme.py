"""The Gemini scheme against references not written by us: Gemini's published
example and ccxt 4.5's own gemini.sign() with the same secret and nonce; and the
ccxt bridge's gemini module, without an agent.

Secrets are 28 characters and keys "account-" + 20, as Gemini issues them
(ccxt refuses keys without "account").
"""

from __future__ import annotations

import base64
import json

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import gemini as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from agent.exchanges.gemini.scheme import sign_payload
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, fixed_environment, hmac_credential

SCHEME = scheme_for("gemini")
BASE = "https://api.gemini.com"
NOW_MS = 1_700_000_000_123
API_KEY = "account-AKIDgeminitest00000"
FIXED_SECRET = register_secret("3zMnjHnmZnVjT7QnQhNszFVnVAD5")

# developer.gemini.com/authentication/api-key "Private API invocation": key "mykey", secret "1234abcd".
# The 8-byte secret is shorter than SHA-384's 48 bytes: the agent zero-pads it for SoftHSM
# (exchange-signing.md 0.2), which leaves the HMAC unchanged; here the MAC is Python's hmac.
DOC_SECRET = "1234abcd"  # published in Gemini's docs; too short for the leak guard (could match hex)
DOC_SIGNATURE = "337cc8b4ea692cfe65b4a85fcc9f042b2e3f702ac956fd098d600ab15705775017beae402be773ceee10719ff70d710f"
# The JSON the doc's signature was computed over: indented by 4, a blank line before "order_id",
# a final newline. Its base64 starts "ewogICAgInJlcXVlc3QiOiAiL3YxL29yZGVyL3N", as the doc's
# header example shows.
DOC_PAYLOAD_JSON = '{\n    "request": "/v1/order/status",\n    "nonce": 123456,\n\n    "order_id": 18834\n}\n'
DOC_PAYLOAD_B64 = (
    "ewogICAgInJlcXVlc3QiOiAiL3YxL29yZGVyL3N0YXR1cyIsCiAgICAibm9uY2UiOiAxMjM0NTYsCgogICAgIm9yZGVyX2lkIjogMTg4MzQKfQo="
)
# The one-line spelling and its base64 as quoted with the example. DOC ERROR: the doc's signature is
# not the HMAC of this base64 but of DOC_PAYLOAD_B64 above (checked below).
DOC_ONE_LINE_JSON = '{"request": "/v1/order/status", "nonce": 123456, "order_id": 18834}'
DOC_ONE_LINE_B64 = "eyJyZXF1ZXN0IjogIi92MS9vcmRlci9zdGF0dXMiLCAibm9uY2UiOiAxMjM0NTYsICJvcmRlcl9pZCI6IDE4ODM0fQ=="


def credential(secret: str, api_key: str = API_KEY):
    return hmac_credential("gemini", api_key, secret)


def sign(request: UnsignedRequest, secret: str = FIXED_SECRET, now_ms: int = NOW_MS):
    return SCHEME.sign(request, credential(secret), fixed_environment(now_ms))


def ccxt_gemini(secret: str, nonce_ms: int, api_key: str = API_KEY):
    ex = ccxt.gemini({"apiKey": api_key, "secret": secret})
    ex.milliseconds = lambda: nonce_ms
    return ex


def payload_of(signed) -> str:
    return base64.b64decode(signed.headers_dict()["X-GEMINI-PAYLOAD"]).decode()


# -- published example ----------------------------------------------------------------
#
# The agent issues nonces, so a request cannot carry the doc's nonce 123456: the example is
# reproduced on sign_payload(), the step that signs a payload text exactly as given (the
# scheme builds that text as ccxt does, checked against ccxt below).


def test_doc_example_signature():
    payload, signature = sign_payload(credential(DOC_SECRET, "mykey"), DOC_PAYLOAD_JSON)
    assert payload == DOC_PAYLOAD_B64
    assert signature == DOC_SIGNATURE


def test_doc_example_one_line_base64_is_signed_as_given():
    payload, signature = sign_payload(credential(DOC_SECRET, "mykey"), DOC_ONE_LINE_JSON)
    assert payload == DOC_ONE_LINE_B64
    assert signature != DOC_SIGNATURE  # the doc error noted above


# -- ccxt's own sign() ------------------------------------------------------------------

CASES = [
    # method, ccxt path (with {params}), params
    ("POST", "v1/balances", {}),
    ("POST", "v1/order/new", {"client_order_id": "bot-42", "symbol": "btcusd", "amount": "0.001", "price": "30000",
                              "side": "buy", "type": "exchange limit", "options": ["maker-or-cancel"]}),
    ("POST", "v1/order/new", {"symbol": "ethusd", "amount": "1", "price": "2000", "side": "sell",
                              "type": "exchange limit"}),
    ("POST", "v1/order/status", {"order_id": 18834, "include_trades": True}),
    ("POST", "v1/order/cancel", {"order_id": 106817811}),
    ("POST", "v1/mytrades", {"symbol": "btcusd", "limit_trades": 50, "timestamp": 1700000000}),
    ("POST", "v1/withdraw/{currency}", {"currency": "btc", "address": "bc1qexample", "amount": "0.01"}),
    ("POST", "v1/deposit/{network}/newAddress", {"network": "bitcoin", "label": "é \u2028 \"q\" \\ \u0001"}),
    ("GET", "v1/prediction-markets/terms/status", {}),
    ("GET", "v2/network/{token}", {"token": "eth"}),
]


def request_for(method: str, ccxt_path: str, params: dict) -> UnsignedRequest:
    path = "/" + ccxt.Exchange.implode_params(ccxt_path, params)
    query = ccxt.Exchange.omit(params, ccxt.Exchange.extract_params(ccxt_path))
    if all(isinstance(v, str) for v in query.values()):
        return UnsignedRequest(method, path, body=tuple(query.items()))
    return UnsignedRequest(method, path, body=RawBody(ccxt.Exchange.json(query)))


@pytest.mark.parametrize("method,ccxt_path,params", CASES)
def test_equals_ccxt_sign(method, ccxt_path, params):
    secret = new_secret(28)
    expected = ccxt_gemini(secret, NOW_MS).sign(ccxt_path, ["private"], method, dict(params))
    signed = SCHEME.sign(request_for(method, ccxt_path, params), credential(secret), fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]


def test_payload_as_ccxt_builds_it():
    signed = sign(UnsignedRequest("POST", "/v1/order/status", body=RawBody('{"order_id": 18834}')))
    # request and nonce first, the nonce a string (as in Gemini's own Python example), members as written
    assert payload_of(signed) == f'{{"request":"/v1/order/status","nonce":"{NOW_MS}","order_id": 18834}}'
    assert signed.body == '{"order_id": 18834}'


def test_time_based_nonce_keys_are_not_offered():
    """Seconds within 30 s cannot be promised by a strictly increasing, crash-safe nonce."""
    with pytest.raises(UnsupportedKey, match="no option"):
        exchange_for("gemini").resolve_options({"nonce_unit": "seconds"})


names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"),
                min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n not in ("nonce", "request")), values, max_size=8),
    method=st.sampled_from(["GET", "POST"]),
    nonce=st.integers(min_value=1, max_value=2**53),
)
def test_any_parameters_equal_ccxt(params, method, nonce):
    expected = ccxt_gemini(FIXED_SECRET, nonce).sign("v1/orders", ["private"], method, dict(params))
    signed = sign(UnsignedRequest(method, "/v1/orders", body=tuple(params.items())), now_ms=nonce)
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]


# -- nonces --------------------------------------------------------------------------------


def test_nonce_comes_from_the_key_with_the_clock_in_ms_as_floor():
    key = SoftwareCredential(api_key=API_KEY, secret=FIXED_SECRET.encode(), last_nonce=NOW_MS + 5)
    request = UnsignedRequest("POST", "/v1/balances")
    first = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    second = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    assert key.floors == [NOW_MS, NOW_MS]
    assert json.loads(payload_of(first))["nonce"] == str(NOW_MS + 6)
    assert json.loads(payload_of(second))["nonce"] == str(NOW_MS + 7)
    expected = ccxt_gemini(FIXED_SECRET, NOW_MS + 7).sign("v1/balances", ["private"], "POST", {})
    assert second.headers_dict() == expected["headers"]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("DELETE", "/v1/order/cancel"), "POST"),
        (UnsignedRequest("PUT", "/v1/order/cancel"), "POST"),
        (UnsignedRequest("POST", "/v1/orders", query=(("symbol", "btcusd"),)), "into 'body'"),
        (UnsignedRequest("POST", "/v1/orders", body=(("nonce", "1"),)), "remove 'nonce'"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('{"nonce": 1}')), "remove 'nonce'"),
        (UnsignedRequest("POST", "/v1/orders", body=(("request", "/v1/balances"),)), "remove 'request'"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('{"request": "/v1/balances"}')), "remove 'request'"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody("")), "JSON object"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody("symbol=btcusd")), "JSON object"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('["a"]')), "JSON object"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('{"a": 1')), "JSON object"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('{"a": 1, "a": 2}')), "twice"),
        (UnsignedRequest("POST", "/v1/orders", body=RawBody('{"a": -Infinity}')), "Infinity"),
        (UnsignedRequest("POST", "/v1/orders", body=(("a", "1"), ("a", "2"))), "twice"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_)


def test_refusal_takes_no_nonce():
    key = credential(FIXED_SECRET)
    with pytest.raises(RequestInvalid):
        SCHEME.sign(UnsignedRequest("POST", "/v1/orders", body=RawBody("{")), key, fixed_environment(NOW_MS))
    assert key.last_nonce == 0


def test_signed_request_never_carries_the_secret():
    secret = new_secret(28)
    signed = sign(UnsignedRequest("POST", "/v1/balances"), secret=secret)
    assert secret not in repr(signed) and secret not in payload_of(signed)


# -- the ccxt bridge module (no agent) -----------------------------------------------------------


@pytest.mark.parametrize("method,ccxt_path,params", CASES)
def test_bridge_unsign_then_scheme_equals_plain_ccxt(method, ccxt_path, params):
    placeholder = ccxt.gemini(dict(bridge.PLACEHOLDER))
    placeholder.milliseconds = lambda: NOW_MS
    built = placeholder.sign(ccxt_path, ["private"], method, dict(params))
    unsigned = bridge.unsign(placeholder, built, ["private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS

    secret = new_secret(28)
    signed = SCHEME.sign(unsigned.request, credential(secret), fixed_environment(unsigned.timestamp_ms))
    expected = ccxt_gemini(secret, NOW_MS).sign(ccxt_path, ["private"], method, dict(params))
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]


def test_bridge_ccxt_seconds_nonce_becomes_milliseconds():
    """A bot whose ccxt is set to seconds nonces: the instant passes as ms, the agent signs in ms."""
    placeholder = ccxt.gemini(dict(bridge.PLACEHOLDER, options={"nonce": "seconds"}))
    placeholder.seconds = lambda: NOW_MS // 1000
    built = placeholder.sign("v1/balances", ["private"], "POST", {})
    unsigned = bridge.unsign(placeholder, built, ["private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS // 1000 * 1000
    signed = sign(unsigned.request, now_ms=unsigned.timestamp_ms)
    expected = ccxt_gemini(FIXED_SECRET, unsigned.timestamp_ms).sign("v1/balances", ["private"], "POST", {})
    assert signed.headers_dict() == expected["headers"]


def test_bridge_public_call_is_not_unsigned():
    placeholder = ccxt.gemini(dict(bridge.PLACEHOLDER))
    built = placeholder.sign("v1/pubticker/{symbol}", ["public"], "GET", {"symbol": "btcusd"})
    assert bridge.unsign(placeholder, built, ["public"]) is None
