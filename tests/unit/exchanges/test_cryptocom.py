"""Crypto.com, beyond its vectors (tests/vectors/cryptocom.json, checked like every exchange's by
tests/unit/test_conformance.py): the checks that are not a table (property tests against ccxt,
the documented signed text, nonces, key types, the bridge's particular cases).

The Crypto.com scheme against ccxt 4.5's own cryptocom.sign() and the documented paramString.

ccxt's clock (its nonce and id) is pinned to the agent's. The scheme signs only params
in the grammar under which paramString reads back one way (agent/exchanges/cryptocom/scheme.py;
the exchange's side is modelled in tests/adversarial/test_cryptocom_paramstring.py).
What ccxt sends by itself is in it: upper-case enumerations and symbols, numbers as text,
integers, exec_inst lists, order_list last on the batch methods, new_quantity on
amend-order. Refused, where ccxt would sign (test_ccxt_calls_*): lower-case values a
caller passes through (a client_oid "bot-42": a lower-case letter starts a name, so names
could be read inside it), null (ccxt renders it "None", the documentation "null":
lower-case either way), and createOrders over several instruments (the orders of a batch
have nothing between them, so a size checked on one instrument could be regrouped with
another). Everything else is compared with ccxt byte for byte.
"""

from __future__ import annotations

import json

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing_agent_client.ccxt_bridge import cryptocom as bridge
from agent.exchanges import scheme_for
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from agent.exchanges.cryptocom.scheme import param_string
from support.leaks import new_secret
from support.reference import fixed_environment, hmac_credential

SCHEME = scheme_for("cryptocom")
NOW_MS = 1_700_000_000_123
# Crypto.com does not document key or secret lengths: 22 alphanumeric characters is an assumption.
API_KEY = "a7Rk2PqX9mZt4WvB8nYc3L"
SECRET_LEN = 22


def ccxt_json(value) -> str:
    return ccxt.Exchange.json(value)


def ccxt_sign(method: str, params: dict, secret: str, now_ms: int = NOW_MS, api=("v1", "private")):
    ex = ccxt.cryptocom({"apiKey": API_KEY, "secret": secret})
    ex.milliseconds = lambda: now_ms
    return ex.sign(method, list(api), "POST", params)


def sign(request: UnsignedRequest, secret: str, now_ms: int = NOW_MS, key=None):
    return SCHEME.sign(request, key or hmac_credential("cryptocom", API_KEY, secret), fixed_environment(now_ms))


def test_other_ccxt_apis_sign_the_same_way():
    secret = new_secret(SECRET_LEN)
    for api, base, prefix in (("v2", "https://api.crypto.com", "/v2"),
                              ("derivatives", "https://deriv-api.crypto.com", "/v1")):
        expected = ccxt_sign("private/get-account-summary", {"currency": "BTC"}, secret, api=(api, "private"))
        signed = sign(UnsignedRequest("POST", f"{prefix}/private/get-account-summary",
                                      body=(("currency", "BTC"),)), secret)
        assert base + signed.path == expected["url"] and signed.body == expected["body"]


def test_null_is_refused_not_signed():
    """The documentation signs null as "null", ccxt as "None" (exchange-signing.md 2.8): lower-case
    letters either way, which read as part of a name ({"a": null, "b": "X"} and {"anullb": "X"} would
    share a signature). The scheme refuses it: leave the parameter out."""
    params = {"instrument_name": "BTC_USD", "client_oid": None}
    assert ccxt.cryptocom().params_to_string(params, 0) == "client_oidNoneinstrument_nameBTC_USD"
    for body in (params, {"order_list": [{"instrument_name": "BTC_USD", "side": None}]}, {"exec_inst": [None]}):
        with pytest.raises(RequestInvalid, match="null"):
            sign(UnsignedRequest("POST", "/exchange/v1/private/create-order-list", body=RawBody(json.dumps(body))),
                 new_secret(SECRET_LEN))


def test_param_string_recursion():
    assert param_string({"b": "2", "a": "1"}) == "a1b2"
    assert param_string({"l": ["x", {"z": "1", "y": ["q", {"k": "v"}]}]}) == "lxy" + "q" + "kv" + "z1"
    assert param_string({"n": 7, "s": "", "e": []}) == "en7s"


def test_nonce_is_the_keys_strictly_increasing_nonce():
    secret = new_secret(SECRET_LEN)
    key = hmac_credential("cryptocom", API_KEY, secret)
    request = UnsignedRequest("POST", "/exchange/v1/private/user-balance")
    nonces = [json.loads(sign(request, secret, key=key).body)["nonce"] for _ in range(3)]
    assert nonces == [str(NOW_MS), str(NOW_MS + 1), str(NOW_MS + 2)]
    second = json.loads(sign(request, secret, key=key).body)
    assert second["id"] == second["nonce"]


# -- arbitrary parameters --------------------------------------------------------------------

names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), min_size=1, max_size=10)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
leaf = st.one_of(text, st.integers(min_value=-(2**53), max_value=2**53))
# ccxt renders list elements that are text or objects (an integer element crashes its params_to_string).
element = st.one_of(text, st.dictionaries(names, st.one_of(leaf, st.lists(text, max_size=3)), max_size=4))
value = st.one_of(leaf, st.lists(element, max_size=4))
METHODS = ("private/create-order", "private/create-order-list", "private/cancel-order-list", "private/amend-order",
           "private/get-open-orders")


def signed_or_refused(method: str, params: dict, now_ms: int) -> bool:
    """True when the agent signs PARAMS as ccxt does; False when it refuses them."""
    secret = "s" * SECRET_LEN
    try:
        signed = sign(UnsignedRequest("POST", f"/exchange/v1/{method}", body=RawBody(ccxt_json(params))),
                      secret, now_ms)
    except RequestInvalid as refusal:
        assert str(refusal)
        return False
    expected = ccxt_sign(method, params, secret, now_ms)
    assert signed.body == expected["body"]
    assert dict(signed.headers) == expected["headers"]
    return True


# now_ms >= 1: the reference credential has issued nonce 0 already (its last_nonce starts at 0).
# Top-level 'sig' and 'api_key' are refused by design (see the refusals below): not generated here.
@settings(max_examples=100, deadline=None)
@given(method=st.sampled_from(METHODS),
       params=st.dictionaries(names.filter(lambda n: n not in ("sig", "api_key")), value, max_size=6),
       now_ms=st.integers(min_value=1, max_value=2**45))
def test_any_parameters_are_refused_or_equal_ccxt(method, params, now_ms):
    signed_or_refused(method, params, now_ms)


# Params in the grammar (lower-case names, values without lower-case letters): signed, as ccxt signs them.
grammar_names = st.from_regex(r"[a-z]([a-z_]{0,8}[a-z])?", fullmatch=True).filter(
    lambda n: n not in ("sig", "api_key", "order_list") and "order_list" not in n
    and not any(n.endswith(p) and n != p for p in ("instrument_name", "quantity", "notional", "new_quantity")))
grammar_text = st.from_regex(r"[A-Z0-9.\-][A-Z0-9_.\-]{0,11}", fullmatch=True)
grammar_leaf = st.one_of(grammar_text, st.integers(min_value=-(2**53), max_value=2**53))
grammar_value = st.one_of(grammar_leaf, st.lists(grammar_text, min_size=1, max_size=3))


@settings(max_examples=60, deadline=None)
@given(params=st.dictionaries(grammar_names, grammar_value, max_size=6),
       orders=st.lists(st.dictionaries(grammar_names.filter(lambda n: n < "instrument_name"), grammar_leaf,
                                       max_size=3), min_size=1, max_size=3),
       now_ms=st.integers(min_value=1, max_value=2**45))
def test_parameters_in_the_grammar_equal_ccxt(params, orders, now_ms):
    params = {name: value for name, value in params.items() if not (name in ("instrument_name", "quantity",
                                                                              "notional") and isinstance(value, list))}
    assert signed_or_refused("private/create-order", params, now_ms)
    # A batch: order_list last, every order on one instrument and ending with the same name.
    batch = {name: value for name, value in params.items() if name < "order_list" and not isinstance(value, list)}
    batch["order_list"] = [dict(order, instrument_name="BTC_USD", type="LIMIT") for order in orders]
    assert signed_or_refused("private/create-order-list", batch, now_ms)


# -- ccxt's own calls ---------------------------------------------------------------------------


class _Sent(Exception):
    pass


def ccxt_calls(method: str, *args, **kwargs) -> list[tuple[str, dict]]:
    """The (path, params) of the private requests ccxt's METHOD builds, nothing being sent."""
    built: list[tuple[str, dict]] = []

    class Capturing(ccxt.cryptocom):
        def sign(self, path, api="public", method="GET", params={}):  # noqa: B006 (ccxt's signature)
            if api[-1] == "private":
                built.append((path, dict(params)))
            return super().sign(path, api, method, params)

        def fetch(self, url, method="GET", headers=None, body=None):
            raise _Sent()

    ex = Capturing({**bridge.PLACEHOLDER, "enableRateLimit": False})
    ex.milliseconds = lambda: NOW_MS
    limits = {"min": None, "max": None}
    ex.set_markets([{
        "id": f"{base}_USDT", "symbol": f"{base}/USDT", "base": base, "quote": "USDT", "baseId": base,
        "quoteId": "USDT", "settle": None, "settleId": None, "type": "spot", "spot": True, "margin": False,
        "swap": False, "future": False, "option": False, "contract": False, "linear": None, "inverse": None,
        "contractSize": None, "active": True, "expiry": None, "expiryDatetime": None, "strike": None,
        "optionType": None, "precision": {"amount": 0.0001, "price": 0.01},
        "limits": {"amount": limits, "price": limits, "cost": limits, "leverage": limits, "market": limits},
        "taker": 0.001, "maker": 0.001, "info": {},
    } for base in ("BTC", "ETH")])
    with pytest.raises(_Sent):
        getattr(ex, method)(*args, **kwargs)
    assert built
    return built


BTC, ETH = "BTC/USDT", "ETH/USDT"
ONE_BATCH = [{"symbol": BTC, "type": "limit", "side": "buy", "amount": 0.01, "price": 50000},
             {"symbol": BTC, "type": "limit", "side": "sell", "amount": 0.02, "price": 60000,
              "params": {"postOnly": True}}]
SIGNED_AS_CCXT = [
    ("create_order", (BTC, "limit", "buy", 0.01, 50000), {}),
    ("create_order", (BTC, "market", "sell", 0.01), {}),
    ("create_order", (BTC, "limit", "buy", 0.01, 50000), {"params": {"postOnly": True, "timeInForce": "PO"}}),
    ("create_order", (BTC, "market", "sell", 0.01, 50000), {"params": {"stopLossPrice": 45000}}),
    ("create_order", (BTC, "limit", "buy", 0.01, 50000), {"params": {"client_oid": "BOT-42"}}),
    ("create_orders", (ONE_BATCH,), {}),
    ("edit_order", ("6530219599901241", BTC, "limit", "buy", 0.02, 51000), {}),
    ("cancel_order", ("6530219599901241", BTC), {}),
    ("cancel_orders", (["1", "2"], BTC), {}),
    ("cancel_orders_for_symbols", ([{"id": "1", "symbol": BTC}, {"id": "2", "symbol": ETH}],), {}),
    ("cancel_all_orders", (BTC,), {}),
    ("fetch_balance", (), {}),
    ("fetch_order", ("6530219599901241", BTC), {}),
    ("fetch_open_orders", (BTC,), {}),
    ("fetch_my_trades", (BTC, 1699990000000, 100), {}),
    ("fetch_orders", (BTC, 1699990000000, 100), {}),
]


@pytest.mark.parametrize("method,args,kwargs", SIGNED_AS_CCXT)
def test_ccxt_calls_are_signed_as_ccxt_signs_them(method, args, kwargs):
    secret = new_secret(SECRET_LEN)
    for path, params in ccxt_calls(method, *args, **kwargs):
        ex = ccxt.cryptocom(dict(bridge.PLACEHOLDER))
        ex.milliseconds = lambda: NOW_MS
        unsigned = bridge.unsign(ex, ex.sign(path, ["v1", "private"], "POST", params), ["v1", "private"])
        signed = SCHEME.sign(unsigned.request, hmac_credential("cryptocom", API_KEY, secret),
                             fixed_environment(unsigned.timestamp_ms))
        assert signed.body == ccxt_sign(path, params, secret)["body"]


# What ccxt would sign and the agent refuses, each for a value whose signed bytes read more than one way.
REFUSED_CCXT = [
    # A client order id with lower-case letters: names could be read inside it.
    ("create_order", (BTC, "limit", "buy", 0.01, 50000), {"params": {"client_oid": "bot-42"}}, "lower-case letter"),
    # A batch over two instruments: an order's size could be regrouped with the other instrument.
    ("create_orders", ([dict(ONE_BATCH[0]), dict(ONE_BATCH[1], symbol=ETH)],), {}, "several instruments"),
]


@pytest.mark.parametrize("method,args,kwargs,message", REFUSED_CCXT)
def test_ccxt_calls_the_agent_refuses_name_the_reason(method, args, kwargs, message):
    (path, params), = ccxt_calls(method, *args, **kwargs)
    request = UnsignedRequest("POST", f"/exchange/v1/{path}", body=RawBody(ccxt_json(params)))
    with pytest.raises(RequestInvalid, match=message):
        sign(request, new_secret(SECRET_LEN))
