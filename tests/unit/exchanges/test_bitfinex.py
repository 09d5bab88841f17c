"""Bitfinex, beyond its vectors (tests/vectors/bitfinex.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Bitfinex v2 scheme against ccxt 4.5's own bitfinex.sign() with the same secret
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
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import scheme_for
from agent.schemes import RawBody, UnsignedRequest
from support.leaks import register_secret
from support.reference import fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

SCHEME = scheme_for("bitfinex")
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


def test_raw_body_is_signed_as_written():
    text = '{ "id": [1, 2],\n  "note": "x" }'
    signed = sign(UnsignedRequest("POST", "/v2/auth/r/orders", body=RawBody(text)))
    assert signed.body == text
    prehash = f"/api/v2/auth/r/orders{NOW_MS}{text}".encode()
    expected = hmac.new(FIXED_SECRET.encode(), prehash, hashlib.sha384).hexdigest()
    assert signed.headers_dict()["bfx-signature"] == expected


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


# -- the ccxt bridge module (no agent) -----------------------------------------------------------
