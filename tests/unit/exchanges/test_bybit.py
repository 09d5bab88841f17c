"""Bybit, beyond its vectors (tests/vectors/bybit.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Bybit v5 scheme against references not written by us: ccxt 4.5's own bybit.sign()
with the same secret (HMAC) or PEM private key (RSA) and timestamp, Bybit's documented
plain text (guide.mdx has no vector with a published secret, exchange-signing.md 2.7),
and RSA signatures verified with the public key.

Excluded from header comparisons, explicitly: ccxt's `Referer: CCXT` on POST (brokerId, no
part of any signature, exchange-signing.md 0.7), and for RSA keys our `X-BAPI-SIGN-TYPE: 2`,
which Bybit's official RSA sample sends and ccxt does not (see agent/exchanges/bybit/scheme.py).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import bybit as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support.leaks import new_secret
from support.reference import SoftwareCredential, asymmetric_credential, fixed_environment, hmac_credential, recording
from support.strategies import IDENTIFIERS as names, VISIBLE_NAMES as printable_names, TEXT as any_text

SCHEME = scheme_for("bybit")
BASE = "https://api.bybit.com"
NOW_MS = 1_700_000_000_123
API_KEY = "XXXXXXXXXXXXXXXXXX"  # Bybit keys are 18 characters, secrets 36
DECORATIVE = {"Referer"}  # ccxt's brokerId on POST (exchange-signing.md 0.7)


def ccxt_exchange(secret: str, now_ms: int, api_key: str = API_KEY, **config) -> ccxt.bybit:
    ex = ccxt.bybit({"apiKey": api_key, "secret": secret, **config})
    ex.nonce = lambda: now_ms
    ex.milliseconds = lambda: now_ms
    return ex


def ccxt_sign(path: str, method: str, params: dict, secret: str, now_ms: int = NOW_MS, **config) -> dict:
    return ccxt_exchange(secret, now_ms, **config).sign(path, ["private"], method, dict(params))


def ccxt_url(expected: dict) -> str:
    # For a GET without parameters ccxt writes url + '?' + '': the same request as without the '?'.
    url = expected["url"]
    return url[:-1] if url.endswith("?") else url


def ccxt_headers(expected: dict) -> dict:
    return {k: v for k, v in expected["headers"].items() if k not in DECORATIVE}


def request_for(path: str, method: str, params: dict) -> UnsignedRequest:
    pairs = tuple(params.items())
    if method == "GET":
        return UnsignedRequest("GET", "/" + path, query=pairs)
    return UnsignedRequest(method, "/" + path, body=pairs)


def sign(request: UnsignedRequest, key, now_ms: int = NOW_MS):
    return SCHEME.sign(request, key, fixed_environment(now_ms))


# -- the exchange record -----------------------------------------------------------------


def test_exchange_record():
    exchange = exchange_for("bybit")
    assert exchange.key_types == ("hmac", "rsa") and exchange.generated == ("rsa",)
    assert exchange.ccxt_id == "bybit" and not exchange.passphrase
    assert exchange.options["recv_window"][0] == "5000"  # Bybit's documented default, and ccxt's
    assert ccxt.bybit().options["recvWindow"] == 5000
    with pytest.raises(UnsupportedKey, match="recv_window"):
        hmac_credential("bybit", API_KEY, "s" * 36, recv_window="999999")


# -- Bybit's documented plain text (guide.mdx "Create A Request") ------------------------------


def test_doc_get_plain_text():
    secret = new_secret(36)
    key, messages = recording(SoftwareCredential(api_key="XXXXXXXXXX", secret=secret.encode()))
    signed = sign(
        UnsignedRequest("GET", "/v5/order/realtime", query=(("category", "option"), ("symbol", "BTC-29JUL22-25000-C"))),
        key, now_ms=1658384314791,
    )
    assert messages == [b"1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"]
    assert signed.path == "/v5/order/realtime?category=option&symbol=BTC-29JUL22-25000-C"
    assert dict(signed.headers)["X-BAPI-SIGN"] == hmac.new(secret.encode(), messages[0], hashlib.sha256).hexdigest()


def test_doc_post_raw_body_is_signed_and_sent_byte_for_byte():
    key, messages = recording(SoftwareCredential(api_key="XXXXXXXXXX", secret=new_secret(36).encode()))
    raw = '{\n"category": "option"\n}'  # the doc's body, newlines and all
    signed = sign(UnsignedRequest("POST", "/v5/order/create", body=RawBody(raw)), key, now_ms=1658385579423)
    assert messages == [("1658385579423XXXXXXXXXX5000" + raw).encode()]
    assert signed.body == raw and signed.path == "/v5/order/create"
    headers = dict(signed.headers)
    assert headers["X-BAPI-TIMESTAMP"] == "1658385579423" and headers["X-BAPI-RECV-WINDOW"] == "5000"
    assert headers["X-BAPI-API-KEY"] == "XXXXXXXXXX" and headers["Content-Type"] == "application/json"


# -- ccxt's own sign(): HMAC ------------------------------------------------------------------------


def test_recv_window_option_equals_ccxt_option():
    secret = new_secret(36)
    params = {"category": "linear", "symbol": "BTCUSDT"}
    expected = ccxt_sign("v5/position/list", "GET", params, secret, options={"recvWindow": 10000})
    signed = sign(request_for("v5/position/list", "GET", params), hmac_credential("bybit", API_KEY, secret, recv_window="10000"))
    assert dict(signed.headers) == ccxt_headers(expected)
    assert dict(signed.headers)["X-BAPI-RECV-WINDOW"] == "10000"


# -- any parameters ----------------------------------------------------------------------------------

unreserved = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-~"), max_size=24)


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(names, unreserved, max_size=8), now_ms=st.integers(min_value=0, max_value=2**45))
def test_any_get_query_equals_ccxt(params, now_ms):
    # ccxt sends the query unencoded; for these characters that is the encoded text too.
    secret = "s" * 36
    expected = ccxt_sign("v5/order/realtime", "GET", params, secret, now_ms)
    signed = sign(request_for("v5/order/realtime", "GET", params), hmac_credential("bybit", API_KEY, secret), now_ms)
    assert BASE + signed.path == ccxt_url(expected)
    assert dict(signed.headers) == ccxt_headers(expected)


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(printable_names, any_text, max_size=8), now_ms=st.integers(min_value=0, max_value=2**45))
def test_any_post_body_equals_ccxt(params, now_ms):
    # Non-ASCII, quotes, backslashes, control characters: our JSON is ccxt's json() (orjson), byte for byte.
    secret = "s" * 36
    expected = ccxt_sign("v5/order/create", "POST", params, secret, now_ms)
    request = request_for("v5/order/create", "POST", params)
    if any(c in "&=" for c in expected["body"]):
        # Bybit signs neither method nor path: such JSON could be sent as a GET query and read as parameters.
        with pytest.raises(RequestInvalid, match="could also be read as form parameters"):
            sign(request, hmac_credential("bybit", API_KEY, secret), now_ms)
        return
    signed = sign(request, hmac_credential("bybit", API_KEY, secret), now_ms)
    assert signed.body == expected["body"]
    assert dict(signed.headers) == ccxt_headers(expected)


@settings(max_examples=100, deadline=None)
@given(params=st.dictionaries(printable_names, any_text, max_size=8))
def test_any_get_query_is_signed_exactly_as_sent(params):
    # Any value: the query sent decodes back to the parameters, and the signature covers exactly it.
    secret = "s" * 36
    signed = sign(request_for("v5/order/realtime", "GET", params), hmac_credential("bybit", API_KEY, secret))
    query = signed.path.partition("?")[2]
    assert query.isascii() and " " not in query and "#" not in query
    sent = [part.partition("=") for part in query.split("&")] if query else []
    assert [(unquote(n), unquote(v)) for n, _, v in sent] == list(params.items())
    message = f"{NOW_MS}{API_KEY}5000{query}".encode()
    assert dict(signed.headers)["X-BAPI-SIGN"] == hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# -- refusals -------------------------------------------------------------------------------------------


def test_ed25519_key_is_refused():
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsupportedKey, match="hmac or rsa"):
        sign(UnsignedRequest("GET", "/v5/order/realtime"), asymmetric_credential(API_KEY, pem))


# -- the ccxt bridge, without an agent ------------------------------------------------------------------


def test_bridge_refuses_a_retired_private_scheme():
    ex = ccxt_exchange(bridge.PLACEHOLDER["secret"], NOW_MS, api_key=bridge.PLACEHOLDER["apiKey"])
    built = ex.sign("spot/v3/private/order", ["private"], "GET", {"orderId": "1"})
    with pytest.raises(ValueError, match="v5"):
        bridge.unsign(ex, built, ["private"])


def test_bridge_query_keeps_plus_literal():
    assert bridge.query_pairs("a=1+2&b=%2B&c=") == (("a", "1+2"), ("b", "+"), ("c", ""))
