"""The Bitstamp scheme against ccxt 4.5's own bitstamp.sign() and Bitstamp's Python sample.

ccxt's clock is pinned to the agent's, and its uuid() returns the X-Auth-Nonce the
scheme drew from env.random_bytes, so the comparison is byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import bitstamp as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from agent.exchanges.bitstamp.scheme import uuid4_from
from support.leaks import new_secret
from support.reference import fixed_environment, hmac_credential

SCHEME = scheme_for("bitstamp")
BASE = "https://www.bitstamp.net"
NOW_MS = 1_700_000_000_123
API_KEY = "kq7XhV2mB9sT4nW8rY3cZ6pL1dF5gJ0a"  # 32 characters, as Bitstamp issues them


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, seed: bytes = b"seed"):
    return SCHEME.sign(request, hmac_credential("bitstamp", API_KEY, secret), fixed_environment(now_ms, seed))


def ccxt_sign(ccxt_path: str, api: str, method: str, params: dict, secret: str, now_ms: int, nonce: str):
    ex = ccxt.bitstamp({"apiKey": API_KEY, "secret": secret})
    ex.milliseconds = lambda: now_ms
    ex.uuid = lambda: nonce
    return ex.sign(ccxt_path, [api], method, dict(params))


CASES = [
    # ccxt path, our path, method, params (ccxt sends private params only in a POST body)
    ("balance/", "/api/v2/balance/", "POST", {}),
    ("balance/{pair}/", "/api/v2/balance/btcusd/", "POST", {"pair": "btcusd"}),
    ("buy/{pair}/", "/api/v2/buy/btcusd/", "POST",
     {"pair": "btcusd", "amount": "0.01", "price": "50000", "client_order_id": "bot-42"}),
    ("cancel_order/", "/api/v2/cancel_order/", "POST", {"id": "1234567890"}),
    ("user_transactions/", "/api/v2/user_transactions/", "POST", {"offset": "1", "limit": "100", "sort": "desc"}),
    ("travel_rule/contacts/", "/api/v2/travel_rule/contacts/", "GET", {}),
    ("contacts/{contact_uuid}/", "/api/v2/contacts/6a1c1c3e-0000-4000-8000-000000000001/", "GET",
     {"contact_uuid": "6a1c1c3e-0000-4000-8000-000000000001"}),
]


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("ccxt_path,path,method,params", CASES)
def test_equals_ccxt_sign(ccxt_path, path, method, params, raw):
    secret = new_secret(32)
    body = tuple((k, v) for k, v in params.items() if "{" + k + "}" not in ccxt_path)
    if method == "GET":
        body = None
    elif raw:
        body = RawBody("&".join(f"{k}={v}" for k, v in body))
    signed = sign(UnsignedRequest(method, path, body=body), secret)
    nonce = signed.headers_dict()["X-Auth-Nonce"]
    expected = ccxt_sign(ccxt_path, "private", method, params, secret, NOW_MS, nonce)
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == expected["headers"]
    assert signed.method == expected["method"]


def test_empty_post_sends_ccxts_dummy_body():
    signed = sign(UnsignedRequest("POST", "/api/v2/balance/"), new_secret(32))
    assert signed.body == "foo=bar"
    assert signed.headers_dict()["Content-Type"] == "application/x-www-form-urlencoded"
    assert sign(UnsignedRequest("POST", "/api/v2/balance/", body=RawBody("")), new_secret(32)).body == "foo=bar"


def test_matches_bitstamps_python_sample():
    """Bitstamp's sample (exchange-signing.md 2.6), re-typed: user_transactions with offset=1."""
    secret = new_secret(32)
    signed = sign(UnsignedRequest("POST", "/api/v2/user_transactions/", body=(("offset", "1"),)), secret)
    headers = signed.headers_dict()
    nonce, timestamp = headers["X-Auth-Nonce"], headers["X-Auth-Timestamp"]
    message = ("BITSTAMP " + API_KEY + "POST" + "www.bitstamp.net" + "/api/v2/user_transactions/" + ""
               + "application/x-www-form-urlencoded" + nonce + timestamp + "v2" + "offset=1")
    assert headers["X-Auth-Signature"] == hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert headers["X-Auth"] == "BITSTAMP " + API_KEY and headers["X-Auth-Version"] == "v2"
    assert timestamp == str(NOW_MS)


def test_get_has_no_content_type_and_signs_empty_slots():
    secret = new_secret(32)
    signed = sign(UnsignedRequest("GET", "/api/v2/travel_rule/contacts/"), secret)
    headers = signed.headers_dict()
    assert "Content-Type" not in headers and signed.body == ""
    message = (f"BITSTAMP {API_KEY}GETwww.bitstamp.net/api/v2/travel_rule/contacts/"
               f"{headers['X-Auth-Nonce']}{NOW_MS}v2")
    assert headers["X-Auth-Signature"] == hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_a_query_is_refused():
    # The signed text would join the query to the Content-Type with nothing between them.
    with pytest.raises(RequestInvalid, match="move the query into 'body'"):
        sign(UnsignedRequest("GET", "/api/v2/earn/transactions/", query=(("limit", "5"),)), new_secret(32))


def test_a_path_without_its_trailing_slash_is_refused():
    # The path must not be able to end in a piece of the Content-Type that follows it in the signed text.
    with pytest.raises(RequestInvalid, match="end with '/'"):
        sign(UnsignedRequest("POST", "/api/v2/balance"), new_secret(32))


def test_get_without_parameters_is_signed_with_empty_query_and_content_type():
    secret = new_secret(32)
    signed = sign(UnsignedRequest("GET", "/api/v2/earn/transactions/"), secret)
    headers = signed.headers_dict()
    assert signed.path == "/api/v2/earn/transactions/"
    message = f"BITSTAMP {API_KEY}GETwww.bitstamp.net/api/v2/earn/transactions/{headers['X-Auth-Nonce']}{NOW_MS}v2"
    assert headers["X-Auth-Signature"] == hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def test_nonce_is_a_uuid4_from_the_environment():
    secret = new_secret(32)
    request = UnsignedRequest("POST", "/api/v2/balance/")
    nonces = {sign(request, secret, seed=bytes([i])).headers_dict()["X-Auth-Nonce"] for i in range(20)}
    assert len(nonces) == 20
    for nonce in nonces:
        parsed = uuid.UUID(nonce)
        assert len(nonce) == 36 and str(parsed) == nonce
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert uuid4_from(b"\xff" * 16) == "ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert uuid4_from(b"\x00" * 16) == "00000000-0000-4000-8000-000000000000"


# -- arbitrary parameters --------------------------------------------------------------------

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(names, values, max_size=8), now_ms=st.integers(min_value=0, max_value=2**45))
def test_any_parameters_equal_ccxt(params, now_ms):
    secret = "s" * 32
    signed = sign(UnsignedRequest("POST", "/api/v2/user_transactions/", body=tuple(params.items())), secret, now_ms)
    expected = ccxt_sign("user_transactions/", "private", "POST", params, secret, now_ms,
                         signed.headers_dict()["X-Auth-Nonce"])
    assert BASE + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert dict(signed.headers) == expected["headers"]


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("GET", "/api/v2/balance/", body=(("a", "1"),)), "no body"),
        (UnsignedRequest("POST", "/api/v2/balance/", body=RawBody("not a form")), "form-encoded"),
        (UnsignedRequest("POST", "/api/v2/balance/", body=RawBody("a=\u00e9")), "ASCII"),
        (UnsignedRequest("PATCH", "/api/v2/balance/"), "method"),
        (UnsignedRequest("POST", "/api/v2/balance/", body=(("a", "1"), ("a", "2"))), "twice"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_, new_secret(32))


def test_signed_request_never_carries_the_secret():
    secret = new_secret(32)
    assert secret not in repr(sign(UnsignedRequest("POST", "/api/v2/balance/"), secret))


# -- the ccxt bridge, without an agent ----------------------------------------------------------


@pytest.mark.parametrize("ccxt_path,path,method,params", CASES)
def test_bridge_reproduces_plain_ccxt(ccxt_path, path, method, params):
    ex = ccxt.bitstamp(dict(bridge.PLACEHOLDER))
    ex.milliseconds = lambda: NOW_MS
    built = ex.sign(ccxt_path, ["private"], method, dict(params))
    unsigned = bridge.unsign(ex, built, ["private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS
    secret = new_secret(32)
    signed = SCHEME.sign(unsigned.request, hmac_credential("bitstamp", API_KEY, secret),
                         fixed_environment(unsigned.timestamp_ms))
    expected = ccxt_sign(ccxt_path, "private", method, params, secret, NOW_MS, signed.headers_dict()["X-Auth-Nonce"])
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == expected["headers"]
    assert signed.method == expected["method"]


def test_bridge_leaves_public_calls_alone():
    ex = ccxt.bitstamp(dict(bridge.PLACEHOLDER))
    built = ex.sign("order_book/{pair}/", ["public"], "GET", {"pair": "btcusd", "group": "1"})
    assert bridge.unsign(ex, built, ["public"]) is None
