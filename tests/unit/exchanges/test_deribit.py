"""Deribit, beyond its vectors (tests/vectors/deribit.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Deribit scheme against ccxt 4.5's own deribit.sign() and Deribit's description.

ccxt takes both its timestamp and its nonce from milliseconds(); pinned to the
agent's clock, they are the agent's timestamp and (for a fresh key) its nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import string

import ccxt
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, UnsignedRequest
from support.leaks import new_secret
from support.reference import fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

SCHEME = scheme_for("deribit")
BASE = "https://www.deribit.com"
NOW_MS = 1_700_000_000_123
# Shaped like the client id and secret in Deribit's public/auth example (10 and 32 characters);
# Deribit does not document their lengths (unverified).
CLIENT_ID = "fo7WAPRm4P"
SECRET_ALPHABET = string.ascii_uppercase + string.digits


def secret() -> str:
    return new_secret(32, SECRET_ALPHABET)


def sign(request: UnsignedRequest, client_secret: str, now_ms: int = NOW_MS, key=None):
    return SCHEME.sign(request, key or hmac_credential("deribit", CLIENT_ID, client_secret), fixed_environment(now_ms))


def ccxt_sign(ccxt_path: str, params: dict, client_secret: str, now_ms: int = NOW_MS):
    ex = ccxt.deribit({"apiKey": CLIENT_ID, "secret": client_secret})
    ex.milliseconds = lambda: now_ms
    return ex.sign(ccxt_path, ["private"], "GET", dict(params))


def test_matches_deribits_description():
    """StringToSign = Timestamp\\nNonce\\nMETHOD\\nURI\\nBody\\n (exchange-signing.md 2.9), typed independently."""
    client_secret = secret()
    signed = sign(UnsignedRequest("GET", "/api/v2/private/get_account_summary", query=(("currency", "BTC"),)),
                  client_secret)
    text = f"{NOW_MS}\n{NOW_MS}\nGET\n/api/v2/private/get_account_summary?currency=BTC\n\n"
    sig = hmac.new(client_secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert signed.headers_dict() == {
        "Authorization": f"deri-hmac-sha256 id={CLIENT_ID},ts={NOW_MS},sig={sig},nonce={NOW_MS}"}


def test_post_with_a_json_rpc_body_signs_the_body():
    client_secret = secret()
    body = '{"jsonrpc":"2.0","id":1,"method":"private/get_position","params":{"instrument_name":"BTC-PERPETUAL"}}'
    signed = sign(UnsignedRequest("POST", "/api/v2/private/get_position", body=RawBody(body)), client_secret)
    text = f"{NOW_MS}\n{NOW_MS}\nPOST\n/api/v2/private/get_position\n{body}\n"
    sig = hmac.new(client_secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert f"sig={sig}," in signed.headers_dict()["Authorization"]
    assert signed.body == body and signed.headers_dict()["Content-Type"] == "application/json"


def test_nonce_never_repeats_within_a_millisecond():
    client_secret = secret()
    key = hmac_credential("deribit", CLIENT_ID, client_secret)
    request = UnsignedRequest("GET", "/api/v2/private/get_subaccounts")
    headers = [sign(request, client_secret, key=key).headers_dict()["Authorization"] for _ in range(3)]
    nonces = [h.rpartition("nonce=")[2] for h in headers]
    assert nonces == [str(NOW_MS), str(NOW_MS + 1), str(NOW_MS + 2)]
    assert all(f"ts={NOW_MS}," in h for h in headers)


def test_only_hmac_keys():
    # Asymmetric Deribit keys authenticate only through public/auth (a bearer token): out of scope.
    assert exchange_for("deribit").key_types == ("hmac",) and exchange_for("deribit").generated == ()


# -- arbitrary parameters --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(names, values, max_size=8), now_ms=st.integers(min_value=1, max_value=2**45))
def test_any_parameters_equal_ccxt(params, now_ms):
    client_secret = "S" * 32
    expected = ccxt_sign("get_account_summary", params, client_secret, now_ms)
    signed = sign(UnsignedRequest("GET", "/api/v2/private/get_account_summary", query=tuple(params.items())),
                  client_secret, now_ms)
    assert BASE + signed.path == expected["url"]
    assert dict(signed.headers) == expected["headers"]


# -- the ccxt bridge, without an agent ----------------------------------------------------------
