"""The Crypto.com scheme against ccxt 4.5's own cryptocom.sign() and the documented paramString.

ccxt's clock (its nonce and id) is pinned to the agent's. ccxt and the documented
algorithm differ on a null value (ccxt: "None", documented: "null";
exchange-signing.md 2.8): the scheme follows the documentation, and that case is
checked against an independent rendering of the documented rule, not ccxt.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.ccxt_bridge.exchanges import cryptocom as bridge
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, scheme_for
from agent.schemes.cryptocom import param_string
from conftest import new_secret
from reference import fixed_environment, hmac_credential

SCHEME = scheme_for("cryptocom")
NOW_MS = 1_700_000_000_123
# Crypto.com does not document key or secret lengths: 22 alphanumeric characters is an assumption.
API_KEY = "a7Rk2PqX9mZt4WvB8nYc3L"
SECRET_LEN = 22
V1 = "https://api.crypto.com/exchange/v1"


def ccxt_json(value) -> str:
    return ccxt.Exchange.json(value)


def ccxt_sign(method: str, params: dict, secret: str, now_ms: int = NOW_MS, api=("v1", "private")):
    ex = ccxt.cryptocom({"apiKey": API_KEY, "secret": secret})
    ex.milliseconds = lambda: now_ms
    return ex.sign(method, list(api), "POST", params)


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, key=None):
    return SCHEME.sign(request, key or hmac_credential("cryptocom", API_KEY, secret), fixed_environment(now_ms))


CASES = [
    ("private/user-balance", {}),
    ("private/create-order", {"instrument_name": "BTC_USD", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
                              "price": "50000", "client_oid": "bot-42", "time_in_force": "GOOD_TILL_CANCEL",
                              "exec_inst": ["POST_ONLY"]}),
    ("private/cancel-order", {"order_id": "6530219599901241", "instrument_name": "BTC_USD"}),
    ("private/get-order-history", {"instrument_name": "ETH_USD", "start_time": 1699990000000,
                                   "end_time": 1700000000000, "limit": 100}),
    ("private/create-order-list", {"contingency_type": "LIST", "order_list": [
        {"instrument_name": "BTC_USD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "50000"},
        {"instrument_name": "ETH_USD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "2500",
         "exec_inst": ["POST_ONLY", "SMART_POST_ONLY"]},
    ]}),
    ("private/cancel-order-list", {"contingency_type": "LIST", "order_list": [
        {"instrument_name": "BTC_USD", "order_id": "1"}, {"instrument_name": "BTC_USD", "order_id": "2"}]}),
]


@pytest.mark.parametrize("method,params", CASES)
def test_raw_json_params_equal_ccxt(method, params):
    secret = new_secret(SECRET_LEN)
    expected = ccxt_sign(method, params, secret)
    signed = sign(UnsignedRequest("POST", f"/exchange/v1/{method}", body=RawBody(ccxt_json(params))), secret)
    assert V1.removesuffix("/exchange/v1") + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert dict(signed.headers) == expected["headers"]
    body = json.loads(signed.body)
    assert body["id"] == body["nonce"] == str(NOW_MS) and body["method"] == method


@pytest.mark.parametrize("method,params", [c for c in CASES if all(isinstance(v, str) for v in c[1].values())])
def test_string_pairs_equal_ccxt(method, params):
    secret = new_secret(SECRET_LEN)
    expected = ccxt_sign(method, params, secret)
    signed = sign(UnsignedRequest("POST", f"/exchange/v1/{method}", body=tuple(params.items())), secret)
    assert signed.body == expected["body"]


def test_other_ccxt_apis_sign_the_same_way():
    secret = new_secret(SECRET_LEN)
    for api, base, prefix in (("v2", "https://api.crypto.com", "/v2"),
                              ("derivatives", "https://deriv-api.crypto.com", "/v1")):
        expected = ccxt_sign("private/get-account-summary", {"currency": "BTC"}, secret, api=(api, "private"))
        signed = sign(UnsignedRequest("POST", f"{prefix}/private/get-account-summary",
                                      body=(("currency", "BTC"),)), secret)
        assert base + signed.path == expected["url"] and signed.body == expected["body"]


def documented_param_string(obj, level=0):
    """Crypto.com's documented paramString (the official Python sample, with lists of text as
    its JavaScript sample has them), typed here independently of the scheme."""
    if level >= 3:
        return str(obj)
    if isinstance(obj, str):
        return obj
    out = ""
    for key in sorted(obj):
        out += key
        value = obj[key]
        if value is None:
            out += "null"
        elif isinstance(value, list):
            for item in value:
                out += "null" if item is None else documented_param_string(item, level + 1)
        else:
            out += str(value)
    return out


def test_null_is_signed_as_documented_not_as_ccxt_renders_it():
    secret = new_secret(SECRET_LEN)
    params = {"instrument_name": "BTC_USD", "client_oid": None, "order_list": [{"a": None, "b": "x"}]}
    signed = sign(UnsignedRequest("POST", "/exchange/v1/private/create-order", body=RawBody(json.dumps(params))),
                  secret)
    text = "private/create-order" + str(NOW_MS) + API_KEY + documented_param_string(params) + str(NOW_MS)
    assert documented_param_string(params) == "client_oidnullinstrument_nameBTC_USDorder_listanullbx"
    assert json.loads(signed.body)["sig"] == hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    # ccxt renders the same None as "None": its signature differs (the documented discrepancy).
    assert ccxt.cryptocom().params_to_string(params, 0) == "client_oidNoneinstrument_nameBTC_USDorder_listaNonebx"
    assert json.loads(ccxt_sign("private/create-order", params, secret)["body"])["sig"] != json.loads(signed.body)["sig"]


def test_param_string_recursion():
    assert param_string({"b": "2", "a": "1"}) == "a1b2"
    assert param_string({"l": ["x", {"z": "1", "y": ["q", {"k": "v"}]}]}) == "lxy" + "q" + "kv" + "z1"
    assert param_string({"n": 7, "s": "", "e": []}) == "en7s"


def test_nonce_is_the_keys_strictly_increasing_nonce():
    secret = new_secret(SECRET_LEN)
    key = hmac_credential("cryptocom", API_KEY, secret)
    request = UnsignedRequest("POST", "/exchange/v1/private/user-balance")
    nonces = [json.loads(sign(request, secret, key=key).body)["nonce"] for _ in range(3)]
    assert nonces == [str(NOW_MS), str(NOW_MS + 1), str(NOW_MS + 2)]
    second = json.loads(sign(request, secret, key=key).body)
    assert second["id"] == second["nonce"]


# -- arbitrary parameters --------------------------------------------------------------------

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=10)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
leaf = st.one_of(text, st.integers(min_value=-(2**53), max_value=2**53))
# ccxt renders list elements that are text or objects (an integer element crashes its params_to_string).
element = st.one_of(text, st.dictionaries(names, st.one_of(leaf, st.lists(text, max_size=3)), max_size=4))
value = st.one_of(leaf, st.lists(element, max_size=4))


# now_ms >= 1: the reference credential has issued nonce 0 already (its last_nonce starts at 0).
# Top-level 'sig' and 'api_key' are refused by design (see the refusals below): not generated here.
@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(names.filter(lambda n: n not in ("sig", "api_key")), value, max_size=6),
       now_ms=st.integers(min_value=1, max_value=2**45))
def test_any_parameters_equal_ccxt(params, now_ms):
    secret = "s" * SECRET_LEN
    expected = ccxt_sign("private/create-order", params, secret, now_ms)
    signed = sign(UnsignedRequest("POST", "/exchange/v1/private/create-order", body=RawBody(ccxt_json(params))),
                  secret, now_ms)
    assert signed.body == expected["body"]
    assert dict(signed.headers) == expected["headers"]


# -- refusals ---------------------------------------------------------------------------------

P = "/exchange/v1/private/create-order"


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("GET", P), "POST"),
        (UnsignedRequest("POST", P, query=(("a", "1"),)), "JSON body"),
        (UnsignedRequest("POST", "/exchange/v1/public/get-book"), "private method"),
        (UnsignedRequest("POST", "/exchange/v1/private/"), "private method"),
        (UnsignedRequest("POST", P, body=RawBody("{not json")), "JSON object"),
        (UnsignedRequest("POST", P, body=RawBody("[1, 2]")), "JSON object"),
        (UnsignedRequest("POST", P, body=RawBody('{"a":' + "[" * 200_000)), "JSON object"),
        (UnsignedRequest("POST", P, body=RawBody('{"a": "1", "a": "2"}')), "twice"),
        (UnsignedRequest("POST", P, body=RawBody('{"a": NaN}')), "not JSON"),
        (UnsignedRequest("POST", P, body=RawBody('{"post_only": true}')), "boolean"),
        (UnsignedRequest("POST", P, body=RawBody('{"price": 0.1}')), "decimal number"),
        (UnsignedRequest("POST", P, body=RawBody('{"price": 1e3}')), "decimal number"),
        (UnsignedRequest("POST", P, body=RawBody('{"o": {"a": "1"}}')), "object outside a list"),
        (UnsignedRequest("POST", P, body=RawBody('{"o": [["a"]]}')), "list inside a list"),
        (UnsignedRequest("POST", P, body=RawBody('{"o": [{"p": [{"q": [{"r": "1"}]}]}]}')), "deeper"),
        (UnsignedRequest("POST", P, body=RawBody('{"o": [{"b": false}]}')), "boolean"),
        (UnsignedRequest("POST", P, body=RawBody('{"sig": "abc"}')), "remove 'sig'"),
        (UnsignedRequest("POST", P, body=(("api_key", "k"),)), "remove 'api_key'"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_, new_secret(SECRET_LEN))


def test_signed_request_never_carries_the_secret():
    secret = new_secret(SECRET_LEN)
    assert secret not in repr(sign(UnsignedRequest("POST", P, body=(("a", "1"),)), secret))


# -- the ccxt bridge, without an agent ----------------------------------------------------------


@pytest.mark.parametrize("method,params", CASES)
def test_bridge_reproduces_plain_ccxt(method, params):
    ex = ccxt.cryptocom(dict(bridge.PLACEHOLDER))
    ex.milliseconds = lambda: NOW_MS
    built = ex.sign(method, ["v1", "private"], "POST", params)
    unsigned = bridge.unsign(ex, built, ["v1", "private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS
    secret = new_secret(SECRET_LEN)
    signed = SCHEME.sign(unsigned.request, hmac_credential("cryptocom", API_KEY, secret),
                         fixed_environment(unsigned.timestamp_ms))
    expected = ccxt_sign(method, params, secret)
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert dict(signed.headers) == expected["headers"]
    assert signed.method == expected["method"]


def test_bridge_leaves_public_calls_alone():
    ex = ccxt.cryptocom(dict(bridge.PLACEHOLDER))
    built = ex.sign("public/get-book", ["v1", "public"], "GET", {"instrument_name": "BTC_USD", "depth": 10})
    assert bridge.unsign(ex, built, ["v1", "public"]) is None
