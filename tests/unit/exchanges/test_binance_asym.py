"""Binance with Ed25519 and RSA keys, beyond its vectors (tests/vectors/binance.json, binanceusdm.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Binance scheme with Ed25519 and RSA keys (exchange-signing.md 2.1 b, d, h) against
ccxt 4.5's own binance.sign() given the PEM private key as its secret: ccxt switches to
Ed25519 or RSA when the secret contains "PRIVATE KEY" (RSA when it is longer than 120
characters). Ed25519 and RSA-PKCS1v15-SHA256 are deterministic, so the requests are
compared byte for byte; each signature is also verified with the public key.

Binance's own "Ed25519 Keys" REST example is not used: its signature (`HaZnek7K...`)
decodes to 256 bytes, an RSA-2048 signature with broken padding made with
`openssl dgst -sha256 -sign`, not an Ed25519 one (exchange-signing.md 2.1, doc problem 2).
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

import ccxt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support import vectors
from support.leaks import register_secret
from support.reference import asymmetric_credential, fixed_environment
from support.strategies import IDENTIFIERS as names, TEXT as values

NOW_MS = 1_700_000_000_123
API_KEY = "AKID-asym-test"
CCXT_CLASSES = {"binance": ccxt.binance, "binanceusdm": ccxt.binanceusdm}


def _pem(private_key) -> str:
    return register_secret(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


_ED25519 = ed25519.Ed25519PrivateKey.generate()
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEMS = {"ed25519": _pem(_ED25519), "rsa": _pem(_RSA)}
PUBLIC = {"ed25519": _ED25519.public_key(), "rsa": _RSA.public_key()}
SIGNATURE_BYTES = {"ed25519": 64, "rsa": 256}


def verify(key_type: str, signature: bytes, message: bytes) -> None:
    if key_type == "ed25519":
        PUBLIC["ed25519"].verify(signature, message)
    else:
        PUBLIC["rsa"].verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def ccxt_sign(exchange: str, api: str, path: str, method: str, params: dict, secret: str, now_ms: int = NOW_MS):
    ex = CCXT_CLASSES[exchange]({"apiKey": API_KEY, "secret": secret, "options": {"recvWindow": None}})
    ex.nonce = lambda: now_ms
    ex.milliseconds = lambda: now_ms
    return ex.sign(path, [api], method, dict(params))


def sign(exchange: str, request: UnsignedRequest, key_type: str, now_ms: int = NOW_MS):
    return scheme_for(exchange).sign(request, asymmetric_credential(API_KEY, PEMS[key_type]), fixed_environment(now_ms))


def request_for(path: str, method: str, params: dict) -> UnsignedRequest:
    pairs = tuple(params.items())
    if method in ("GET", "DELETE"):
        return UnsignedRequest(method, path, query=pairs)
    return UnsignedRequest(method, path, body=pairs)


def check_signature(key_type: str, signed) -> None:
    """The signature is the last parameter, base64 then percent-encoded, over totalParams as sent."""
    query = signed.path.partition("?")[2]
    carrier = signed.body or query
    unsigned_part, _, encoded = carrier.rpartition("&signature=")
    assert not set(encoded) & set("+/=")  # percent-encoded: no raw '+', '/' or '='
    signature = base64.b64decode(unquote(encoded), validate=True)
    assert len(signature) == SIGNATURE_BYTES[key_type]
    total_params = (query + unsigned_part) if signed.body else unsigned_part
    verify(key_type, signature, total_params.encode("ascii"))


# -- the keys and the exchange records --------------------------------------------------------------


def test_ccxt_picks_the_algorithm_from_the_pem_length():
    assert "PRIVATE KEY" in PEMS["ed25519"] and len(PEMS["ed25519"]) <= 120  # ccxt: eddsa()
    assert "PRIVATE KEY" in PEMS["rsa"] and len(PEMS["rsa"]) > 120  # ccxt: rsa()


def test_key_types_per_exchange_record():
    for exchange in ("binance", "binanceusdm"):
        record = exchange_for(exchange)
        assert {"ed25519", "rsa"} <= set(record.key_types) and {"ed25519", "rsa"} <= set(record.generated)
    with pytest.raises(UnsupportedKey):
        exchange_for("binanceus").check_key_type("ed25519")  # its docs show HMAC only (2.1 h)


# -- ccxt's own sign() with the PEM secret -----------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
@settings(max_examples=100, deadline=None)
@given(
    # apiKey, in any case, is refused (tests/vectors/binance.json): a signed one would also log a WebSocket session in
    params=st.dictionaries(names.filter(lambda n: n not in ("timestamp", "signature", "recvWindow")
                                        and n.casefold() != "apikey"), values, max_size=8),
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt_and_verify(key_type, params, method, now_ms):
    expected = ccxt_sign("binance", "private", "openOrders", method, params, PEMS[key_type], now_ms)
    signed = sign("binance", request_for("/api/v3/openOrders", method, params), key_type, now_ms)
    assert "https://api.binance.com" + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    check_signature(key_type, signed)


def test_raw_body_verifies_and_mixed_query_and_body_is_refused():
    # Binance's totalParams is query + body with no separator: a request carries one or the other.
    body = RawBody("symbol=LTCBTC&side=BUY&type=LIMIT&quantity=1&price=0.1&timestamp=1499827319559")
    for key_type in ("ed25519", "rsa"):
        signed = sign("binance", UnsignedRequest("POST", "/api/v3/order", body=body), key_type)
        assert signed.path == "/api/v3/order"
        check_signature(key_type, signed)
        with pytest.raises(RequestInvalid, match="one or the other"):
            sign("binance", UnsignedRequest("POST", "/api/v3/order", query=(("recvWindow", "5000"),), body=body),
                 key_type)


def test_signed_request_never_carries_the_private_key():
    for key_type in ("ed25519", "rsa"):
        signed = sign("binance", vectors.cases("ccxt", ["binance"])[0].request, key_type)
        assert "PRIVATE KEY" not in repr(signed) and PEMS[key_type] not in repr(signed)


# -- the ccxt bridge with an asymmetric key, without an agent --------------------------------------------
