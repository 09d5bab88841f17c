"""The Bitfinex v2 scheme against ccxt 4.5's own bitfinex.sign() with the same secret
and nonce, and the ccxt bridge's bitfinex module, without an agent.

Bitfinex publishes no signature vector (docs.bitfinex.com/docs/rest-auth shows
code only), so the references are ccxt and the described pre-hash. Secrets are
43 characters, as Bitfinex issues them: shorter than SHA-384's 48 bytes, which
the agent pads for SoftHSM (exchange-signing.md 0.2); not the scheme's concern.
"""

from __future__ import annotations

import hashlib
import hmac

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import bitfinex as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, fixed_environment, hmac_credential

SCHEME = scheme_for("bitfinex")
BASE = "https://api.bitfinex.com"
NOW_MS = 1_700_000_000_123
API_KEY = "AKID-bitfinex-test"
FIXED_SECRET = register_secret("Q" * 20 + "bitfinex" + "z" * 15)


def credential(secret: str):
    return hmac_credential("bitfinex", API_KEY, secret)


def sign(request: UnsignedRequest, secret: str = FIXED_SECRET, now_ms: int = NOW_MS):
    return SCHEME.sign(request, credential(secret), fixed_environment(now_ms))


def ccxt_bitfinex(secret: str, nonce: int):
    ex = ccxt.bitfinex({"apiKey": API_KEY, "secret": secret})
    ex.nonce = lambda: nonce
    ex.milliseconds = lambda: nonce
    return ex


# -- the documented pre-hash --------------------------------------------------------------


def test_signature_is_hmac_sha384_hex_of_api_path_nonce_body():
    """docs.bitfinex.com rest-auth: `/api/${apiPath}${nonce}${JSON.stringify(body)}`, HMAC-SHA384 hex."""
    signed = sign(UnsignedRequest("POST", "/v2/auth/r/wallets"))
    prehash = f"/api/v2/auth/r/wallets{NOW_MS}{{}}".encode()
    assert signed.body == "{}"
    assert signed.headers == (
        ("bfx-nonce", str(NOW_MS)),
        ("bfx-apikey", API_KEY),
        ("bfx-signature", hmac.new(FIXED_SECRET.encode(), prehash, hashlib.sha384).hexdigest()),
        ("Content-Type", "application/json"),
    )
    assert signed.path == "/v2/auth/r/wallets"  # the URL has no /api; the signed path does


# -- ccxt's own sign() ------------------------------------------------------------------

CASES = [
    # ccxt path (with {params}), params
    ("auth/r/wallets", {}),
    ("auth/r/orders", {"id": [123, 456]}),
    ("auth/r/orders/{symbol}", {"symbol": "tBTCUSD"}),
    ("auth/r/trades/{symbol}/hist", {"symbol": "tETHUSD", "limit": 25, "start": 1700000000000, "sort": -1}),
    ("auth/w/order/submit", {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.001", "price": "30000",
                             "cid": 1700000000123, "flags": 4096, "meta": {"aff_code": "x"}}),
    ("auth/w/order/submit", {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "-0.5", "price": "31000.5"}),
    ("auth/w/order/cancel", {"id": 123456789}),
    ("auth/w/order/cancel/multi", {"all": 1}),
    ("auth/r/ledgers/{currency}/hist", {"currency": "USD", "category": 28}),
    ("auth/w/deposit/address", {"wallet": "exchange", "method": "bitcoin", "op_renew": 0}),
    # non-ASCII: ccxt's json() (orjson) keeps it as UTF-8, signed as UTF-8
    ("auth/w/order/submit", {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "1", "price": "1",
                             "meta": {"note": "é \u2028 \"q\" \\ \u0001"}}),
]


def request_for(ccxt_path: str, params: dict) -> UnsignedRequest:
    path = "/v2/" + ccxt.Exchange.implode_params(ccxt_path, params)
    query = ccxt.Exchange.omit(params, ccxt.Exchange.extract_params(ccxt_path))
    if all(isinstance(v, str) for v in query.values()):
        return UnsignedRequest("POST", path, body=tuple(query.items()))
    return UnsignedRequest("POST", path, body=RawBody(ccxt.Exchange.json(query)))


@pytest.mark.parametrize("ccxt_path,params", CASES)
def test_equals_ccxt_sign(ccxt_path, params):
    secret = new_secret(43)
    expected = ccxt_bitfinex(secret, NOW_MS).sign(ccxt_path, ["private"], "POST", dict(params))
    signed = SCHEME.sign(request_for(ccxt_path, params), credential(secret), fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]


def test_raw_body_is_signed_as_written():
    text = '{ "id": [1, 2],\n  "note": "x" }'
    signed = sign(UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody(text)))
    assert signed.body == text
    prehash = f"/api/v2/auth/r/orders{NOW_MS}{text}".encode()
    expected = hmac.new(FIXED_SECRET.encode(), prehash, hashlib.sha384).hexdigest()
    assert signed.headers_dict()["bfx-signature"] == expected


names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"),
                min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n != "nonce"), values, max_size=8),
    nonce=st.integers(min_value=1, max_value=2**53),
)
def test_any_parameters_equal_ccxt(params, nonce):
    expected = ccxt_bitfinex(FIXED_SECRET, nonce).sign("auth/r/orders", ["private"], "POST", dict(params))
    signed = sign(UnsignedRequest("POST", "/v2/auth/r/orders", body=tuple(params.items())), now_ms=nonce)
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]


# -- nonces --------------------------------------------------------------------------------


def test_nonce_comes_from_the_key_with_the_clock_in_ms_as_floor():
    key = SoftwareCredential(api_key=API_KEY, secret=FIXED_SECRET.encode(), last_nonce=NOW_MS + 5)
    request = UnsignedRequest("POST", "/v2/auth/r/wallets")
    first = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    second = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    assert key.floors == [NOW_MS, NOW_MS]  # milliseconds, as ccxt: never microseconds
    assert first.headers_dict()["bfx-nonce"] == str(NOW_MS + 6)
    assert second.headers_dict()["bfx-nonce"] == str(NOW_MS + 7)
    expected = ccxt_bitfinex(FIXED_SECRET, NOW_MS + 7).sign("auth/r/wallets", ["private"], "POST", {})
    assert second.headers_dict()["bfx-signature"] == expected["headers"]["bfx-signature"]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("GET", "/v2/auth/r/wallets"), "POST only"),
        (UnsignedRequest("POST", "/v2/tickers"), "must start with /v2/auth/"),
        (UnsignedRequest("POST", "/v1/balances"), "must start with /v2/auth/"),
        (UnsignedRequest("POST", "/v2/auth/"), "must start with /v2/auth/"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", query=(("id", "1"),)), "into 'body'"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=(("nonce", "1"),)), "remove 'nonce'"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody('{"nonce": 1}')), "remove 'nonce'"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody("")), "JSON object"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody("id=1")), "JSON object"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody("[1, 2]")), "JSON object"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody('{"id": 1')), "JSON object"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody('{"id": 1, "id": 2}')), "twice"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody('{"id": Infinity}')), "Infinity"),
        (UnsignedRequest("POST", "/v2/auth/r/orders", body=(("a", "1"), ("a", "2"))), "twice"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_)


def test_refusal_takes_no_nonce():
    key = credential(FIXED_SECRET)
    with pytest.raises(RequestInvalid):
        SCHEME.sign(UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody("{")), key, fixed_environment(NOW_MS))
    assert key.last_nonce == 0


def test_signed_request_never_carries_the_secret():
    secret = new_secret(43)
    signed = sign(UnsignedRequest("POST", "/v2/auth/r/wallets"), secret=secret)
    assert secret not in repr(signed)


# -- the ccxt bridge module (no agent) -----------------------------------------------------------


@pytest.mark.parametrize("ccxt_path,params", CASES)
def test_bridge_unsign_then_scheme_equals_plain_ccxt(ccxt_path, params):
    placeholder = ccxt.bitfinex(dict(bridge.PLACEHOLDER))
    placeholder.nonce = lambda: NOW_MS
    built = placeholder.sign(ccxt_path, ["private"], "POST", dict(params))
    unsigned = bridge.unsign(placeholder, built, ["private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS

    secret = new_secret(43)
    signed = SCHEME.sign(unsigned.request, credential(secret), fixed_environment(unsigned.timestamp_ms))
    expected = ccxt_bitfinex(secret, NOW_MS).sign(ccxt_path, ["private"], "POST", dict(params))
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]


def test_bridge_public_call_is_not_unsigned():
    placeholder = ccxt.bitfinex(dict(bridge.PLACEHOLDER))
    built = placeholder.sign("tickers", ["public"], "GET", {"symbols": "tBTCUSD"})
    assert bridge.unsign(placeholder, built, ["public"]) is None
