"""Coinbase, beyond its vectors (tests/vectors/coinbase.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Coinbase scheme against ccxt 4.5's own coinbase.sign(), for the three key types.

Ed25519 (EdDSA JWT) and legacy HMAC are deterministic: compared byte for byte.
ES256 is randomized in the token (ccxt uses RFC 6979, an HSM normally does not):
the JWT header and claims are compared byte for byte with ccxt's, and the
signature is verified with the public key (exchange-signing.md 0.6).
ccxt's clock and JWT nonce are pinned to the agent's (now_ms, env.random_bytes).
"""

from __future__ import annotations

import base64
import json

import ccxt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import coinbase as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, UnsignedRequest, UnsupportedKey
from support.leaks import new_secret, register_secret
from support.reference import SoftwareCredential, fixed_environment, hmac_credential
from support.strategies import IDENTIFIERS as names, TEXT as values

SCHEME = scheme_for("coinbase")
BASE = "https://api.coinbase.com"
NOW_MS = 1_700_000_000_123
CDP_KEY_NAME = "organizations/3b910e93-5c61-4a1b-9d7e-7c3a1f2e8b01/apiKeys/8f2d1c4e-6a7b-4c3d-9e8f-0a1b2c3d4e5f"
ED_KEY_ID = "d2efa49a-369c-43d7-a60e-ae26e28853c2"
LEGACY_API_KEY = "Xq3LmZ8pR2tY7vKw"


def ec_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A CDP ES256 key as Coinbase hands it out: SEC1 PEM ('BEGIN EC PRIVATE KEY')."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return key, register_secret(pem)


def ed_key() -> tuple[ed25519.Ed25519PrivateKey, str]:
    """A CDP Ed25519 key as Coinbase hands it out: base64 of seed||public (88 characters)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    secret = base64.b64encode(seed + public).decode()
    assert len(secret) == 88
    return key, register_secret(secret)


def jwt_nonce(now_ms: int) -> str:
    """The nonce the scheme draws first from fixed_environment(now_ms)."""
    return fixed_environment(now_ms).random_bytes(16).hex()


def ccxt_sign(api_key: str, secret: str, api: list[str], ccxt_path: str, method: str, params: dict,
              now_ms: int = NOW_MS, nonce: str | None = None):
    ex = ccxt.coinbase({"apiKey": api_key, "secret": secret})
    ex.milliseconds = lambda: now_ms
    ex.seconds = lambda: now_ms // 1000
    ex.random_bytes = lambda n: nonce if nonce is not None else jwt_nonce(now_ms)
    return ex.sign(ccxt_path, api, method, dict(params))


def request_for(path: str, method: str, params: dict, raw: bool = False) -> UnsignedRequest:
    pairs = tuple(params.items())
    if method == "GET":
        return UnsignedRequest(method, path, query=pairs)
    if raw:
        return UnsignedRequest(method, path, body=RawBody(json.dumps(params, separators=(",", ":"))) if params else None)
    return UnsignedRequest(method, path, body=pairs)


def jwt_parts(headers: dict) -> tuple[str, str, str]:
    scheme, _, token = headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    header, payload, signature = token.split(".")
    return header, payload, signature


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_es256(public: ec.EllipticCurvePublicKey, token_headers: dict) -> None:
    header, payload, signature = jwt_parts(token_headers)
    raw = b64url_decode(signature)
    assert len(raw) == 64  # raw r||s, not DER
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))


CASES = [
    # ccxt api, ccxt path, our path, method, params
    (["v3", "private"], "brokerage/accounts", "/api/v3/brokerage/accounts", "GET", {"limit": "250"}),
    (["v3", "private"], "brokerage/orders/historical/batch", "/api/v3/brokerage/orders/historical/batch", "GET",
     {"product_id": "BTC-USD", "order_status": "OPEN", "limit": "10"}),
    (["v3", "private"], "brokerage/orders", "/api/v3/brokerage/orders", "POST",
     {"client_order_id": "bot-42", "product_id": "BTC-USD", "side": "BUY"}),
    (["v3", "private"], "brokerage/orders/batch_cancel", "/api/v3/brokerage/orders/batch_cancel", "POST", {}),
    (["v3", "private"], "brokerage/portfolios/{portfolio_uuid}", "/api/v3/brokerage/portfolios/p-1", "PUT",
     {"portfolio_uuid": "p-1", "name": "main"}),
    (["v3", "private"], "brokerage/portfolios/{portfolio_uuid}", "/api/v3/brokerage/portfolios/p-1", "DELETE",
     {"portfolio_uuid": "p-1"}),
    (["v2", "private"], "accounts", "/v2/accounts", "GET", {"limit": "100", "starting_after": "a b/c"}),
    (["v2", "private"], "accounts/{account_id}/transactions", "/v2/accounts/acc-1/transactions", "POST",
     {"account_id": "acc-1", "type": "send", "to": "0xabc", "amount": "0.01", "currency": "ETH"}),
]


def ccxt_query(path_template: str, params: dict) -> dict:
    return {k: v for k, v in params.items() if "{" + k + "}" not in path_template}


# -- legacy HMAC keys: byte for byte -----------------------------------------------------


def test_legacy_v3_get_does_not_sign_the_query_but_v2_does():
    secret = new_secret(32)
    key = hmac_credential("coinbase", LEGACY_API_KEY, secret)
    a = SCHEME.sign(UnsignedRequest("GET", "/api/v3/brokerage/accounts", query=(("limit", "1"),)), key,
                    fixed_environment(NOW_MS))
    b = SCHEME.sign(UnsignedRequest("GET", "/api/v3/brokerage/accounts", query=(("limit", "2"),)), key,
                    fixed_environment(NOW_MS))
    assert a.headers_dict()["CB-ACCESS-SIGN"] == b.headers_dict()["CB-ACCESS-SIGN"]
    c = SCHEME.sign(UnsignedRequest("GET", "/v2/accounts", query=(("limit", "1"),)), key, fixed_environment(NOW_MS))
    d = SCHEME.sign(UnsignedRequest("GET", "/v2/accounts", query=(("limit", "2"),)), key, fixed_environment(NOW_MS))
    assert c.headers_dict()["CB-ACCESS-SIGN"] != d.headers_dict()["CB-ACCESS-SIGN"]
    assert c.headers_dict()["CB-ACCESS-TIMESTAMP"] == str(NOW_MS // 1000)


# -- CDP Ed25519 keys: EdDSA JWT, byte for byte -----------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("api,ccxt_path,path,method,params", CASES)
def test_ed25519_jwt_equals_ccxt(api, ccxt_path, path, method, params, raw):
    private, secret = ed_key()
    expected = ccxt_sign(ED_KEY_ID, secret, api, ccxt_path, method, params)
    key = SoftwareCredential(api_key=ED_KEY_ID, key_type="ed25519", private_key=private)
    signed = SCHEME.sign(request_for(path, method, ccxt_query(ccxt_path, params), raw), key, fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == expected["headers"]
    header, payload, _ = jwt_parts(expected["headers"])
    assert json.loads(b64url_decode(header))["alg"] == "EdDSA"
    claims = json.loads(b64url_decode(payload))
    assert claims["uris"] == [f"{method} api.coinbase.com{path}"] and claims["iss"] == "cdp"


# -- CDP ES256 keys: all but the signature byte for byte; the signature verified ---------------


@pytest.mark.parametrize("api,ccxt_path,path,method,params", CASES)
def test_es256_jwt_matches_ccxt_and_verifies(api, ccxt_path, path, method, params):
    private, secret = ec_key()
    expected = ccxt_sign(CDP_KEY_NAME, secret, api, ccxt_path, method, params)
    key = SoftwareCredential(api_key=CDP_KEY_NAME, key_type="ec-p256", private_key=private)
    signed = SCHEME.sign(request_for(path, method, ccxt_query(ccxt_path, params)), key, fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    ours, theirs = signed.headers_dict(), expected["headers"]
    assert ours.keys() == theirs.keys() and ours["Content-Type"] == theirs["Content-Type"]
    assert jwt_parts(ours)[:2] == jwt_parts(theirs)[:2]
    verify_es256(private.public_key(), ours)
    verify_es256(private.public_key(), theirs)  # the comparison is meaningful: ccxt's verifies the same way
    header, payload, _ = jwt_parts(ours)
    assert json.loads(b64url_decode(header)) == {
        "alg": "ES256", "typ": "JWT", "kid": CDP_KEY_NAME, "nonce": jwt_nonce(NOW_MS)}
    assert json.loads(b64url_decode(payload)) == {
        "aud": ["retail_rest_api_proxy"], "iss": "coinbase-cloud", "nbf": NOW_MS // 1000,
        "exp": NOW_MS // 1000 + 120, "sub": CDP_KEY_NAME, "iat": NOW_MS // 1000,
        "uri": f"{method} api.coinbase.com{path}"}


def test_es256_signature_fails_for_another_key_or_text():
    private, _ = ec_key()
    key = SoftwareCredential(api_key=CDP_KEY_NAME, key_type="ec-p256", private_key=private)
    signed = SCHEME.sign(UnsignedRequest("GET", "/api/v3/brokerage/accounts"), key, fixed_environment(NOW_MS))
    with pytest.raises(InvalidSignature):
        verify_es256(ec.generate_private_key(ec.SECP256R1()).public_key(), signed.headers_dict())
    header, payload, signature = jwt_parts(signed.headers_dict())
    tampered = {"Authorization": f"Bearer {header}.{payload[:-2]}AA.{signature}"}
    with pytest.raises(InvalidSignature):
        verify_es256(private.public_key(), tampered)


def test_jwt_nonce_comes_from_the_environment_and_changes():
    private, _ = ed_key()
    key = SoftwareCredential(api_key=ED_KEY_ID, key_type="ed25519", private_key=private)
    request = UnsignedRequest("GET", "/api/v3/brokerage/accounts")
    one = SCHEME.sign(request, key, fixed_environment(NOW_MS, b"a")).headers_dict()["Authorization"]
    two = SCHEME.sign(request, key, fixed_environment(NOW_MS, b"b")).headers_dict()["Authorization"]
    nonces = [json.loads(b64url_decode(jwt_parts({"Authorization": a})[0]))["nonce"] for a in (one, two)]
    assert nonces[0] != nonces[1] and all(len(n) == 32 for n in nonces)


# -- arbitrary parameters --------------------------------------------------------------------

# Any text for body values (JSON, UTF-8 as ccxt's orjson writes it). In GET values, no '[':
# ccxt's urlencode_with_array_repeat strips '%5B<digits>%5D' from the whole query (a ccxt quirk).


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names, values, max_size=8),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    version=st.sampled_from(["v2", "v3"]),
    now_ms=st.integers(min_value=0, max_value=2**42),
)
def test_any_parameters_equal_ccxt(params, method, version, now_ms):
    if method == "GET":
        params = {k: v for k, v in params.items() if "[" not in v}
    secret = "s" * 32
    path = "/api/v3/brokerage/accounts" if version == "v3" else "/v2/accounts"
    ccxt_path = "brokerage/accounts" if version == "v3" else "accounts"
    expected = ccxt_sign(LEGACY_API_KEY, secret, [version, "private"], ccxt_path, method, params, now_ms)
    signed = SCHEME.sign(request_for(path, method, params), hmac_credential("coinbase", LEGACY_API_KEY, secret),
                         fixed_environment(now_ms))
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == expected["headers"]


# -- refusals ---------------------------------------------------------------------------------


def test_rsa_keys_are_not_taken():
    assert exchange_for("coinbase").key_types == ("ec-p256", "ed25519", "hmac")
    assert exchange_for("coinbase").generated == ()
    with pytest.raises(UnsupportedKey, match="ec-p256, ed25519, hmac"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v3/brokerage/accounts"),
                    SoftwareCredential(api_key="k", key_type="rsa"), fixed_environment(NOW_MS))


# -- the ccxt bridge, without an agent ----------------------------------------------------------


def bridge_then_scheme(api, ccxt_path, method, params, key, now_ms=NOW_MS):
    ex = ccxt.coinbase(dict(bridge.PLACEHOLDER))
    ex.milliseconds = lambda: now_ms
    ex.seconds = lambda: now_ms // 1000
    built = ex.sign(ccxt_path, api, method, dict(params))
    unsigned = bridge.unsign(ex, built, api)
    assert unsigned is not None
    signed = SCHEME.sign(unsigned.request, key, fixed_environment(unsigned.timestamp_ms))
    return unsigned.base_url + signed.path, signed


@pytest.mark.parametrize("key_type", ["hmac", "ed25519", "ec-p256"])
@pytest.mark.parametrize("api,ccxt_path,path,method,params", CASES)
def test_bridge_reproduces_plain_ccxt(api, ccxt_path, path, method, params, key_type):
    if key_type == "hmac":
        api_key, secret = LEGACY_API_KEY, new_secret(32)
        key = hmac_credential("coinbase", api_key, secret)
    elif key_type == "ed25519":
        private, secret = ed_key()
        api_key, key = ED_KEY_ID, SoftwareCredential(api_key=ED_KEY_ID, key_type="ed25519", private_key=private)
    else:
        private, secret = ec_key()
        api_key, key = CDP_KEY_NAME, SoftwareCredential(api_key=CDP_KEY_NAME, key_type="ec-p256", private_key=private)
    # The bridge's timestamp is ccxt's second: plain ccxt runs at the start of that second.
    now_ms = NOW_MS - NOW_MS % 1000
    url, signed = bridge_then_scheme(api, ccxt_path, method, params, key, NOW_MS)
    expected = ccxt_sign(api_key, secret, api, ccxt_path, method, params, now_ms)
    assert url == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert signed.method == expected["method"]
    if key_type == "ec-p256":
        assert jwt_parts(signed.headers_dict())[:2] == jwt_parts(expected["headers"])[:2]
        verify_es256(private.public_key(), signed.headers_dict())
    else:
        assert dict(signed.headers) == expected["headers"]
