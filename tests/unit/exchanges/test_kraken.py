"""Kraken, beyond its vectors (tests/vectors/kraken.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Kraken scheme against references not written by us: Kraken's published
example and ccxt 4.5's own kraken.sign() with the same secret and nonce; and the
ccxt bridge's kraken module, without an agent.

The scheme is pure; here its MAC is Python's hmac with the decoded secret.
"""

from __future__ import annotations

import base64
import json
import secrets

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import kraken as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.leaks import register_secret
from support import vectors
from support.reference import fixed_environment, hmac_credential
from support.strategies import TEXT as values

# The secret of Kraken's published example (tests/vectors/kraken.json, registered with the leak guard there)
DOC_SECRET = vectors.load("kraken")["published"][0]["key"]["secret"]

SCHEME = scheme_for("kraken")
NOW_MS = 1_700_000_000_123
API_KEY = "AKID-kraken-test"


def new_kraken_secret() -> str:
    """A Kraken-format secret: base64 of 64 random bytes (88 characters)."""
    return register_secret(base64.b64encode(secrets.token_bytes(64)).decode())


def credential(secret: str, api_key: str = API_KEY):
    return hmac_credential("kraken", api_key, secret)


def sign(request: UnsignedRequest, secret: str = DOC_SECRET, now_ms: int = NOW_MS):
    return SCHEME.sign(request, credential(secret), fixed_environment(now_ms))


def ccxt_kraken(secret: str, nonce: int, api_key: str = API_KEY):
    ex = ccxt.kraken({"apiKey": api_key, "secret": secret})
    ex.nonce = lambda: nonce
    ex.milliseconds = lambda: nonce
    return ex


# -- ccxt's own sign() ------------------------------------------------------------------

ORDERS = [
    {"ordertype": "limit", "type": "buy", "volume": "1.25", "price": "27500", "pair": "XBTUSD"},
    {"ordertype": "limit", "type": "sell", "volume": "0.5", "price": "28000", "pair": "XBTUSD", "cl_ord_id": "b-2"},
]


@pytest.mark.parametrize("path,params", [("AddOrderBatch", {"pair": "XBTUSD", "orders": ORDERS}),
                                         ("Balance", {})])
def test_raw_json_body_spelled_differently_is_kept_as_written(path, params):
    """A raw JSON object with spaces is signed as sent, the nonce inserted first."""
    secret = new_kraken_secret()
    raw = json.dumps(params, indent=1)
    signed = SCHEME.sign(UnsignedRequest("POST", "/0/private/" + path, body=RawBody("  " + raw + "\n")),
                         credential(secret), fixed_environment(NOW_MS))
    assert signed.body.startswith(f'{{"nonce":"{NOW_MS}"')
    assert json.loads(signed.body) == {"nonce": str(NOW_MS), **params}
    assert signed.body.endswith(raw[1:])  # the members exactly as written


names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_[]"),
                min_size=1, max_size=12) | st.just("price")


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n != "nonce"), values, max_size=8),
    nonce=st.integers(min_value=1, max_value=2**53),
)
def test_any_parameters_equal_ccxt(params, nonce):
    secret = DOC_SECRET
    expected = ccxt_kraken(secret, nonce).sign("OpenOrders", ["private"], "POST", dict(params))
    request = UnsignedRequest("POST", "/0/private/OpenOrders", body=tuple(params.items()))
    if params.get("price", "").endswith("%") and set("&=") & set(expected["body"]):
        # Sent as JSON (a percentage price), which Kraken reads as form text too: '&' or '=' is refused.
        with pytest.raises(RequestInvalid, match="raw JSON body for Kraken holds"):
            sign(request, secret, nonce)
        return
    signed = sign(request, secret, nonce)
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]


# -- the ccxt bridge module (no agent) -----------------------------------------------------------


def test_bridge_placeholder_is_not_a_secret_but_decodes():
    assert base64.b64decode(bridge.PLACEHOLDER["secret"]) == bytes(64)
