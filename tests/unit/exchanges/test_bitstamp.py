"""Bitstamp, beyond its vectors (tests/vectors/bitstamp.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Bitstamp scheme against ccxt 4.5's own bitstamp.sign() and Bitstamp's Python sample.

ccxt's clock is pinned to the agent's, and its uuid() returns the X-Auth-Nonce the
scheme drew from env.random_bytes, so the comparison is byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

import ccxt
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import scheme_for
from agent.schemes import RawBody, UnsignedRequest
from agent.exchanges.bitstamp.scheme import uuid4_from
from support.leaks import new_secret
from support.reference import fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

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


# -- the ccxt bridge, without an agent ----------------------------------------------------------
