"""Crypto.com's paramString, from the exchange's side: a bot may send any params object with the
paramString of the one the agent signed, and the exchange acts on what it receives.

paramString joins the sorted names and their values with nothing in between (lists: their elements in
order; objects in lists: their own paramString). The agent signs only params in a grammar under which
paramString reads back one way (agent/exchanges/cryptocom/scheme.py). Modelled here:

  decode(text)      the exchange-side reading of a paramString under that grammar: a name runs from a
                    lower-case letter while letters and '_' follow, its value to the next lower-case
                    letter; the run that begins with "order_list" is the batch and the first name of its
                    first order, and the batch's orders split where names stop increasing.
  param_text(obj)   the documented paramString of any params object (what the exchange verifies).
  acted_on(method, obj)  what the exchange acts on among the names the policy reads (instrument_name,
                    quantity, notional; new_quantity on amend-order): the top level (none of them on the
                    batch methods), and the orders of order_list on the batch methods, an order counting
                    only with instrument_name, side and type (create) or instrument_name and order_id
                    (cancel). Only values of the exchange's own grammar count: symbols, numbers and
                    enumerations hold no lower-case letter and do not begin with '_'.

The properties: (a) the scheme refuses a params object, or decode(paramString) gives it back;
(b) whatever another object with the same paramString makes the exchange act on was checked: each
top-level pair is a top-level pair of the signed params, and each pair of an order is a pair of a signed
order on the same instrument; (c) the attacks that motivated the grammar, as data: the signed and the
sent object share a paramString, the sent one makes the exchange act on what the policy did not see (or
reads as another object), and the scheme refuses the signed one, saying why.

Why (b) is not "every pair of the sent object appears in the signed one, wherever": an object can end in
the middle of a value and the rest be sent as further list elements ({"": [{"instrument_name":
"BTC_USD"}, "T"]} reads BTC_USD out of BTC_USDT), whatever the grammar. The exchange does not act on
objects under names it does not read, and an order cut short there lacks side or type (its last member,
the only one that can be cut, sorts at or after "type", after every name the policy reads).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.exchanges import EXCHANGES, scheme_for
from agent.exchanges.cryptocom.scheme import LIST_NAME, POLICY_NAMES, param_string
from agent.rules import inspect
from agent.schemes import RawBody, RequestInvalid, UnsignedRequest
from support.reference import fixed_environment, hmac_credential

SCHEME = scheme_for("cryptocom")
KEY = hmac_credential("cryptocom", "a7Rk2PqX9mZt4WvB8nYc3L", "s" * 22)
CREATE, AMEND, LIST = "private/create-order", "private/amend-order", "private/create-order-list"
METHODS = (CREATE, AMEND, LIST, "private/cancel-order-list", "private/advanced/create-oco", "private/get-open-orders")
BATCH = re.compile(r"private/(?:advanced/)?(create|cancel)-(?:order-list|oco|oto|otoco)")


# -- the exchange's side ----------------------------------------------------------------------------


def param_text(obj: object, level: int = 0) -> str:
    """The documented paramString of any params object (Crypto.com's samples): what is verified."""
    if not isinstance(obj, dict):
        return "null" if obj is None else str(obj)
    out = []
    for name in sorted(obj):
        out.append(name)
        value = obj[name]
        items = value if isinstance(value, list) else [value]
        out.extend(param_text(item, level + 1) if isinstance(item, dict) and level < 2 else
                   "null" if item is None else str(item) for item in items)
    return "".join(out)


_RUN = re.compile(r"[a-z][a-z_]*")
_VALUE = re.compile(r"[^a-z]+")


def decode(text: str) -> dict | None:
    """The params object whose paramString is TEXT under the grammar; None if TEXT has no reading in it.
    Values come back as text (an integer as its digits, a list of text as its elements joined)."""
    pairs, pos = [], 0
    while pos < len(text):
        run = _RUN.match(text, pos)
        if run is None or run.group().endswith("_"):
            return None
        value = _VALUE.match(text, run.end())
        if value is None:
            return None
        pairs.append((run.group(), value.group()))
        pos = value.end()
    params: dict = {}
    for index, (name, value) in enumerate(pairs):
        if name.startswith(LIST_NAME) and name != LIST_NAME:
            params[LIST_NAME] = orders = [{}]
            for member, text in [(name[len(LIST_NAME):], value)] + pairs[index + 1:]:
                if orders[-1] and member <= max(orders[-1]):
                    orders.append({})  # names stopped increasing: the next order begins
                orders[-1][member] = text
            break
        params[name] = value
    names = list(params)
    return params if names == sorted(set(names)) else None


def normalized(params: dict) -> dict:
    """PARAMS as decode() gives them back."""
    def scalar(value):
        return "".join(map(str, value)) if isinstance(value, list) else str(value)
    return {name: [{k: scalar(v) for k, v in order.items()} for order in value] if name == LIST_NAME
            else scalar(value) for name, value in params.items()}


def exchange_value(value: object) -> bool:
    """A value of the exchange's grammar: symbols, numbers, enumerations."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    text = str(value)
    return text != "" and not text.startswith("_") and not any("a" <= c <= "z" for c in text)


def acted_on(method: str, params: dict) -> tuple[set, list[tuple[str, set]]]:
    """(top-level pairs, [(instrument, pairs) per order]) the exchange acts on, of the names the policy reads."""
    batch = BATCH.fullmatch(method)
    top_names = set() if batch else {"instrument_name", "new_quantity"} if method == AMEND else {
        "instrument_name", "quantity", "notional"}
    top = {(n, str(v)) for n, v in params.items() if n in top_names and exchange_value(v)}
    orders = []
    required = ("instrument_name", "side", "type") if batch and batch.group(1) == "create" else (
        "instrument_name", "order_id")
    listed = params.get(LIST_NAME) if batch else None
    for order in listed if isinstance(listed, list) else []:
        if isinstance(order, dict) and all(exchange_value(order.get(n)) for n in required):
            orders.append((str(order["instrument_name"]), {
                (n, str(v)) for n, v in order.items() if n in ("instrument_name", "quantity", "notional")
                and exchange_value(v)}))
    return top, orders


def unseen(method: str, signed: dict, sent: dict) -> list[str]:
    """What the exchange acts on in SENT that the policy did not see in SIGNED, as readable lines."""
    checked_top = {(n, str(v)) for n, v in signed.items() if not isinstance(v, list)}
    checked_orders: dict[str, set] = {}
    for order in signed.get(LIST_NAME, []) if isinstance(signed.get(LIST_NAME), list) else []:
        pairs = {(n, str(v)) for n, v in order.items() if not isinstance(v, list)}
        checked_orders.setdefault(str(order.get("instrument_name")), set()).update(pairs)
    top, orders = acted_on(method, sent)
    found = [f"top level {n}={v}" for n, v in sorted(top - checked_top)]
    for instrument, pairs in orders:
        found += [f"order on {instrument}: {n}={v}" for n, v in sorted(pairs - checked_orders.get(instrument, set()))]
    return found


def accepted(method: str, params: dict) -> bool:
    request = UnsignedRequest("POST", f"/exchange/v1/{method}", body=RawBody(json.dumps(params)))
    try:
        SCHEME.sign(request, KEY, fixed_environment(1_700_000_000_000))
    except RequestInvalid as refusal:
        assert str(refusal)
        return False
    return True


# -- the attacker's side: every reading it could choose ------------------------------------------


def _lower(char: str) -> bool:
    return "a" <= char <= "z"


def _value_ends(text: str, start: int) -> list[int]:
    """The ends q of the exchange values text[start:q]: no lower-case letter, not beginning with '_'."""
    ends, end = [], start
    if start < len(text) and text[start] == "_":
        return ends
    while end < len(text) and not _lower(text[end]):
        end += 1
        ends.append(end)
    return ends


def _at(text: str, name: str, start: int = 0) -> list[int]:
    return [m.start() for m in re.finditer(f"(?={re.escape(name)})", text) if m.start() >= start]


def top_level_readings(text: str, names) -> set[tuple[str, str]]:
    """Every (name, value) among NAMES that some object with paramString TEXT has at its top level:
    {"": <all before>, name: value, <all after>: ""}, the last only if it sorts after the name."""
    found = set()
    for name in names:
        for start in _at(text, name):
            begin = start + len(name)
            found |= {(name, text[begin:end]) for end in _value_ends(text, begin)
                      if end == len(text) or text[end:] > name}
    return found


def _filler(text: str, start: int, stop: int, after: str, before: str) -> bool:
    """Whether text[start:stop] can be one member whose name sorts between AFTER and BEFORE."""
    return start == stop or any(after < text[start:end] < before for end in range(start + 1, stop + 1))


def order_readings(text: str, create: bool) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (instrument, pairs the policy reads) of an order some object with paramString TEXT puts in
    order_list with the members the exchange requires: {"": <before>, "order_list": [<text>, ORDER,
    <text after>]}, ORDER holding the required members, one a name the policy reads, and between them
    members of any other name that sorts in between (their values swallow whatever is there)."""
    required = ("instrument_name", "side", "type") if create else ("instrument_name", "order_id")
    found = set()
    for opening in _at(text, LIST_NAME):
        for extra in ((), ("notional",), ("quantity",)) if create else ((),):
            anchors = tuple(sorted(required + extra))
            for values in _anchored(text, opening + len(LIST_NAME), anchors, ""):
                read = dict(zip(anchors, values))
                found.add((read["instrument_name"], tuple((n, read[n]) for n in extra)))
    return found


def _anchored(text: str, start: int, anchors: tuple[str, ...], previous: str):
    """The values of ANCHORS, members of one object in this order from START on (the first may follow
    a member named '', the last may be cut short: the object can end anywhere)."""
    name = anchors[0]
    for at in _at(text, name, start):
        if previous and not _filler(text, start, at, previous, name):
            continue
        begin = at + len(name)
        for end in _value_ends(text, begin):
            if len(anchors) == 1:
                yield (text[begin:end],)
                continue
            for rest in _anchored(text, end, anchors[1:], name):
                yield (text[begin:end],) + rest


def readings_unseen(method: str, signed: dict) -> list[str]:
    """What some object with SIGNED's paramString makes the exchange act on that the policy did not see."""
    text = param_text(signed)
    batch = BATCH.fullmatch(method)
    top_names = () if batch else ("instrument_name", "new_quantity") if method == AMEND else (
        "instrument_name", "quantity", "notional")
    checked = {(n, str(v)) for n, v in signed.items() if not isinstance(v, list)}
    found = [f"top level {n}={v}" for n, v in sorted(top_level_readings(text, top_names) - checked)]
    if batch:
        orders: dict[str, set] = {}
        for order in signed.get(LIST_NAME, []) if isinstance(signed.get(LIST_NAME), list) else []:
            orders.setdefault(str(order.get("instrument_name")), set()).update(
                (n, str(v)) for n, v in order.items() if not isinstance(v, list))
        for instrument, pairs in order_readings(text, batch.group(1) == "create"):
            if instrument not in orders or not set(pairs) <= orders[instrument]:
                found.append(f"an order on {instrument} with {dict(pairs)}")
    return found


# -- (c) the attacks, as data -----------------------------------------------------------------------

# (case, method, signed: what the policy checks, sent: what the bot sends, the refusal's words).
ATTACKS = [
    # The hole: asked to sign a buy of nothing on BTC_USDT, the bot sends a market buy of ETH_USDT.
    ("instrument swap", CREATE,
     {"client_oidx": "", "instrument_name": "BTC_USDT", "instrument_nameETH_USDTquantity5sideBUYtypeMARKET": ""},
     {"client_oid": "xinstrument_nameBTC_USDT", "instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY",
      "type": "MARKET"}, "is empty"),
    ("names inside a lower-case value", CREATE,
     {"client_oid": "xinstrument_nameETH_USDTquantity5sideBUYtypeMARKETz", "instrument_name": "BTC_USDT"},
     {"client_oid": "x", "instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET",
      "zinstrument_name": "BTC_USDT"}, "lower-case letter 'x'"),
    ("a name ending with one the policy reads", CREATE,
     {"fee_instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"},
     {"fee_": "", "instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"},
     "ends with 'instrument_name'"),
    ("an empty list lets names join", CREATE,
     {"i": [], "nstrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"},
     {"instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"}, "empty list"),
    ("a digit moves into the value", CREATE,
     {"instrument_name": "BTC_USDT", "notional": "10", "quantity5": "0", "side": "BUY", "type": "MARKET"},
     {"instrument_name": "BTC_USDT", "notional": "10", "quantity": "50", "side": "BUY", "type": "MARKET"},
     "lower-case ASCII letters"),
    ("a capital moves into the value", CREATE,
     {"instrument_nameE": "TH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"},
     {"instrument_name": "ETH_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"}, "lower-case ASCII letters"),
    ("a character after 'z' starts a name inside a value", CREATE,
     {"instrument_name": "BTC_USDT", "notional": "10", "quantity": "1000~"},
     {"instrument_name": "BTC_USDT", "notional": "10", "quantity": "1000", "~": ""}, "character '~'"),
    ("a list where one value is read", CREATE,
     {"instrument_name": ["BTC_USD", "T"], "quantity": "5", "side": "BUY", "type": "MARKET"},
     {"instrument_name": "BTC_USDT", "quantity": "5", "side": "BUY", "type": "MARKET"}, "takes one value"),
    ("new_quantity outside amend-order", CREATE,
     {"instrument_name": "BTC_USDT", "new_quantity": "1000", "side": "BUY", "type": "MARKET"},
     {"instrument_name": "BTC_USDT", "new_": "", "quantity": "1000", "side": "BUY", "type": "MARKET"},
     "belongs to amend-order"),
    ("a batch on a single-order method: its end is not marked", CREATE,
     {"instrument_name": "BTC_USDT", "notional": "10", LIST_NAME: [{"quantity": "1000", "side": "BUY",
                                                                    "type": "MARKET"}]},
     {"instrument_name": "BTC_USDT", "notional": "10", LIST_NAME: [], "quantity": "1000", "side": "BUY",
      "type": "MARKET"}, "batch methods only"),
    ("a parameter after the batch joins its last order", LIST,
     {LIST_NAME: [{"instrument_name": "BTC_USDT", "notional": "10"}], "quantity": "1000", "side": "BUY",
      "type": "MARKET"},
     {LIST_NAME: [{"instrument_name": "BTC_USDT", "notional": "10", "quantity": "1000", "side": "BUY",
                   "type": "MARKET"}]}, "last parameter"),
    ("two orders whose names keep increasing read as one", LIST,
     {"contingency_type": "LIST", LIST_NAME: [{"instrument_name": "BTC_USDT", "notional": "10"},
                                              {"quantity": "1000", "side": "BUY", "type": "MARKET"}]},
     {"contingency_type": "LIST", LIST_NAME: [{"instrument_name": "BTC_USDT", "notional": "10", "quantity": "1000",
                                              "side": "BUY", "type": "MARKET"}]}, "would read as one order"),
    # Pairs move from one order to the next: a member with a lower-case value swallows those between.
    ("an order without its instrument", LIST,
     {LIST_NAME: [{"instrument_name": "BTC_USDT", "notional": "10", "side": "BUY", "type": "MARKET"},
                  {"quantity": "1000", "side": "BUY", "type": "MARKET"}]},
     {LIST_NAME: [{"instrument_name": "BTC_USDT", "n": "otional10sideBUYtypeMARKET", "quantity": "1000",
                   "side": "BUY", "type": "MARKET"}]}, "must name its instrument_name"),
    ("one batch, two instruments", LIST,
     {"contingency_type": "LIST", LIST_NAME: [
         {"instrument_name": "BTC_USDT", "notional": "10", "side": "BUY", "type": "MARKET"},
         {"instrument_name": "ETH_USDT", "quantity": "1000", "side": "BUY", "type": "MARKET"}]},
     {"contingency_type": "LIST", LIST_NAME: [
         {"instrument_name": "BTC_USDT", "n": "otional10sideBUYtypeMARKETinstrument_nameETH_USDT",
          "quantity": "1000", "side": "BUY", "type": "MARKET"}]}, "several instruments"),
]

# Signed and sent objects that read as each other without the grammar (the policy reads none of it here).
AMBIGUOUS = [
    ("null is lower-case text", CREATE, {"a": None, "b": "X"}, {"anullb": "X"}, "null"),
    ("an empty value", CREATE, {"a": "", "b": "X"}, {"ab": "X"}, "is empty"),
    ("a value beginning with '_'", CREATE, {"a": "_X"}, {"a_": "X"}, "begins with '_'"),
    ("a name ending with '_'", CREATE, {"a_": "X"}, {"a": "_X"}, "lower-case ASCII letters"),
    ("the batch's name inside another", LIST, {"order_lista": "X"}, {LIST_NAME: [{"a": "X"}]}, "contains 'order_list'"),
    ("cancels whose names keep increasing read as one", "private/cancel-order-list",
     {LIST_NAME: [{"instrument_name": "BTC_USDT"}, {"order_id": "7"}]},
     {LIST_NAME: [{"instrument_name": "BTC_USDT", "order_id": "7"}]}, "would read as one order"),
    ("an empty order", LIST, {LIST_NAME: [{}, {"a": "X"}]}, {LIST_NAME: [{"a": "X"}]}, "non-empty"),
    ("an object in an order", LIST, {LIST_NAME: [{"a": [{"b": "X"}]}]}, {LIST_NAME: [{"ab": "X"}]}, "holds an object"),
]


@pytest.mark.parametrize("case,method,signed,sent,refusal", ATTACKS, ids=[row[0] for row in ATTACKS])
def test_attacks_are_refused(case, method, signed, sent, refusal):
    assert param_text(signed) == param_text(sent), "one signature covers both"
    assert unseen(method, signed, sent), "the exchange acts on something the policy did not see"
    with pytest.raises(RequestInvalid, match=re.escape(refusal)):
        SCHEME.sign(UnsignedRequest("POST", f"/exchange/v1/{method}", body=RawBody(json.dumps(signed))), KEY,
                    fixed_environment(1_700_000_000_000))


@pytest.mark.parametrize("case,method,signed,sent,refusal", ATTACKS, ids=[row[0] for row in ATTACKS])
def test_the_attacker_model_finds_each_attack(case, method, signed, sent, refusal):
    """The search the properties below run on every signed object finds each of these, grammar aside."""
    assert readings_unseen(method, signed)


@pytest.mark.parametrize("case,method,signed,sent,refusal", AMBIGUOUS, ids=[row[0] for row in AMBIGUOUS])
def test_ambiguous_params_are_refused(case, method, signed, sent, refusal):
    assert param_text(signed) == param_text(sent) and signed != sent
    with pytest.raises(RequestInvalid, match=re.escape(refusal)):
        SCHEME.sign(UnsignedRequest("POST", f"/exchange/v1/{method}", body=RawBody(json.dumps(signed))), KEY,
                    fixed_environment(1_700_000_000_000))


def test_the_instrument_swap_is_what_the_policy_would_pass():
    """Without the grammar the policy reads BTC_USDT and no size; the exchange buys ETH_USDT."""
    _, _, signed, sent, _ = ATTACKS[0]
    facts = inspect(EXCHANGES["cryptocom"], UnsignedRequest("POST", "/exchange/v1/" + CREATE, body=RawBody(json.dumps(signed))))
    assert facts.symbols == ("BTC_USDT",) and facts.forbidden is None
    assert acted_on(CREATE, sent)[0] == {("instrument_name", "ETH_USDT"), ("quantity", "5")}
    assert param_text(signed) == ("client_oidxinstrument_nameBTC_USDTinstrument_nameETH_USDTquantity5sideBUY"
                                  "typeMARKET")


def test_the_guarded_names_are_those_the_rules_read():
    assert EXCHANGES["cryptocom"].rules.symbol_params <= set(POLICY_NAMES)
    facts = inspect(EXCHANGES["cryptocom"], UnsignedRequest("POST", "/exchange/v1/" + LIST, body=RawBody(json.dumps(
        {LIST_NAME: [{"instrument_name": "BTC_USDT", "quantity": "1", "notional": "2", "side": "B", "type": "T"}]}))))
    assert [(o.symbol, str(o.quantity), str(o.quote_quantity)) for o in facts.orders] == [("BTC_USDT", "1", "2")]
    amend = inspect(EXCHANGES["cryptocom"], UnsignedRequest("POST", "/exchange/v1/" + AMEND, body=RawBody(json.dumps(
        {"new_quantity": "3", "instrument_name": "BTC_USDT"}))))
    assert [str(o.quantity) for o in amend.orders] == ["3"]


# -- (a) every params object is refused or reads back ----------------------------------------------

# Names and values are whole words, or joined from fragments: the names the policy reads and parts of
# them, symbols that are prefixes of others, digits, '_', capitals, lower-case letters, characters after
# 'z', non-ASCII. Most are in the grammar, so that many objects are signed and one fragment decides.
NAME_WORDS = ["instrument_name", "quantity", "notional", "side", "type", "client_oid", "exec_inst", "x", "a", "q"]
NAME_PARTS = NAME_WORDS + ["i", "nstrument_name", "new_q", "fee_i", "uantity", "order_list"]
ODD_NAME_PARTS = ["_", "1", "B", "~", "é", "new_"]
VALUE_WORDS = ["BTC_USDT", "BTC_USD", "T", "ETH_USDT", "5", "50", "MARKET", "BUY", "X-1", "0.5"]
VALUE_PARTS = VALUE_WORDS + ["-", ".", " ", "Q_"]
ODD_VALUE_PARTS = ["_", "x", "quantity", "instrument_name", "~", "{", "é", "null", ""]


def _words(words, parts, odd):
    return st.one_of(st.sampled_from(words), st.sampled_from(words), st.sampled_from(words), st.sampled_from(odd),
                     st.lists(st.sampled_from(parts), min_size=2, max_size=3).map("".join),
                     st.lists(st.sampled_from(parts + odd), min_size=1, max_size=3).map("".join))


names = _words(NAME_WORDS, NAME_PARTS, ODD_NAME_PARTS)
text = _words(VALUE_WORDS, VALUE_PARTS, ODD_VALUE_PARTS)
scalars = st.one_of(text, text, text, st.integers(-10**6, 10**6), st.none())
members = st.dictionaries(names, st.one_of(scalars, scalars, st.lists(scalars, max_size=2)), max_size=4)
values = st.one_of(scalars, scalars, scalars, st.lists(scalars, max_size=3), st.lists(members, max_size=3))
rich_params = st.dictionaries(names, values, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), params=rich_params)
def test_params_are_refused_or_read_back(method, params):
    if accepted(method, params):
        assert param_string(params) == param_text(params)
        assert decode(param_text(params)) == normalized(params)


# Params in the grammar, for the methods that take them, and half of the time one step outside it (a
# name or a value from the fragments above, a second instrument in a batch, an order without one of its
# members, a parameter after the batch, a batch on another method): each rule is needed by a test here.
GRAMMAR_NAMES = st.one_of(
    st.sampled_from(["instrument_name", "quantity", "notional", "price", "side", "type", "client_oid", "exec_inst",
                     "ref_price", "time_in_force", "broker_id", "contingency_type", "order_id"]),
    st.from_regex(r"[a-z]([a-z_]{0,4}[a-z])?", fullmatch=True).filter(lambda n: LIST_NAME not in n and not any(
        n.endswith(p) and n != p for p in POLICY_NAMES)))
GRAMMAR_TEXT = st.one_of(st.sampled_from(["BTC_USDT", "BTC_USD", "ETH_USDT", "T", "5", "50", "1000", "0.5", "BUY",
                                          "MARKET", "LIMIT", "TAKE_PROFIT_LIMIT", "X-1", "Q_"]),
                         st.from_regex(r"[A-Z0-9.\-][A-Z0-9_.\-]{0,5}", fullmatch=True))
GRAMMAR_VALUE = st.one_of(GRAMMAR_TEXT, GRAMMAR_TEXT, st.integers(0, 10**6), st.lists(GRAMMAR_TEXT, min_size=1,
                                                                                          max_size=2))
POLICY_PAIRS = st.dictionaries(st.sampled_from(["instrument_name", "quantity", "notional"]), GRAMMAR_TEXT, max_size=2)
# One step outside the grammar: a value with one odd fragment in it, under any name.
ODD_TEXT = st.builds(lambda head, odd, tail: head + odd + tail, st.sampled_from(["", "5", "BTC_USD"]),
                     st.sampled_from(ODD_VALUE_PARTS), st.sampled_from(["", "T", "0"]))
ODD_PAIRS = st.one_of(st.tuples(names, GRAMMAR_TEXT), st.tuples(GRAMMAR_NAMES, st.one_of(ODD_TEXT, values)),
                      st.tuples(st.sampled_from(["instrument_name", "quantity", "notional"]),
                                st.one_of(ODD_TEXT, values)))


@st.composite
def grammar_params(draw, method: str) -> dict:
    params = draw(st.dictionaries(GRAMMAR_NAMES, GRAMMAR_VALUE, max_size=3)) | draw(POLICY_PAIRS)
    if method == AMEND:
        params["new_quantity"] = draw(GRAMMAR_TEXT)
    odd = draw(st.sampled_from(["", "", "", "pair", "pair", "batch", "after", "two", "two", "drop", "drop"]))
    batch = BATCH.fullmatch(method)
    if batch or odd == "batch":
        if odd != "after":
            params = {n: v for n, v in params.items() if n < LIST_NAME}
        instruments = draw(st.permutations(["BTC_USDT", "ETH_USDT"]))
        orders = []
        for index in range(draw(st.integers(2 if odd == "two" else 1, 3))):
            order = draw(st.dictionaries(GRAMMAR_NAMES, GRAMMAR_VALUE, max_size=2)) | draw(POLICY_PAIRS)
            order["instrument_name"] = instruments[index % 2 if odd == "two" else 0]
            order.update({"side": "BUY", "type": "MARKET"} if not batch or batch.group(1) == "create" else
                         {"order_id": str(index)})
            if odd == "drop" and draw(st.booleans()):
                order.pop(draw(st.sampled_from(["instrument_name", "instrument_name"] + sorted(order))))
            orders.append(order)
        params[LIST_NAME] = orders
    if odd == "pair":
        name, value = draw(ODD_PAIRS)
        target = params[LIST_NAME][-1] if LIST_NAME in params and draw(st.booleans()) else params
        target[name] = value
    return params


# Batches get more examples: more of the grammar is about them.
GRAMMAR_METHODS = st.sampled_from(METHODS + (LIST, LIST, "private/cancel-order-list"))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), method=GRAMMAR_METHODS)
def test_params_in_the_grammar_read_back(data, method):
    params = data.draw(grammar_params(method))
    if accepted(method, params):
        assert decode(param_string(params)) == normalized(params)


# -- (b) another object with the same paramString acts on nothing the policy did not see ------------


def _cut(draw, text: str, start: int, ok) -> int | None:
    """An end after START for a name or a value: anywhere OK accepts, often where case changes or a
    name the policy reads begins or ends (where readings differ)."""
    ends = [end for end in range(start, len(text) + 1) if ok(text[start:end])]
    if not ends:
        return None
    marks = {len(text)} | {end for end in range(1, len(text)) if text[end - 1].islower() != text[end].islower()}
    for name in POLICY_NAMES + ("side", "type", LIST_NAME):
        for found in re.finditer(re.escape(name), text):
            marks |= {found.start(), found.end()}
    edges = [end for end in ends if end in marks]
    return draw(st.sampled_from(edges if edges and draw(st.booleans()) else ends))


def _object(draw, text: str, pos: int, depth: int, top: bool) -> tuple[dict, int]:
    obj: dict = {}
    while pos < len(text) and (top or not obj or draw(st.booleans())):
        previous = max(obj) if obj else None
        end = _cut(draw, text, pos, lambda name: previous is None or name > previous)
        if end is None:
            break
        name, pos = text[pos:end], end
        if depth < 2 and draw(st.integers(0, 3)) == 0:  # a list: text and objects
            items = []
            while pos < len(text) and draw(st.booleans()):
                if draw(st.booleans()):
                    item, pos = _object(draw, text, pos, depth + 1, top=False)
                else:
                    end = _cut(draw, text, pos, lambda _: True)
                    item, pos = text[pos:end], end
                items.append(item)
            obj[name] = items
        else:
            end = len(text) if top and draw(st.integers(0, 4)) == 0 else _cut(draw, text, pos, lambda _: True)
            obj[name], pos = text[pos:end], end
    return obj, pos


@st.composite
def readings(draw, text: str) -> dict:
    """A params object, any shape, whose paramString is TEXT: what a bot holding the signature may send."""
    obj, pos = _object(draw, text, 0, 0, top=True)
    if pos < len(text):  # the names left could not keep increasing: put the rest in the last value
        last = max(obj) if obj else ""
        obj[last] = param_text({last: obj[last]})[len(last):] + text[pos:] if obj else text
    assert param_text(obj) == text
    return obj


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), method=GRAMMAR_METHODS)
def test_no_reading_of_a_signed_object_acts_on_anything_unchecked(data, method):
    """Every reading an attacker could choose (top level, and orders of order_list), for signed objects
    in the grammar and rich ones (mostly refused)."""
    signed = data.draw(st.one_of(grammar_params(method), rich_params))
    if accepted(method, signed):
        assert not readings_unseen(method, signed), signed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), method=GRAMMAR_METHODS)
def test_other_readings_act_on_nothing_unchecked(data, method):
    signed = data.draw(grammar_params(method))
    if not accepted(method, signed):
        return
    sent = data.draw(readings(param_text(signed)))
    assert not unseen(method, signed, sent), (signed, sent)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), sent=rich_params)
def test_any_sent_object_acts_on_nothing_unchecked(method, sent):
    """From the bot's side: for any object it might send, the one object in the grammar with its
    paramString (if any) is what the agent would have to sign; if the agent would, it saw everything."""
    signed = decode(param_text(sent))
    if signed is None or param_text(signed) != param_text(sent) or not accepted(method, signed):
        return
    assert not unseen(method, signed, sent), (signed, sent)

