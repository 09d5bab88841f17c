"""OKX, beyond its vectors (tests/vectors/okx.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The OKX scheme against ccxt 4.5's own okx.sign() with the same secret, passphrase and instant,
and the ccxt bridge module for okx. Reference: exchange-signing.md 2.2 (no published doc vector).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import okx as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey, b64
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, fixed_environment, hmac_credential
from support.strategies import PRINTABLE_NAMES as names, TEXT as values

SCHEME = scheme_for("okx")
NOW_MS = 1_700_000_000_123
API_KEY = "a8d7c1f2-3b4e-4c5d-9e6f-7a8b9c0d1e2f"  # OKX API keys are UUIDs
PASSPHRASE = "Trading-Pass_1!"
HEX_UPPER = "0123456789ABCDEF"
BASE = "https://www.okx.com"


def okx_secret() -> str:
    """OKX secrets: 32 upper-case hex characters."""
    return new_secret(32, HEX_UPPER)


def ccxt_sign(ccxt_path: str, method: str, params, secret: str, now_ms: int, passphrase: str = PASSPHRASE):
    ex = ccxt.okx({"apiKey": API_KEY, "secret": secret, "password": passphrase})
    ex.nonce = lambda: now_ms
    ex.uuid16 = lambda length=16: "0" * length  # the broker clOrdId ccxt invents for trade/order
    return ex.sign(ccxt_path, ["private"], method, params)


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, passphrase: str | None = PASSPHRASE):
    return SCHEME.sign(request, hmac_credential("okx", API_KEY, secret, passphrase), fixed_environment(now_ms))


def like_ccxt(method: str, path: str, pairs) -> UnsignedRequest:
    """ccxt sends okx parameters as the query on GET, as a JSON body otherwise."""
    return UnsignedRequest(method, path, query=pairs) if method == "GET" else UnsignedRequest(method, path, body=pairs)


def assert_equal(signed, expected) -> None:
    assert BASE + signed.path == expected["url"]
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]  # OKX has no decorative headers


# -- ccxt's own sign() ------------------------------------------------------------------

ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "px": "50000",
         "sz": "0.001", "clOrdId": "bot42"}


def test_raw_json_body_equals_ccxt_batch_orders():
    """A JSON array body (batch orders), as ccxt sends a list of params, byte for byte."""
    secret = okx_secret()
    orders = [dict(ORDER, clOrdId="b1"), dict(ORDER, clOrdId="b2", side="sell", px=51000)]
    expected = ccxt_sign("trade/batch-orders", "POST", [dict(o) for o in orders], secret, NOW_MS)
    signed = sign(UnsignedRequest("POST", "/api/v5/trade/batch-orders", body=RawBody(expected["body"])), secret)
    assert_equal(signed, expected)


def test_post_without_parameters_equals_ccxt():
    secret = okx_secret()
    expected = ccxt_sign("account/set-greeks", "POST", {}, secret, NOW_MS)
    assert expected["body"] is None
    for body in (None, (), RawBody("")):
        assert_equal(sign(UnsignedRequest("POST", "/api/v5/account/set-greeks", body=body), secret), expected)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names, values, max_size=8),
    method=st.sampled_from(["GET", "POST"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, now_ms):
    secret = register_secret("0123456789ABCDEF0123456789ABCDEF")
    expected = ccxt_sign("account/set-leverage", method, dict(params), secret, now_ms)
    pairs = tuple(params.items())
    path = "/api/v5/account/set-leverage"
    request = like_ccxt(method, path, pairs)
    assert_equal(sign(request, secret, now_ms), expected)


# -- the signed text, independently of ccxt -------------------------------------------------


def test_prehash_is_iso_timestamp_method_path_query_body():
    secret = okx_secret()
    body = '{"instId":"BTC-USDT","lever":"5"}'
    signed = sign(UnsignedRequest("POST", "/api/v5/account/set-leverage", body=RawBody(body)),
                  secret, now_ms=1_699_999_999_007)
    headers = signed.headers_dict()
    assert headers["OK-ACCESS-TIMESTAMP"] == "2023-11-14T22:13:19.007Z"
    prehash = "2023-11-14T22:13:19.007ZPOST/api/v5/account/set-leverage" + body
    assert headers["OK-ACCESS-SIGN"] == b64(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest())
    assert headers["OK-ACCESS-PASSPHRASE"] == PASSPHRASE  # in clear
    assert signed.body == body and signed.path == "/api/v5/account/set-leverage"
    query = sign(UnsignedRequest("GET", "/api/v5/trade/orders-pending", query=(("a", "x y"),)), secret,
                 now_ms=1_699_999_999_007)
    prehash = "2023-11-14T22:13:19.007ZGET/api/v5/trade/orders-pending?a=x%20y"
    assert query.headers_dict()["OK-ACCESS-SIGN"] == b64(hmac.new(secret.encode(), prehash.encode(),
                                                                  hashlib.sha256).digest())


def test_query_beside_a_body_is_refused():
    # Joined with nothing between: the body's head, sent raw, could end the query, leaving a nested
    # object that a lenient JSON reader takes for the body.
    request = UnsignedRequest("POST", "/api/v5/trade/order", query=(("a", "1"),), body=RawBody('{"instId":"X"}'))
    with pytest.raises(RequestInvalid, match="one or the other"):
        sign(request, okx_secret())


def test_pairs_body_is_compact_json_with_utf8():
    signed = sign(UnsignedRequest("POST", "/api/v5/x", body=(("a", "é\"\n"), ("b", "1"))), okx_secret())
    assert signed.body == '{"a":"é\\"\\n","b":"1"}'
    assert json.loads(signed.body) == {"a": "é\"\n", "b": "1"}


# -- refusals -----------------------------------------------------------------------------


def test_timestamp_out_of_range_is_refused():
    with pytest.raises(RequestInvalid, match="timestamp"):
        sign(UnsignedRequest("GET", "/api/v5/x"), okx_secret(), now_ms=10**16)


def test_key_without_passphrase_is_refused():
    with pytest.raises(UnsupportedKey, match="no passphrase; import it again with its passphrase"):
        sign(UnsignedRequest("GET", "/api/v5/account/balance"), okx_secret(), passphrase=None)


def test_asymmetric_key_is_refused():
    key = SoftwareCredential(api_key=API_KEY, key_type="ed25519", passphrase=PASSPHRASE)
    with pytest.raises(UnsupportedKey, match="HMAC"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v5/x"), key, fixed_environment(NOW_MS))


# -- the ccxt bridge module -----------------------------------------------------------------


def test_bridge_timestamp_parse():
    assert bridge.timestamp_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert bridge.timestamp_ms("1970-01-01T00:00:00.000Z") == 0
