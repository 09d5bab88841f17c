"""The Kraken scheme against references not written by us: Kraken's published
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
from support.reference import SoftwareCredential, fixed_environment, hmac_credential

# docs.kraken.com/api/docs/guides/spot-rest-auth, "Example".
DOC_SECRET = register_secret(
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
DOC_NONCE = 1616492376594
DOC_PARAMS = (("ordertype", "limit"), ("pair", "XBTUSD"), ("price", "37500"), ("type", "buy"), ("volume", "1.25"))
DOC_POSTDATA = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
DOC_API_SIGN = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="

SCHEME = scheme_for("kraken")
BASE = "https://api.kraken.com"
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


def ccxt_json(value) -> str:
    return ccxt.Exchange.json(value)


# -- published example ----------------------------------------------------------------


def test_doc_example_add_order():
    signed = sign(UnsignedRequest("POST", "/0/private/AddOrder", body=DOC_PARAMS), now_ms=DOC_NONCE)
    assert signed.body == DOC_POSTDATA
    assert signed.headers_dict() == {
        "API-Key": API_KEY, "API-Sign": DOC_API_SIGN, "Content-Type": "application/x-www-form-urlencoded",
    }
    assert signed.path == "/0/private/AddOrder" and signed.method == "POST"


def test_doc_example_as_raw_form_body():
    raw = DOC_POSTDATA.removeprefix(f"nonce={DOC_NONCE}&")
    signed = sign(UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody(raw)), now_ms=DOC_NONCE)
    assert signed.body == DOC_POSTDATA
    assert signed.headers_dict()["API-Sign"] == DOC_API_SIGN


# -- ccxt's own sign() ------------------------------------------------------------------

ORDERS = [
    {"ordertype": "limit", "type": "buy", "volume": "1.25", "price": "27500", "pair": "XBTUSD"},
    {"ordertype": "limit", "type": "sell", "volume": "0.5", "price": "28000", "pair": "XBTUSD", "cl_ord_id": "b-2"},
]
CASES = [
    # ccxt path, params (ccxt's shapes), JSON body?
    ("Balance", {}, False),
    ("AddOrder", {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "price": "37500", "volume": "1.25",
                  "oflags": "post,fciq", "cl_ord_id": "bot-42"}, False),
    # nested parameters: ccxt's urlencode_nested keeps the brackets as they are
    ("AddOrder", {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "price": "37500", "volume": "1",
                  "close": {"ordertype": "stop-loss", "price": "30000"}}, False),
    ("CancelOrder", {"txid": "OQCLML-BW3P3-BUCMWZ"}, False),
    ("QueryOrders", {"txid": "OBCMZD-JIEE7-77TH3F,OMMDB2-FSB6Z-7W3HPO", "trades": "true"}, False),
    ("TradesHistory", {"start": "1700000000", "ofs": "50"}, False),
    ("WithdrawStatus", {"asset": "XBT", "method": "Bitcoin"}, False),
    ("DepositAddresses", {"asset": "XBT", "method": "Bitcoin", "new": "true"}, False),
    # non-ASCII and reserved characters are percent-encoded as UTF-8
    ("AddOrder", {"pair": "XBTUSD", "userref": "12", "cl_ord_id": "é &=+/?%"}, False),
    # percentage price: ccxt sends JSON
    ("AddOrder", {"pair": "XBTUSD", "type": "sell", "ordertype": "trailing-stop", "price": "+5%", "volume": "1"}, True),
    ("AddOrderBatch", {"pair": "XBTUSD", "orders": ORDERS}, True),
    ("CancelOrderBatch", {"orders": ["OQCLML-BW3P3-BUCMWZ", "OMMDB2-FSB6Z-7W3HPO"]}, True),
]


def flat_pairs(params: dict, prefix: str | None = None) -> list[tuple[str, str]]:
    """ccxt's nested params as flat Kraken names: close[ordertype]=..."""
    pairs = []
    for name, value in params.items():
        full = f"{prefix}[{name}]" if prefix else name
        pairs.extend(flat_pairs(value, full) if isinstance(value, dict) else [(full, value)])
    return pairs


def request_for(path: str, params: dict, is_json: bool) -> UnsignedRequest:
    if is_json and any(not isinstance(v, str) for v in params.values()):
        return UnsignedRequest("POST", "/0/private/" + path, body=RawBody(ccxt_json(params)))
    return UnsignedRequest("POST", "/0/private/" + path, body=tuple(flat_pairs(params)))


@pytest.mark.parametrize("path,params,is_json", CASES)
def test_equals_ccxt_sign(path, params, is_json):
    secret = new_kraken_secret()
    expected = ccxt_kraken(secret, NOW_MS).sign(path, ["private"], "POST", dict(params))
    signed = SCHEME.sign(request_for(path, params, is_json), credential(secret), fixed_environment(NOW_MS))
    assert BASE + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]
    assert (signed.headers_dict()["Content-Type"] == "application/json") == is_json


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
values = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)


@settings(max_examples=100, deadline=None)
@given(
    params=st.dictionaries(names.filter(lambda n: n != "nonce"), values, max_size=8),
    nonce=st.integers(min_value=1, max_value=2**53),
)
def test_any_parameters_equal_ccxt(params, nonce):
    secret = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
    expected = ccxt_kraken(secret, nonce).sign("OpenOrders", ["private"], "POST", dict(params))
    signed = sign(UnsignedRequest("POST", "/0/private/OpenOrders", body=tuple(params.items())), secret, nonce)
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]


# -- nonces --------------------------------------------------------------------------------


def test_nonce_comes_from_the_key_with_the_clock_in_ms_as_floor():
    key = SoftwareCredential(api_key=API_KEY, secret=base64.b64decode(DOC_SECRET), last_nonce=NOW_MS + 5)
    request = UnsignedRequest("POST", "/0/private/AddOrder", body=DOC_PARAMS)
    first = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    second = SCHEME.sign(request, key, fixed_environment(NOW_MS))
    assert key.floors == [NOW_MS, NOW_MS]
    assert first.body.startswith(f"nonce={NOW_MS + 6}&") and second.body.startswith(f"nonce={NOW_MS + 7}&")
    # and it is the nonce the signature covers: ccxt with that nonce agrees
    expected = ccxt_kraken(DOC_SECRET, NOW_MS + 7).sign("AddOrder", ["private"], "POST", dict(DOC_PARAMS))
    assert second.headers_dict()["API-Sign"] == expected["headers"]["API-Sign"]


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_,message",
    [
        (UnsignedRequest("GET", "/0/private/Balance"), "POST only"),
        (UnsignedRequest("POST", "/0/public/Ticker"), "must start with /0/private/"),
        (UnsignedRequest("POST", "/0/private/"), "must start with /0/private/"),
        (UnsignedRequest("POST", "/0/private/Balance", query=(("asset", "XBT"),)), "into 'body'"),
        (UnsignedRequest("POST", "/0/private/Balance", body=(("nonce", "1"),)), "remove 'nonce'"),
        (UnsignedRequest("POST", "/0/private/Balance", body=RawBody("asset=XBT&nonce=1")), "remove 'nonce'"),
        (UnsignedRequest("POST", "/0/private/Balance", body=RawBody('{"nonce": "1"}')), "remove 'nonce'"),
        (UnsignedRequest("POST", "/0/private/AddOrderBatch", body=(("orders", "[]"),)), "raw JSON object"),
        (UnsignedRequest("POST", "/0/private/AddOrderBatch", body=RawBody("orders=x")), "JSON body"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody('{"pair": "XBTUSD"')), "one JSON object"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody('{"a": 1, "a": 2}')), "twice"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody('{"a": NaN}')), "NaN"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody("not a form")), "form-encoded"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody("a=\u00e9")), "ASCII"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody("a=1&a=2")), "twice"),
        (UnsignedRequest("POST", "/0/private/AddOrder", body=(("a", "1"), ("a", "2"))), "twice"),
        (UnsignedRequest("POST", "/0/private/AddOrder?x=1"), "path"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(request_, message):
    with pytest.raises(RequestInvalid, match=message):
        sign(request_)


def test_refusal_takes_no_nonce():
    key = credential(DOC_SECRET)
    with pytest.raises(RequestInvalid):
        SCHEME.sign(UnsignedRequest("POST", "/0/private/AddOrder", body=RawBody("{")), key, fixed_environment(NOW_MS))
    assert key.last_nonce == 0


def test_signed_request_never_carries_the_secret():
    secret = new_kraken_secret()
    signed = sign(UnsignedRequest("POST", "/0/private/AddOrder", body=DOC_PARAMS), secret=secret)
    assert secret not in repr(signed) and base64.b64decode(secret).hex() not in repr(signed)


# -- the ccxt bridge module (no agent) -----------------------------------------------------------


@pytest.mark.parametrize("path,params,is_json", CASES)
def test_bridge_unsign_then_scheme_equals_plain_ccxt(path, params, is_json):
    placeholder = ccxt.kraken(dict(bridge.PLACEHOLDER))
    placeholder.nonce = lambda: NOW_MS
    built = placeholder.sign(path, ["private"], "POST", dict(params))
    unsigned = bridge.unsign(placeholder, built, ["private"])
    assert unsigned is not None and unsigned.timestamp_ms == NOW_MS

    secret = new_kraken_secret()
    signed = SCHEME.sign(unsigned.request, credential(secret), fixed_environment(unsigned.timestamp_ms))
    expected = ccxt_kraken(secret, NOW_MS).sign(path, ["private"], "POST", dict(params))
    assert unsigned.base_url + signed.path == expected["url"]
    assert signed.body == expected["body"]
    assert signed.headers_dict() == expected["headers"]
    assert signed.method == expected["method"]


def test_bridge_public_call_is_not_unsigned():
    placeholder = ccxt.kraken(dict(bridge.PLACEHOLDER))
    built = placeholder.sign("Ticker", ["public"], "GET", {"pair": "XBTUSD"})
    assert bridge.unsign(placeholder, built, ["public"]) is None


def test_bridge_placeholder_is_not_a_secret_but_decodes():
    assert base64.b64decode(bridge.PLACEHOLDER["secret"]) == bytes(64)
