"""MEXC, beyond its vectors (tests/vectors/mexc.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The MEXC scheme (spot v3 and futures, chosen by path prefix) against references not
written by us: MEXC's published spot examples and ccxt 4.5's own mexc.sign() with the
same secret and timestamp.

Excluded from header comparisons, explicitly: ccxt's `source: CCXT` (its broker id, no
part of any signature, exchange-signing.md 0.7).
"""

from __future__ import annotations


import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import mexc as bridge
from agent.exchanges import exchange_for, scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support.leaks import new_secret
from support.reference import SoftwareCredential, asymmetric_credential, fixed_environment, hmac_credential, recording
from support.strategies import IDENTIFIERS as names, TEXT as values, VISIBLE_NAMES as printable_names

SCHEME = scheme_for("mexc")
BASE = "https://api.mexc.com"
NOW_MS = 1_700_000_000_123
API_KEY = "mx0vglAKIDtest0001"
HEX = "0123456789abcdef"
DECORATIVE = {"source"}  # ccxt's broker id (exchange-signing.md 0.7)


def sign(request: UnsignedRequest, secret: str, api_key: str = API_KEY, now_ms: int = NOW_MS):
    return SCHEME.sign(request, hmac_credential("mexc", api_key, secret), fixed_environment(now_ms))


def ccxt_exchange(secret: str, now_ms: int, api_key: str = API_KEY) -> ccxt.mexc:
    ex = ccxt.mexc({"apiKey": api_key, "secret": secret})
    ex.nonce = lambda: now_ms
    ex.milliseconds = lambda: now_ms
    return ex


def ccxt_sign(section: str, path: str, method: str, params: dict, secret: str, now_ms: int = NOW_MS) -> dict:
    return ccxt_exchange(secret, now_ms).sign(path, [section, "private"], method, dict(params))


def ccxt_headers(expected: dict) -> dict:
    return {k: v for k, v in expected["headers"].items() if k not in DECORATIVE}


# -- the exchange record -----------------------------------------------------------------------


def test_exchange_record():
    exchange = exchange_for("mexc")
    assert exchange.key_types == ("hmac",) and exchange.generated == () and not exchange.passphrase
    assert exchange.ccxt_id == "mexc"
    # ccxt's URLs, which the path-prefix dispatch relies on.
    urls = ccxt.mexc().urls["api"]
    assert urls["spot"]["private"] == BASE  # + /api/v3/<path>
    assert urls["broker"]["private"] == BASE + "/api/v3/broker"
    assert urls["contract"]["private"] == BASE + "/api/v1/private"
    assert urls["contract"]["public"] == BASE + "/api/v1/contract"


# -- the futures doc's description (integration guide: no vector with a secret is published) -------


def test_contract_signed_text_is_access_key_time_and_sorted_params():
    key, messages = recording(SoftwareCredential(api_key=API_KEY, secret=new_secret(32, HEX).encode()))
    signed = SCHEME.sign(
        UnsignedRequest("GET", "/api/v1/private/order/list/history_orders",
                        query=(("symbol", "BTC_USDT"), ("page_size", "100"), ("page_num", "1"))),
        key, fixed_environment(NOW_MS),
    )
    assert messages == [f"{API_KEY}{NOW_MS}page_num=1&page_size=100&symbol=BTC_USDT".encode()]
    assert signed.path == "/api/v1/private/order/list/history_orders?page_num=1&page_size=100&symbol=BTC_USDT"
    headers = dict(signed.headers)
    assert headers["ApiKey"] == API_KEY and headers["Request-Time"] == str(NOW_MS)
    assert headers["Signature"] == key.mac(messages[0], "sha256").hex()


def test_contract_post_signs_the_json_body_unsorted():
    key, messages = recording(SoftwareCredential(api_key=API_KEY, secret=new_secret(32, HEX).encode()))
    raw = '{"symbol":"BTC_USDT","price":8800,"vol":100,"side":1,"type":1,"openType":1}'
    signed = SCHEME.sign(UnsignedRequest("POST", "/api/v1/private/order/submit", body=RawBody(raw)), key, fixed_environment(NOW_MS))
    assert messages == [f"{API_KEY}{NOW_MS}{raw}".encode()]
    assert signed.body == raw and signed.path == "/api/v1/private/order/submit"


# -- ccxt's own sign() ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n not in ("timestamp", "recvWindow", "signature")), values, max_size=8),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_spot_parameters_equal_ccxt(params, method, now_ms):
    secret = "s" * 32
    expected = ccxt_sign("spot", "openOrders", method, params, secret, now_ms)
    signed = sign(UnsignedRequest(method, "/api/v3/openOrders", query=tuple(params.items())), secret, now_ms=now_ms)
    assert BASE + signed.path == expected["url"]
    assert signed.body == ""
    assert dict(signed.headers) == ccxt_headers(expected)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(printable_names, values, max_size=8),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_contract_parameters_equal_ccxt(params, method, now_ms):
    # GET/DELETE: sorted and percent-encoded; POST: ccxt's json() (orjson), non-ASCII and all.
    secret = "s" * 32
    expected = ccxt_sign("contract", "order/list/open_orders", method, params, secret, now_ms)
    pairs = tuple(params.items())
    path = "/api/v1/private/order/list/open_orders"
    request = UnsignedRequest(method, path, body=pairs) if method == "POST" else UnsignedRequest(method, path, query=pairs)
    if method == "POST" and any(c in "&=" for c in expected["body"] or ""):
        # The contract scheme signs neither method nor path: such JSON could be read as a GET query.
        with pytest.raises(RequestInvalid, match="could also be read as form parameters"):
            sign(request, secret, now_ms=now_ms)
        return
    signed = sign(request, secret, now_ms=now_ms)
    assert BASE + signed.path == expected["url"]
    assert signed.body == (expected["body"] or "")
    assert dict(signed.headers) == ccxt_headers(expected)


# -- the agent's own rules -------------------------------------------------------------------------------


def test_timestamp_and_recv_window_are_appended_last_when_absent():
    signed = sign(UnsignedRequest("GET", "/api/v3/openOrders", query=(("symbol", "BTCUSDT"),)), "s" * 32)
    assert signed.path.startswith(f"/api/v3/openOrders?symbol=BTCUSDT&timestamp={NOW_MS}&recvWindow=5000&signature=")


def test_caller_timestamp_and_recv_window_are_kept():
    query = (("recvWindow", "2000"), ("symbol", "BTCUSDT"), ("timestamp", "1644489390087"))
    signed = sign(UnsignedRequest("GET", "/api/v3/openOrders", query=query), "s" * 32)
    assert signed.path.startswith("/api/v3/openOrders?recvWindow=2000&symbol=BTCUSDT&timestamp=1644489390087&signature=")
    assert str(NOW_MS) not in signed.path


def test_asymmetric_key_is_refused():
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsupportedKey, match="HMAC keys only"):
        SCHEME.sign(UnsignedRequest("GET", "/api/v3/account"), asymmetric_credential(API_KEY, pem), fixed_environment(NOW_MS))


# -- the ccxt bridge, without an agent ------------------------------------------------------------------------


def placeholder_exchange(now_ms: int = NOW_MS) -> ccxt.mexc:
    return ccxt_exchange(bridge.PLACEHOLDER["secret"], now_ms, api_key=bridge.PLACEHOLDER["apiKey"])


def test_bridge_broker_body_is_refused_by_the_scheme():
    # ccxt sends broker POST parameters as a JSON body that its signature does not cover.
    ex = placeholder_exchange()
    built = ex.sign("sub-account/virtualSubAccount", ["broker", "private"], "POST", {"subAccount": "bot1", "note": "x"})
    unsigned = bridge.unsign(ex, built, ["broker", "private"])
    with pytest.raises(RequestInvalid, match="broker"):
        SCHEME.sign(unsigned.request, hmac_credential("mexc", API_KEY, "s" * 32), fixed_environment(NOW_MS))


def test_bridge_retired_spot2_is_refused_by_the_scheme():
    ex = placeholder_exchange()
    built = ex.sign("account/info", ["spot2", "private"], "GET", {})
    unsigned = bridge.unsign(ex, built, ["spot2", "private"])
    with pytest.raises(RequestInvalid, match="retired"):
        SCHEME.sign(unsigned.request, hmac_credential("mexc", API_KEY, "s" * 32), fixed_environment(NOW_MS))
