"""Bitget, beyond its vectors (tests/vectors/bitget.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Bitget scheme against ccxt 4.5's own bitget.sign() with the same secret, passphrase and
instant, and the ccxt bridge module for bitget. Reference: exchange-signing.md 2.14 (no
published doc vector).

RSA keys: ccxt signs HMAC only, so an RSA signature is verified with the public key
(RSASSA-PKCS1-v1_5, SHA-256: the padding is unverified against Bitget) over the text the
doc describes, and everything else is compared with ccxt's HMAC request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import ccxt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, asymmetric_credential, fixed_environment, hmac_credential
from support.strategies import PRINTABLE_NAMES as names, TEXT as values

SCHEME = scheme_for("bitget")
NOW_MS = 1_700_000_000_123
API_KEY = "bg_0123456789abcdef0123456789abcdef"  # Bitget API keys: 'bg_' + 32 hex characters
PASSPHRASE = "BitgetPass2024"
BASE = "https://api.bitget.com"
HEX = "0123456789abcdef"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = register_secret(RSA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


def bitget_secret() -> str:
    """Bitget secrets: 64 lower-case hex characters."""
    return new_secret(64, HEX)


def decorative(headers: dict) -> dict:
    """ccxt's X-CHANNEL-API-CODE (its broker id) is covered by no signature: decorative
    (exchange-signing.md 0.7), so left out of the comparison."""
    return {k: v for k, v in headers.items() if k != "X-CHANNEL-API-CODE"}


def ccxt_sign(market: str, ccxt_path: str, method: str, params: dict, secret: str, now_ms: int):
    ex = ccxt.bitget({"apiKey": API_KEY, "secret": secret, "password": PASSPHRASE})
    ex.nonce = lambda: now_ms
    return ex.sign(ccxt_path, ["private", market], method, dict(params))


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS):
    return SCHEME.sign(request, hmac_credential("bitget", API_KEY, secret, PASSPHRASE), fixed_environment(now_ms))


def unsigned_like_ccxt(method: str, path: str, params: dict) -> UnsignedRequest:
    pairs = tuple(params.items())
    return UnsignedRequest(method, path, body=pairs) if method == "POST" else UnsignedRequest(method, path, query=pairs)


def assert_equal(signed, expected) -> None:
    assert BASE + signed.path == expected["url"]
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == decorative(expected["headers"])


# -- ccxt's own sign() ------------------------------------------------------------------

SPOT_ORDER = {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "price": "50000",
              "size": "0.001", "clientOid": "bot-42"}


def test_raw_json_body_equals_ccxt():
    secret = bitget_secret()
    expected = ccxt_sign("spot", "v2/spot/trade/place-order", "POST", dict(SPOT_ORDER, size=0.5), secret, NOW_MS)
    signed = sign(UnsignedRequest("POST", "/api/v2/spot/trade/place-order", body=RawBody(expected["body"])), secret)
    assert_equal(signed, expected)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names, values, max_size=8),
    method=st.sampled_from(["GET", "POST"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, now_ms):
    secret = register_secret("f" * 32 + "0123456789abcdef" * 2)
    expected = ccxt_sign("spot", "v2/spot/trade/orderInfo", method, params, secret, now_ms)
    request = unsigned_like_ccxt(method, "/api/v2/spot/trade/orderInfo", params)
    if request.query and (any(c in "&=%+#;{[" or not c.isprintable() for n, v in request.query for c in n + v)
                          or "&".join(f"{n}={v}" for n, v in sorted(request.query)).endswith(" ")):
        # Bitget verifies the un-encoded query, joined to the body: a separator would sign as other parameters.
        with pytest.raises(RequestInvalid, match="signs the query un-encoded|query ends with a space"):
            sign(request, secret, now_ms)
        return
    assert_equal(sign(request, secret, now_ms), expected)


# -- the signed text, independently of ccxt -------------------------------------------------


def test_prehash_is_timestamp_method_path_sorted_raw_query_body():
    secret = bitget_secret()
    signed = sign(UnsignedRequest("GET", "/api/v2/x", query=(("b", "é 1"), ("a", "$2"))), secret)
    prehash = f"{NOW_MS}GET/api/v2/x?a=$2&b=é 1"
    expected = base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()
    headers = signed.headers_dict()
    assert headers["ACCESS-SIGN"] == expected
    assert headers["ACCESS-PASSPHRASE"] == PASSPHRASE  # in clear
    assert signed.path == "/api/v2/x?a=$2&b=%C3%A9%201"


# -- RSA keys (ccxt has none: verified with the public key) ----------------------------------

RSA_CASES = [
    ("GET", "/api/v2/spot/account/assets", {"coin": "USDT", "assetType": "hold_only"}),
    ("POST", "/api/v2/spot/trade/place-order", SPOT_ORDER),
]


@pytest.mark.parametrize("method,path,params", RSA_CASES)
def test_rsa_key_signs_the_documented_text(method, path, params):
    key = asymmetric_credential(API_KEY, RSA_PEM, PASSPHRASE)
    assert key.key_type == "rsa"
    exchange_for("bitget").check_key_type("rsa", generated=True)
    signed = SCHEME.sign(unsigned_like_ccxt(method, path, params), key, fixed_environment(NOW_MS))

    # The documented text: timestamp + METHOD + requestPath + ("?" + sorted raw query) + body.
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items())) if method == "GET" else ""
    body = signed.body
    text = f"{NOW_MS}{method}{path}{'?' + query if query else ''}{body}"
    signature = base64.b64decode(signed.headers_dict()["ACCESS-SIGN"], validate=True)
    RSA_KEY.public_key().verify(signature, text.encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
    assert len(signature) == 256

    # All but the signature as ccxt sends with an HMAC key.
    expected = ccxt_sign("spot", path.removeprefix("/api/"), method, params, bitget_secret(), NOW_MS)
    assert BASE + signed.path == expected["url"]
    assert body == (expected["body"] or "")
    mine, theirs = signed.headers_dict(), decorative(expected["headers"])
    mine.pop("ACCESS-SIGN"), theirs.pop("ACCESS-SIGN")
    assert mine == theirs


# -- refusals -----------------------------------------------------------------------------


def test_key_without_passphrase_is_refused():
    key = SoftwareCredential(api_key=API_KEY, secret=b"s" * 64)
    with pytest.raises(UnsupportedKey, match="this bitget key has no passphrase; import it again with its passphrase"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v2/x"), key, fixed_environment(NOW_MS))


def test_other_key_types_are_refused():
    with pytest.raises(UnsupportedKey):
        exchange_for("bitget").check_key_type("ed25519")
    key = SoftwareCredential(api_key=API_KEY, key_type="ed25519", passphrase=PASSPHRASE)
    with pytest.raises(UnsupportedKey, match="HMAC or RSA"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v2/x"), key, fixed_environment(NOW_MS))


# -- the ccxt bridge module -----------------------------------------------------------------
