"""The Binance scheme against references not written by us: Binance's published
examples and ccxt 4.5's own binance.sign() with the same secret and timestamp.

The scheme is pure; here its MAC function is Python's hmac with the secret (the
token path is the same scheme with the token's MAC; see test_e2e.py).
"""

from __future__ import annotations


import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.leaks import new_secret, register_secret
from support.reference import fixed_environment, hmac_credential

# Binance spot rest-api.md "SIGNED endpoint examples for POST /api/v3/order"
# (the same values appear in the Binance US docs).
DOC_SECRET = register_secret("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_PARAMS = (
    ("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
    ("quantity", "1"), ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559"),
)
DOC_SIG_1_AND_2 = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
DOC_SIG_3_MIXED = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
# USD-M futures general-info "SIGNED Endpoint Examples for POST /fapi/v1/order", example 1.
FAPI_SECRET = register_secret("2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9")
FAPI_API_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
FAPI_PARAMS = (
    ("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("quantity", "1"), ("price", "9000"),
    ("timeInForce", "GTC"), ("recvWindow", "5000"), ("timestamp", "1591702613943"),
)
FAPI_SIG_1 = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"

SCHEME = scheme_for("binance")
NOW_MS = 1_700_000_000_123


def sign(request: UnsignedRequest, secret: str = DOC_SECRET, api_key: str = DOC_API_KEY, now_ms: int = NOW_MS):
    return SCHEME.sign(request, hmac_credential("binance", api_key, secret), fixed_environment(now_ms))


# -- published examples --------------------------------------------------------------


def test_doc_example_1_query_string():
    signed = sign(UnsignedRequest("POST", "/api/v3/order", query=DOC_PARAMS))
    assert signed.path == (
        "/api/v3/order?symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        f"&recvWindow=5000&timestamp=1499827319559&signature={DOC_SIG_1_AND_2}"
    )
    assert signed.body == ""
    assert dict(signed.headers) == {"X-MBX-APIKEY": DOC_API_KEY}


def test_doc_example_2_request_body():
    signed = sign(UnsignedRequest("POST", "/api/v3/order", body=DOC_PARAMS))
    assert signed.path == "/api/v3/order"
    assert signed.body.endswith(f"&timestamp=1499827319559&signature={DOC_SIG_1_AND_2}")
    assert dict(signed.headers)["Content-Type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize("raw", [False, True])
def test_doc_example_3_mixed_query_and_body(raw: bool):
    # The published signature is the HMAC of query + body joined with no separator...
    body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    total = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC" + body
    assert hmac_credential("binance", DOC_API_KEY, DOC_SECRET).mac(total.encode(), "sha256").hex() == DOC_SIG_3_MIXED
    # ...which is why the agent refuses to sign such a request: a bot could move that boundary.
    request = UnsignedRequest(
        "POST", "/api/v3/order", query=DOC_PARAMS[:4], body=RawBody(body) if raw else DOC_PARAMS[4:]
    )
    with pytest.raises(RequestInvalid, match="one or the other"):
        sign(request)


@pytest.mark.parametrize("exchange", ["binance", "binanceusdm"])
def test_usdm_futures_doc_example_1(exchange: str):
    signed = scheme_for(exchange).sign(
        UnsignedRequest("POST", "/fapi/v1/order", query=FAPI_PARAMS),
        hmac_credential(exchange, FAPI_API_KEY, FAPI_SECRET), fixed_environment(NOW_MS),
    )
    assert signed.path.endswith(f"&timestamp=1591702613943&signature={FAPI_SIG_1}")


def test_binance_us_doc_example():
    signed = scheme_for("binanceus").sign(
        UnsignedRequest("POST", "/api/v3/order", query=DOC_PARAMS),
        hmac_credential("binanceus", DOC_API_KEY, DOC_SECRET), fixed_environment(NOW_MS),
    )
    assert signed.path.endswith(f"signature={DOC_SIG_1_AND_2}")


# -- ccxt's own sign() ------------------------------------------------------------------

CCXT_CLASSES = {"binance": ccxt.binance, "binanceus": ccxt.binanceus, "binanceusdm": ccxt.binanceusdm}


def ccxt_sign(exchange: str, api: str, ccxt_path: str, method: str, params: dict, secret: str, now_ms: int):
    ex = CCXT_CLASSES[exchange]({"apiKey": "AKID-test", "secret": secret, "options": {"recvWindow": None}})
    ex.nonce = lambda: now_ms
    return ex.sign(ccxt_path, [api], method, dict(params))


CASES = [
    # exchange, ccxt api, ccxt path, our path, method, params
    ("binance", "private", "order", "/api/v3/order", "POST",
     {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
      "price": "50000", "newClientOrderId": "bot-42"}),
    ("binance", "private", "order", "/api/v3/order", "DELETE", {"symbol": "BTCUSDT", "orderId": "123456"}),
    ("binance", "private", "account", "/api/v3/account", "GET", {"omitZeroBalances": "true"}),
    ("binance", "private", "openOrders", "/api/v3/openOrders", "GET", {}),
    ("binanceusdm", "fapiPrivate", "order", "/fapi/v1/order", "POST",
     {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.01", "newClientOrderId": "b-1"}),
    ("binanceusdm", "fapiPrivateV2", "balance", "/fapi/v2/balance", "GET", {}),
    ("binanceus", "private", "order", "/api/v3/order", "POST",
     {"symbol": "ETHUSD", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "2000",
      "newClientOrderId": "us-1"}),
]
BASES = {"binance": "https://api.binance.com", "binanceus": "https://api.binance.us",
         "binanceusdm": "https://fapi.binance.com"}


@pytest.mark.parametrize("exchange,api,ccxt_path,path,method,params", CASES)
def test_equals_ccxt_sign(exchange, api, ccxt_path, path, method, params):
    secret = new_secret(64)
    expected = ccxt_sign(exchange, api, ccxt_path, method, params, secret, NOW_MS)
    pairs = tuple(params.items())
    request = (
        UnsignedRequest(method, path, query=pairs) if method in ("GET", "DELETE")
        else UnsignedRequest(method, path, body=pairs)
    )
    signed = scheme_for(exchange).sign(
        request, hmac_credential(exchange, "AKID-test", secret), fixed_environment(NOW_MS)
    )
    assert BASES[exchange] + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == expected["headers"]
    assert signed.method == expected["method"]


# Names: Binance-style identifiers. Values: anything a user could type, non-ASCII included
# (percent-encoded as UTF-8 before signing, as Binance requires since 2026-01-15).
names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n not in ("timestamp", "signature", "recvWindow")), values, max_size=8),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, now_ms):
    secret = "s" * 64
    expected = ccxt_sign("binance", "private", "openOrders", method, params, secret, now_ms)
    pairs = tuple(params.items())
    request = (
        UnsignedRequest(method, "/api/v3/openOrders", query=pairs) if method in ("GET", "DELETE")
        else UnsignedRequest(method, "/api/v3/openOrders", body=pairs)
    )
    signed = sign(request, secret=secret, api_key="AKID-test", now_ms=now_ms)
    assert "https://api.binance.com" + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")


# -- the agent's own rules ----------------------------------------------------------------


def test_timestamp_is_added_first_when_absent():
    signed = sign(UnsignedRequest("GET", "/api/v3/account"))
    assert signed.path.startswith(f"/api/v3/account?timestamp={NOW_MS}&signature=")


def test_caller_timestamp_is_kept():
    signed = sign(UnsignedRequest("GET", "/api/v3/account", query=(("timestamp", "1499827319559"),)))
    assert "timestamp=1499827319559" in signed.path and str(NOW_MS) not in signed.path


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("PATCH", "/api/v3/order"), "method"),
        (UnsignedRequest("get", "/api/v3/order"), "method"),
        (UnsignedRequest("GET", "api/v3/order"), "path"),
        (UnsignedRequest("GET", "/api/v3/order?symbol=X"), "path"),
        (UnsignedRequest("GET", "/api v3"), "path"),
        (UnsignedRequest("GET", "/x", query=(("signature", "abc"),)), "signature"),
        (UnsignedRequest("GET", "/x", query=(("timestamp", "yesterday"),)), "timestamp"),
        (UnsignedRequest("GET", "/x", query=(("a", "1"), ("a", "2"))), "twice"),
        (UnsignedRequest("POST", "/x", query=(("a", "1"),), body=(("a", "2"),)), "one or the other"),
        (UnsignedRequest("GET", "/x", body=(("a", "1"),)), "query only"),
        (UnsignedRequest("POST", "/x", body=RawBody("&".join(f"p{i}=1" for i in range(300)))), "more than 256"),
        (UnsignedRequest("X" * 100_000, "/x"), "method .XXXXXXXXXXXXXXXX. is not"),
        (UnsignedRequest("POST", "/x", body=RawBody("not a form")), "form-encoded"),
        (UnsignedRequest("POST", "/x", body=RawBody("a=\u00e9")), "ASCII"),
        (UnsignedRequest("GET", "/x", query=(("", "1"),)), "names"),
        (UnsignedRequest("GET", "/x", query=(("a", "\ud800"),)), "Unicode"),
        (UnsignedRequest("GET", "/x", query=tuple((f"p{i}", "v") for i in range(300))), "more than"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_)


def test_signed_request_never_carries_the_secret():
    secret = new_secret(64)
    signed = sign(UnsignedRequest("POST", "/api/v3/order", body=DOC_PARAMS), secret=secret)
    assert secret not in repr(signed)
