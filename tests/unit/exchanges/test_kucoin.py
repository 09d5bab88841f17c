"""KuCoin, beyond its vectors (tests/vectors/kucoin.json, kucoinfutures.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The KuCoin scheme against ccxt 4.5's own kucoin.sign() (kucoinfutures inherits it) with the
same secret, passphrase and instant, and the ccxt bridge modules for kucoin and kucoinfutures.
Reference: exchange-signing.md 2.3 (no published doc vector).

ccxt always sends KC-API-KEY-VERSION '2' (and the v2 passphrase HMAC). Version 3 keys are
checked as: header '3', all else equal to ccxt; version 1 keys: header '1', passphrase in clear,
signature equal to ccxt's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.exchanges import exchange_for, scheme_for
from signing_agent_client.ccxt_bridge import kucoin as bridge
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest, UnsupportedKey
from support.leaks import register_secret
from support.reference import SoftwareCredential, fixed_environment, hmac_credential

NOW_MS = 1_700_000_000_123
API_KEY = "65a1b2c3d4e5f60718293a4b"  # KuCoin API keys: 24 hex characters
PASSPHRASE = "my-Kucoin-pass9"
CCXT_CLASSES = {"kucoin": ccxt.kucoin, "kucoinfutures": ccxt.kucoinfutures}
BASES = {"private": "https://api.kucoin.com", "futuresPrivate": "https://api-futures.kucoin.com"}


def kucoin_secret() -> str:
    """KuCoin secrets are UUIDs (36 characters)."""
    return register_secret(str(uuid.uuid4()))


def ccxt_sign(exchange: str, api: str, ccxt_path: str, method: str, params: dict, secret: str, now_ms: int,
              partner: bool = False):
    ex = CCXT_CLASSES[exchange]({"apiKey": API_KEY, "secret": secret, "password": PASSPHRASE})
    if not partner:
        ex.options["partner"] = {}
    ex.nonce = lambda: now_ms
    return ex.sign(ccxt_path, [api], method, dict(params))


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, exchange: str = "kucoin", **options: str):
    key = hmac_credential(exchange, API_KEY, secret, PASSPHRASE, **options)
    return scheme_for(exchange).sign(request, key, fixed_environment(now_ms))


def unsigned_like_ccxt(method: str, path: str, params: dict, body_on_delete: bool = False) -> UnsignedRequest:
    pairs = tuple(params.items())
    if method == "GET" or (method == "DELETE" and not body_on_delete):
        return UnsignedRequest(method, path, query=pairs)
    return UnsignedRequest(method, path, body=pairs)


def assert_equal(signed, expected, base: str) -> None:
    assert base + signed.path == expected["url"]
    assert signed.method == expected["method"]
    assert signed.body == (expected["body"] or "")
    assert signed.headers_dict() == expected["headers"]


# -- ccxt's own sign() ------------------------------------------------------------------

ORDER = {"clientOid": "5c52e11203aa677f33e493fb", "side": "buy", "symbol": "BTC-USDT", "type": "limit",
         "price": "50000", "size": "0.001"}


def test_delete_with_json_body_equals_ccxt_multi_cancel():
    """futures DELETE orders/multi-cancel: ccxt sends the parameters as a JSON body."""
    secret = kucoin_secret()
    params = {"symbol": "XBTUSDTM", "orderIdsList": "1,2"}
    expected = ccxt_sign("kucoinfutures", "futuresPrivate", "orders/multi-cancel", "DELETE", params, secret, NOW_MS)
    assert expected["body"]
    signed = sign(UnsignedRequest("DELETE", "/api/v1/orders/multi-cancel", body=RawBody(expected["body"])), secret,
                  exchange="kucoinfutures")
    assert_equal(signed, expected, BASES["futuresPrivate"])


def test_version_3_key_differs_from_ccxt_only_in_the_version_header():
    secret = kucoin_secret()
    expected = ccxt_sign("kucoin", "private", "orders", "POST", ORDER, secret, NOW_MS)
    signed = sign(UnsignedRequest("POST", "/api/v1/orders", body=tuple(ORDER.items())), secret, key_version="3")
    headers = signed.headers_dict()
    assert headers.pop("KC-API-KEY-VERSION") == "3"
    assert expected["headers"].pop("KC-API-KEY-VERSION") == "2"
    assert headers == expected["headers"]
    assert signed.body == expected["body"]


def test_version_1_key_sends_the_passphrase_in_clear():
    secret = kucoin_secret()
    expected = ccxt_sign("kucoin", "private", "accounts", "GET", {"currency": "BTC"}, secret, NOW_MS)
    signed = sign(UnsignedRequest("GET", "/api/v1/accounts", query=(("currency", "BTC"),)), secret, key_version="1")
    headers = signed.headers_dict()
    assert headers["KC-API-KEY-VERSION"] == "1"
    assert headers["KC-API-PASSPHRASE"] == PASSPHRASE
    assert headers["KC-API-SIGN"] == expected["headers"]["KC-API-SIGN"]


def test_default_key_version_is_2_and_its_passphrase_is_the_hmac():
    assert exchange_for("kucoin").resolve_options({}) == {"key_version": "2"}
    secret = kucoin_secret()
    signed = sign(UnsignedRequest("GET", "/api/v1/accounts"), secret)
    expected_passphrase = base64.b64encode(hmac.new(secret.encode(), PASSPHRASE.encode(), hashlib.sha256).digest())
    assert signed.headers_dict()["KC-API-PASSPHRASE"] == expected_passphrase.decode()
    assert signed.headers_dict()["KC-API-KEY-VERSION"] == "2"


def test_post_without_parameters_equals_ccxt():
    secret = kucoin_secret()
    expected = ccxt_sign("kucoin", "private", "bullet-private", "POST", {}, secret, NOW_MS)
    assert expected["body"] is None
    for body in (None, (), RawBody("")):
        assert_equal(sign(UnsignedRequest("POST", "/api/v1/bullet-private", body=body), secret), expected,
                     BASES["private"])


# Names and values KuCoin's raw query can carry (see the refusals below).
RAW_UNSAFE = set("&#%+=")
names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda n: n.isprintable() and not RAW_UNSAFE & set(n) and n != "version")
values = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=24).filter(
    lambda v: v.isprintable() and not set("&#%+") & set(v))


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names, values, max_size=8),
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    now_ms=st.integers(min_value=0, max_value=2**45),
)
def test_any_parameters_equal_ccxt(params, method, now_ms):
    secret = register_secret("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    expected = ccxt_sign("kucoin", "private", "orders", method, params, secret, now_ms)
    request = unsigned_like_ccxt(method, "/api/v1/orders", params)
    if request.query and (any(c in "&=%+#;{[" or not c.isprintable() for n, v in request.query for c in n + v)
                          or "&".join(f"{n}={v}" for n, v in request.query).endswith(" ")):
        # KuCoin verifies the un-encoded query, joined to the body: a separator would sign as other parameters.
        with pytest.raises(RequestInvalid, match="signs the query un-encoded|query ends with a space"):
            sign(request, secret, now_ms)
        return
    signed = sign(request, secret, now_ms)
    assert_equal(signed, expected, BASES["private"])


# -- the signed text, independently of ccxt -------------------------------------------------


def test_prehash_is_timestamp_method_raw_endpoint_body():
    secret = kucoin_secret()
    body = '{"symbol":"BTC-USDT"}'
    signed = sign(UnsignedRequest("POST", "/api/ua/v1/classic/order/place", body=RawBody(body)), secret)
    prehash = f"{NOW_MS}POST/api/ua/v1/classic/order/place{body}"
    expected = base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()
    assert signed.headers_dict()["KC-API-SIGN"] == expected
    assert signed.path == "/api/ua/v1/classic/order/place"
    query = sign(UnsignedRequest("GET", "/api/v1/orders", query=(("symbol", "BTC-USDT"),)), secret)
    prehash = f"{NOW_MS}GET/api/v1/orders?symbol=BTC-USDT"
    expected = base64.b64encode(hmac.new(secret.encode(), prehash.encode(), hashlib.sha256).digest()).decode()
    assert query.headers_dict()["KC-API-SIGN"] == expected


def test_query_beside_a_body_is_refused():
    # ccxt's unified-account classic orders send `?tradeType=` beside the JSON body, joined in the
    # prehash: a bot could move the body's head into the query, leaving a nested object that a lenient
    # JSON reader takes for the body. Refused in sign mode.
    body = '{"symbol":"BTC-USDT","size":"0.001","x":{"symbol":"BTC-USDT","size":"50"}}'
    with pytest.raises(RequestInvalid, match="one or the other"):
        sign(UnsignedRequest("POST", "/api/ua/v1/classic/order/place", query=(("tradeType", "SPOT"),),
                             body=RawBody(body)), kucoin_secret())


# -- refusals -----------------------------------------------------------------------------


def test_key_without_passphrase_is_refused():
    key = SoftwareCredential(api_key=API_KEY, secret=b"s" * 36, options={"key_version": "2"})
    with pytest.raises(UnsupportedKey, match="this kucoin key has no passphrase; import it again with its passphrase"):
        scheme_for("kucoin").sign(UnsignedRequest("GET", "/api/v1/accounts"), key, fixed_environment(NOW_MS))


def test_unknown_key_version_is_refused():
    with pytest.raises(UnsupportedKey, match="key_version must be one of 2, 1, 3"):
        exchange_for("kucoin").resolve_options({"key_version": "4"})
    key = SoftwareCredential(api_key=API_KEY, secret=b"s" * 36, passphrase="p", options={"key_version": "4"})
    with pytest.raises(UnsupportedKey, match="key_version"):
        scheme_for("kucoin").sign(UnsignedRequest("GET", "/api/v1/accounts"), key, fixed_environment(NOW_MS))


# -- the ccxt bridge modules ------------------------------------------------------------------


def test_bridge_passes_unsafe_raw_query_to_the_agent_which_refuses_it():
    """ccxt would put 'a&b' raw into its URL; the bridge does not decode or re-split it silently."""
    placeholder = ccxt.kucoin(dict(bridge.PLACEHOLDER))
    built = placeholder.sign("orders", ["private"], "GET", {"tag": "50%25#x"})
    unsigned = bridge.unsign(placeholder, built, ["private"])
    assert unsigned.request.query == (("tag", "50%25#x"),)
    with pytest.raises(RequestInvalid, match="un-encoded"):
        sign(unsigned.request, kucoin_secret())
