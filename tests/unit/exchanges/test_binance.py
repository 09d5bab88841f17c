"""Binance (HMAC), beyond its vectors (tests/vectors/binance.json, binanceusdm.json, binanceus.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Binance scheme against references not written by us: Binance's published
examples and ccxt 4.5's own binance.sign() with the same secret and timestamp.

The scheme is pure; here its MAC function is Python's hmac with the secret (the
token path is the same scheme with the token's MAC; see test_e2e.py).
"""

from __future__ import annotations


import ccxt
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import scheme_for
from agent.schemes import UnsignedRequest
from support import vectors
from support.reference import fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

# The key of Binance's published examples (tests/vectors/binance.json, registered with the leak guard there)
DOC_KEY = vectors.load("binance")["published"][0]["key"]
DOC_SECRET, DOC_API_KEY = DOC_KEY["secret"], DOC_KEY["api_key"]

SCHEME = scheme_for("binance")
NOW_MS = 1_700_000_000_123


def sign(request: UnsignedRequest, secret: str = DOC_SECRET, api_key: str = DOC_API_KEY, now_ms: int = NOW_MS):
    return SCHEME.sign(request, hmac_credential("binance", api_key, secret), fixed_environment(now_ms))


# -- ccxt's own sign() ------------------------------------------------------------------

CCXT_CLASSES = {"binance": ccxt.binance, "binanceus": ccxt.binanceus, "binanceusdm": ccxt.binanceusdm}


def ccxt_sign(exchange: str, api: str, ccxt_path: str, method: str, params: dict, secret: str, now_ms: int):
    ex = CCXT_CLASSES[exchange]({"apiKey": "AKID-test", "secret": secret, "options": {"recvWindow": None}})
    ex.nonce = lambda: now_ms
    return ex.sign(ccxt_path, [api], method, dict(params))


# Names: Binance-style identifiers. Values: anything a user could type, non-ASCII included
# (percent-encoded as UTF-8 before signing, as Binance requires since 2026-01-15).


@settings(max_examples=200, deadline=None)
@given(
    # apiKey, in any case, is refused (tests/vectors/binance.json): a signed one would also log a WebSocket session in
    params=st.dictionaries(names.filter(lambda n: n not in ("timestamp", "signature", "recvWindow")
                                        and n.casefold() != "apikey"), values, max_size=8),
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
