"""Gemini, beyond its vectors (tests/vectors/gemini.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Gemini scheme against references not written by us: Gemini's published
example and ccxt 4.5's own gemini.sign() with the same secret and nonce; and the
ccxt bridge's gemini module, without an agent.

Secrets are 28 characters and keys "account-" + 20, as Gemini issues them
(ccxt refuses keys without "account").
"""

from __future__ import annotations

import base64

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import gemini as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, UnsignedRequest, UnsupportedKey
from support.leaks import register_secret
from support.reference import fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

SCHEME = scheme_for("gemini")
NOW_MS = 1_700_000_000_123
API_KEY = "account-AKIDgeminitest00000"
FIXED_SECRET = register_secret("3zMnjHnmZnVjT7QnQhNszFVnVAD5")


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


# -- ccxt's own sign() ------------------------------------------------------------------


def test_payload_as_ccxt_builds_it():
    signed = sign(UnsignedRequest("POST", "/v1/order/status", body=RawBody('{"order_id": 18834}')))
    # request and nonce first, the nonce a string (as in Gemini's own Python example), members as written
    assert payload_of(signed) == f'{{"request":"/v1/order/status","nonce":"{NOW_MS}","order_id": 18834}}'
    assert signed.body == '{"order_id": 18834}'


def test_time_based_nonce_keys_are_not_offered():
    """Seconds within 30 s cannot be promised by a strictly increasing, crash-safe nonce."""
    with pytest.raises(UnsupportedKey, match="no option"):
        exchange_for("gemini").resolve_options({"nonce_unit": "seconds"})


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


# -- the ccxt bridge module (no agent) -----------------------------------------------------------


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
