"""HTX, beyond its vectors (tests/vectors/htx.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The HTX Signature V2 scheme against references not written by us: ccxt 4.5's own
htx.sign() (HMAC only) with the same secret and clock, HTX's documented pre-signed
text, and HTX's Python SDK unit-test vector. Ed25519 (which ccxt does not do) is
verified with `cryptography`, and its signed text checked to be the HMAC text
with SignatureMethod=Ed25519, as HTX's docs and SDK describe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, unquote, urlsplit

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import htx as bridge
from agent.exchanges import scheme_for
from agent.schemes import RequestInvalid, UnsignedRequest, UnsupportedKey
from agent.exchanges.htx.scheme import family, host_for, signed_text
from support import vectors
from support.leaks import register_secret
from support.reference import asymmetric_credential, fixed_environment, hmac_credential, recording
from support.strategies import TEXT as values

SCHEME = scheme_for("htx")
NOW_MS = 1_700_000_000_321
API_KEY = "7d393344-1qdmpe4rty-37def1b5-d10e3"  # HTX access key format (not a secret)
UUID = "0c8a1f2e-7b3d-4c5e-9f60-1a2b3c4d5e6f"  # ccxt's client-order-id suffix, pinned


def htx_secret() -> str:
    """HTX secret keys look like 'b0xxxxxx-c6xxxxxx-94xxxxxx-dxxxx': 8-8-8-5 hex characters."""
    parts = [secrets.token_hex(4), secrets.token_hex(4), secrets.token_hex(4), secrets.token_hex(3)[:5]]
    return register_secret("-".join(parts))


def credential(secret: str, api_key: str = API_KEY, **options: str):
    return hmac_credential("htx", api_key, secret, **options)


def ccxt_htx(secret: str, now_ms: int, api_key: str = API_KEY, hostnames: dict | None = None):
    ex = ccxt.htx({"apiKey": api_key, "secret": secret})
    ex.milliseconds = lambda: now_ms
    ex.uuid = lambda: UUID
    if hostnames:
        ex.urls["hostnames"] = dict(hostnames)
        ex.hostname = hostnames["spot"]
    return ex


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, **options: str):
    return SCHEME.sign(request, credential(secret, **options), fixed_environment(now_ms))


def assert_equals_ccxt(signed, expected):
    host = urlsplit(expected["url"]).hostname
    assert f"https://{host}" + signed.path == expected["url"]
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]


def ccxt_signed_text(expected) -> bytes:
    """The text ccxt signed, rebuilt from its URL: METHOD, host, path, query without Signature."""
    url = urlsplit(expected["url"])
    query, _, _ = url.query.rpartition("&Signature=")
    return signed_text(expected["method"], url.hostname, url.path, query)


# -- ccxt's own sign() ---------------------------------------------------------------------------


def test_other_hosts_equal_ccxt_with_the_same_hostnames():
    secret = htx_secret()
    hostnames = {"spot": "api-aws.huobi.pro", "contract": "api.hbdm.com"}
    ex = ccxt_htx(secret, NOW_MS, hostnames=hostnames)
    options = {"spot_host": "api-aws.huobi.pro", "contract_host": "api.hbdm.com"}
    spot = ex.sign("v1/order/openOrders", ["spot", "private"], "GET", {"symbol": "btcusdt"})
    contract = ex.sign("v5/trade/order", ["contract", "private"], "POST", {"contract_code": "BTC-USDT"})
    assert_equals_ccxt(sign(UnsignedRequest("GET", "/v1/order/openOrders", query=(("symbol", "btcusdt"),)),
                            secret, **options), spot)
    assert_equals_ccxt(sign(UnsignedRequest("POST", "/v5/trade/order", body=(("contract_code", "BTC-USDT"),)),
                            secret, **options), contract)
    assert "api-aws.huobi.pro" in spot["url"] and "api.hbdm.com" in contract["url"]


def _ccxt_endpoints():
    api = ccxt.htx().describe()["api"]

    def walk(tree, trail):
        for name, sub in tree.items():
            if name in ("get", "post", "put", "delete"):
                for path in sub:
                    yield trail, name.upper(), path
            elif isinstance(sub, dict):
                yield from walk(sub, trail + [name])

    return list(walk(api, []))


def test_host_family_matches_ccxt_for_every_endpoint():
    """Every endpoint ccxt defines is signed for the host ccxt sends it to (public /market/
    endpoints, on both hosts, excepted: they are refused, and need no signature)."""
    cred = credential(htx_secret())
    hosts = {"spot": "api.huobi.pro", "contract": "api.hbdm.vn", "private": "api.huobi.pro",
             "v2Private": "api.huobi.pro", "public": "api.huobi.pro", "v2Public": "api.huobi.pro"}
    prefixes = {"private": "/v1/", "public": "/v1/", "v2Private": "/v2/", "v2Public": "/v2/"}
    checked = 0
    for trail, _, path in _ccxt_endpoints():
        full = prefixes.get(trail[0], "/") + path
        if full.startswith("/market/"):
            with pytest.raises(RequestInvalid, match="public"):
                family(full)
            continue
        assert host_for(full, cred) == hosts[trail[0]], (trail, path)
        checked += 1
    assert checked > 400


# Names: HTX-style (lower-case first: see test_names_sorting_before_timestamp_differ_from_ccxt).
names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1, max_size=12).filter(
    lambda n: n[0].isalpha())


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names, values, max_size=8),
    method=st.sampled_from(["GET", "POST"]),
    contract=st.booleans(),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, contract, now_ms):
    """Any values, non-ASCII included, at any instant (ccxt rounds to the nearest second)."""
    secret = "b0aa11cc-c6bb22dd-94cc33ee-d4dd4"
    api, ccxt_path, path = (
        (["contract", "private"], "v5/trade/order/opens", "/v5/trade/order/opens") if contract
        else (["spot", "private"], "v1/order/openOrders", "/v1/order/openOrders")
    )
    expected = ccxt_htx(secret, now_ms).sign(ccxt_path, api, method, dict(params))
    pairs = tuple(params.items())
    request = (UnsignedRequest(method, path, query=pairs) if method == "GET"
               else UnsignedRequest(method, path, body=pairs))
    assert_equals_ccxt(sign(request, secret, now_ms), expected)


def test_names_sorting_before_timestamp_differ_from_ccxt():
    """HTX sorts every parameter by ASCII. ccxt's current endpoints put the four authentication
    parameters first and the sorted query after them, so a name sorting before 'Timestamp'
    (upper-case, digit) lands elsewhere; its older endpoint code sorts everything, like HTX and
    the scheme. HTX's own parameter names are lower-case, so ccxt works in practice."""
    secret = htx_secret()
    params = {"Abc": "1", "symbol": "btcusdt"}
    request = UnsignedRequest("GET", "/v1/order/orders", query=tuple(params.items()))
    ours = sign(request, secret)
    assert ours.path.startswith("/v1/order/orders?Abc=1&AccessKeyId=")
    old = ccxt_htx(secret, NOW_MS).sign("order/orders", ["private"], "GET", dict(params))
    new = ccxt_htx(secret, NOW_MS).sign("v1/order/orders", ["spot", "private"], "GET", dict(params))
    assert_equals_ccxt(ours, old)
    assert "https://api.huobi.pro" + ours.path != new["url"]


# -- Ed25519 (ccxt signs HMAC only) ----------------------------------------------------------------


def ed25519_credential(api_key: str = API_KEY):
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    register_secret(pem)
    return asymmetric_credential(api_key, pem)


def verify_ed25519(cred, signed, text: bytes):
    signature = base64.b64decode(unquote(signed.path.rpartition("&Signature=")[2]))
    assert len(signature) == 64
    cred.private_key.public_key().verify(signature, text)  # raises if invalid


@pytest.mark.parametrize("case", vectors.params(
    "ccxt", ["htx"], where=lambda c: c.get("sign", True) and c["ccxt"]["api"] != ["v2Private"])[:8])
def test_ed25519_signs_the_hmac_text_with_its_method(case):
    """ccxt signs HTX with HMAC only: for its first cases (tests/vectors/htx.json), the Ed25519 key
    signs ccxt's HMAC text with SignatureMethod=Ed25519."""
    api, ccxt_path, method, params = (case["ccxt"][k] for k in ("api", "path", "method", "params"))
    request_ = case.request
    secret = htx_secret()
    expected = ccxt_htx(secret, NOW_MS).sign(ccxt_path, api, method, dict(params))
    hmac_text = ccxt_signed_text(expected)
    # The rebuilt text is what ccxt signed: its signature checks out.
    ccxt_sig = dict(parse_qsl(urlsplit(expected["url"]).query))["Signature"]
    assert base64.b64encode(hmac.new(secret.encode(), hmac_text, hashlib.sha256).digest()).decode() == ccxt_sig

    cred, messages = recording(ed25519_credential())
    signed = SCHEME.sign(request_, cred, fixed_environment(NOW_MS))
    assert messages == [hmac_text.replace(b"SignatureMethod=HmacSHA256", b"SignatureMethod=Ed25519")]
    verify_ed25519(cred, signed, messages[0])
    # Sent: the signed canonical query, then the signature; body and headers as for HMAC.
    canonical = messages[0].decode().split("\n")[3]
    assert signed.path.rpartition("&Signature=")[0] == urlsplit(expected["url"]).path + "?" + canonical
    assert signed.body == (expected["body"] or "") and signed.headers_dict() == expected["headers"]


# -- the agent's own rules --------------------------------------------------------------------------


def test_key_types_and_options():
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    register_secret(rsa_pem)
    with pytest.raises(UnsupportedKey, match="hmac, ed25519"):
        SCHEME.sign(UnsignedRequest("GET", "/v1/account/accounts"), asymmetric_credential(API_KEY, rsa_pem),
                    fixed_environment(NOW_MS))
    with pytest.raises(UnsupportedKey, match="spot_host must be one of"):
        credential(htx_secret(), spot_host="evil.example.com")
    with pytest.raises(UnsupportedKey, match="no option"):
        credential(htx_secret(), host="api.huobi.pro")


def test_post_body_is_not_signed():
    """HTX signs no POST body: the same signature goes with any body (policy must read the body)."""
    secret = htx_secret()
    a = sign(UnsignedRequest("POST", "/v1/order/orders/place", body=(("amount", "1"),)), secret)
    b = sign(UnsignedRequest("POST", "/v1/order/orders/place", body=(("amount", "1000"),)), secret)
    assert a.path == b.path and a.body != b.body


# -- the ccxt bridge -------------------------------------------------------------------------------


def test_bridge_refuses_a_host_the_agent_does_not_sign_for():
    placeholder = ccxt.htx(dict(bridge.PLACEHOLDER))
    placeholder.urls["hostnames"] = {"spot": "api.testnet.huobi.pro", "contract": "api.hbdm.vn"}
    built = placeholder.sign("v1/account/accounts", ["spot", "private"], "GET", {})
    with pytest.raises(ValueError, match="api.testnet.huobi.pro"):
        bridge.unsign(placeholder, built, ["spot", "private"])
