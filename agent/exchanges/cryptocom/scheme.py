"""Crypto.com Exchange v1: hex HMAC-SHA256, placed in the JSON body, not in a header.

Reference: docs/exchange-signing.md 2.8 (Crypto.com's Python and JavaScript
samples; ccxt). Signed: method + id + api_key + paramString + nonce, where the
method is the path from "private/" on (POST .../exchange/v1/private/create-order
-> "private/create-order") and paramString is the params' keys sorted ascending,
each followed by its value; a list contributes its elements in order, a dict
element its own sorted paramString, down to depth 3. The body is
{"id", "method", "params", "api_key", "sig", "nonce"}.

The nonce comes from the key's strictly increasing nonce (milliseconds, ccxt's
unit) and doubles as the id, as in ccxt, which sends both as JSON strings.
The params are given as a RawBody with the JSON object (kept byte for byte in the
body) or as string pairs. What the samples render differently by language is
refused rather than guessed: booleans (Python "True", JavaScript "true"),
non-integer numbers (str() of a float differs), a dict outside a list, lists
inside lists.

Why a grammar. paramString puts nothing between a name and its value, nor between
one pair and the next, and the exchange rebuilds it from the JSON it receives. So
every params object with the same paramString has the same signature, and a bot
holding a signature may send any of them: asked to sign
{"client_oidx": "", "instrument_name": "BTC_USDT",
 "instrument_nameETH_USDTquantity5sideBUYtypeMARKET": ""} (the policy reads BTC_USDT),
it can send {"client_oid": "xinstrument_nameBTC_USDT", "instrument_name": "ETH_USDT",
"quantity": "5", "side": "BUY", "type": "MARKET"}: both are
"client_oidxinstrument_nameBTC_USDTinstrument_nameETH_USDTquantity5sideBUYtypeMARKET".
The agent therefore signs only params written in a grammar under which paramString
reads back one way, as those very params (check_decodable; the exchange's side is
modelled in tests/adversarial/test_cryptocom_paramstring.py):

  * names: lower-case ASCII letters and '_', beginning and ending with a letter (a
    capital, a digit or an edge '_' could pass into the value beside it);
  * values: integers, or text that is not empty, does not begin with '_' and holds
    printable ASCII below 'a' only: no lower-case letter (where a name starts), none
    of {|}~, nothing beyond ASCII (what sorts after the letters could begin a name
    inside a value). null is refused: it is signed as the lower-case text "null";
  * lists: of such values, non-empty, not under a name the policy reads; or
    `order_list` on a batch method (create-/cancel-order-list, -oco, -oto, -otoco):
    non-empty objects of such members, the last parameter, each object beginning
    with a name that does not sort after the one the object before ends with, and on
    the create methods every object naming the same instrument_name;
  * no name ends with, without being, a name the policy reads (POLICY_NAMES), and no
    name but order_list contains "order_list".

What it guarantees. Lower-case letters are exactly the names' letters, so the signed
text splits one way: a name runs from a lower-case letter while letters and '_'
follow, its value to the next lower-case letter; the run that begins with
"order_list" is the batch and the first name of its first order, the batch runs to
the end, and its orders split where names stop increasing. So another params object
in the grammar with the same paramString is the same object (up to an integer sent
as its digits and the grouping of a list of text's elements, which the policy does
not read). A bot may also send objects outside the grammar. Assuming the values
Crypto.com acts on are in its own value grammar (symbols, numbers, enumerations: no
lower-case letter, not beginning with '_'), every name the policy reads that the
exchange acts on there has the value the policy checked: the name begins at a
lower-case letter, so inside a signed name, and ends where its value begins, at a
character that is neither a lower-case letter nor '_', so at the end of that signed
name, which by the last rule it is. The value ends where the next name of the same object begins:
that name sorts after it, so begins with a lower-case letter, which no value holds.

What is left, and assumed of the exchange. An object of order_list can be ended in
the middle of a value and the rest sent as further elements; Crypto.com refuses an
order without instrument_name, side and type, so only an order's last member, at or
after "type" (after every name the policy reads), can be cut short. A member with a
lower-case value can swallow the members between two orders, joining parts of both:
hence one instrument per create batch, so every size was checked against the caps of
the instrument it trades. Members of the last order that sort after "order_list" can
be sent at the top level, where the batch methods read only contingency_type and
order_list. Crypto.com reads parameters at the top level and in the objects of
order_list only, refuses a list where it takes one value, and reads new_quantity, not
quantity, on amend-order.
"""

from __future__ import annotations

import re

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import ccxt_json, json_object_body
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest

MAX_LEVEL = 3
JSON_CONTENT_TYPE = "application/json"
_ENVELOPE_KEYS = ("sig", "api_key")

# The names whose values the policy reads for Crypto.com (rules.py here: instrument_name for
# symbols at any depth; quantity and notional of create-order and of each order of a create
# batch; new_quantity of amend-order). A signed name must not END with one of them without being
# it: the exchange's reading of the signed text may start a name anywhere in a run of lower-case
# letters (after a lower-case value, or after a name of its own with an empty value), and the end
# of the run is where its value starts, so {"fee_instrument_name": "ETH_USDT"} also reads as
# {"fee_": "", "instrument_name": "ETH_USDT"}, a symbol the policy never saw. A name may contain
# one of them elsewhere ("quantity_x"): read there, its value would begin with '_' or a letter.
# price, side and type are not read by the policy for Crypto.com (quantity is always base,
# notional always quote), and guarding them would refuse ccxt's contingency_type, ref_price and
# new_price.
POLICY_NAMES = ("instrument_name", "quantity", "notional", "new_quantity")
# The one parameter that holds a list of objects (Crypto.com's batches), and the methods taking it.
LIST_NAME = "order_list"
_BATCH_METHOD = re.compile(r"private/(?:advanced/)?(create|cancel)-(?:order-list|oco|oto|otoco)", re.IGNORECASE)
# new_quantity ends with quantity: where the exchange reads new_quantity it does not read quantity.
_AMEND_METHOD = re.compile(r"private/(?:advanced/)?amend-order", re.IGNORECASE)
_NAME = re.compile(r"[a-z](?:[a-z_]*[a-z])?")
_SEPARATORS = "Crypto.com signs names and values with nothing between them"


class _Decimal(str):
    """A JSON number with a fraction or exponent, kept as text so it can be refused by name."""


def _params(request: UnsignedRequest) -> tuple[dict[str, object], str]:
    """(params, their JSON text for the body)."""
    if isinstance(request.body, RawBody) and request.body.text.strip() == "":
        return {}, "{}"
    params, text = json_object_body(request.body, "Crypto.com", parse_float=_Decimal)
    assert isinstance(params, dict)  # json_object_body without arrays=True: always an object
    return params, text


def param_string(params: dict[str, object], level: int = 0) -> str:
    """Crypto.com's paramString of a params object (the object itself is at LEVEL 0)."""
    out = []
    for name in sorted(params):
        value = params[name]
        out.append(name)
        if isinstance(value, list):
            out.extend(_element(item, level + 1, name) for item in value)
        elif isinstance(value, dict):
            raise RequestInvalid(
                f"param {name[:64]!r} is an object outside a list: Crypto.com's samples sign it differently "
                "(Python str(), JavaScript recursion); send it flattened or as text"
            )
        else:
            out.append(_scalar(value, name))
    return "".join(out)


def _element(item: object, level: int, name: str) -> str:
    if isinstance(item, list):
        raise RequestInvalid(f"param {name[:64]!r} has a list inside a list, which Crypto.com's samples do not sign")
    if isinstance(item, dict):
        if level >= MAX_LEVEL:
            raise RequestInvalid(
                f"param {name[:64]!r} nests objects deeper than Crypto.com signs (depth {MAX_LEVEL})"
            )
        return param_string(item, level)
    return _scalar(item, name)


def _scalar(value: object, name: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        raise RequestInvalid(
            f"param {name[:64]!r} is a boolean, which Crypto.com's samples sign differently "
            "(Python True, JavaScript true); send it as a string"
        )
    if isinstance(value, _Decimal):
        raise RequestInvalid(f"param {name[:64]!r} is a decimal number: send it as a string, as ccxt does")
    if isinstance(value, (str, int)):
        return str(value)
    raise RequestInvalid(f"param {name[:64]!r} has a value that cannot be signed")  # pragma: no cover


# -- the grammar under which paramString reads back one way (module docstring) ---------------------


def check_decodable(params: dict[str, object], method: str) -> None:
    """RequestInvalid unless PARAMS, to be signed for METHOD ("private/create-order"), are in the
    grammar of the module docstring: then their paramString reads back as exactly these params."""
    batch = _BATCH_METHOD.fullmatch(method)
    names = sorted(params)
    for name in names:
        value = params[name]
        _check_name(name, method)
        if name == LIST_NAME or (isinstance(value, list) and any(isinstance(item, dict) for item in value)):
            if name != LIST_NAME:
                raise RequestInvalid(
                    f"param {name[:64]!r} is a list of objects: Crypto.com takes those only as {LIST_NAME!r} "
                    "(its batches); send the objects' members as parameters of their own"
                )
            if batch is None:
                raise RequestInvalid(
                    f"{LIST_NAME!r} is taken by the batch methods only (create-order-list, cancel-order-list, "
                    "create-oco, create-oto, create-otoco): send one order per request to this method"
                )
            if name != names[-1]:
                raise RequestInvalid(
                    f"{LIST_NAME!r} must be the last parameter (here {names[-1][:64]!r} sorts after it): "
                    f"{_SEPARATORS}, so a parameter after the list would read as a member of its last "
                    "object; leave it out"
                )
            _check_batch(value, create=batch.group(1).lower() == "create")
        else:
            _check_value(name, value)


def _check_batch(orders: object, create: bool) -> None:
    if not isinstance(orders, list) or not orders or not all(isinstance(o, dict) and o for o in orders):
        raise RequestInvalid(
            f"{LIST_NAME!r} must be a non-empty list of non-empty objects (the orders): {_SEPARATORS}, "
            "and an empty list or object, or text beside the objects, would let the names around it "
            "read otherwise"
        )
    previous = ""  # the last name of the object before
    for index, order in enumerate(orders, 1):
        names = sorted(order)
        # The list's name and the first name of its first object are one run of lower-case letters.
        _check_name(LIST_NAME + names[0], "", first=names[0])
        if previous and names[0] > previous:
            raise RequestInvalid(
                f"objects {index - 1} and {index} of {LIST_NAME!r} would read as one order: {_SEPARATORS}, "
                f"and the exchange's reading starts a new object where names stop increasing, but "
                f"{previous[:64]!r} ends object {index - 1} and {names[0][:64]!r} begins object {index}; "
                "give every object the same parameters (each then begins no later than the one before ends)"
            )
        for name in names:
            _check_name(name, "")
            if name == LIST_NAME:
                raise RequestInvalid(f"object {index} of {LIST_NAME!r} has a member named {LIST_NAME!r}: rename it")
            value = order[name]
            if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(i, dict) for i in value)):
                raise RequestInvalid(
                    f"member {name[:64]!r} of object {index} of {LIST_NAME!r} holds an object: Crypto.com's "
                    "orders hold text, integers and lists of them; flatten it"
                )
            _check_value(name, value)
        previous = names[-1]
    if create:
        if not all("instrument_name" in order for order in orders):
            raise RequestInvalid(
                f"every order of a create batch must name its instrument_name: {_SEPARATORS}, so the members "
                "of an order without one can be regrouped with those of the order before it"
            )
        instruments = {str(order["instrument_name"]) for order in orders}
        if len(instruments) > 1:
            raise RequestInvalid(
                f"the orders of a create batch name several instruments ({', '.join(sorted(instruments))[:120]}): "
                f"{_SEPARATORS}, so the members of one order can be regrouped with those of the next, and a "
                "size checked on one instrument would trade on another; send one batch per instrument"
            )


def _check_name(name: str, method: str, first: str | None = None) -> None:
    """NAME, a parameter name (or, with FIRST, the run of the list's name and FIRST, the first name
    of its first object, which the signed text joins with nothing in between)."""
    if first is None and not _NAME.fullmatch(name):
        raise RequestInvalid(
            f"param name {name[:64]!r} must be lower-case ASCII letters and '_', beginning and ending with a "
            f"letter: {_SEPARATORS}, and this is how a name is told from its value (a capital, a digit or an "
            "edge '_' could pass into the value beside it)"
        )
    if first is None and LIST_NAME in name and name != LIST_NAME:
        raise RequestInvalid(
            f"param name {name[:64]!r} contains {LIST_NAME!r}: {_SEPARATORS}, so part of it could be read as "
            "Crypto.com's batch list; rename or leave it out"
        )
    for read in POLICY_NAMES:
        if not name.endswith(read) or name == read or (first is not None and first.endswith(read)):
            continue
        if read == "quantity" and name == "new_quantity" and _AMEND_METHOD.fullmatch(method):
            continue  # amend-order reads new_quantity, not quantity
        what = f"param name {name[:64]!r}" if first is None else (
            f"{LIST_NAME!r} followed by the first name of its first object, {first[:64]!r},")
        raise RequestInvalid(
            f"{what} ends with {read!r}, a name the agent's policy reads: {_SEPARATORS}, so the same "
            f"signature also covers {{{name[:-len(read)][:64]!r}: '', {read!r}: ...}}, a {read} the policy "
            "never saw; leave it out" + (" (new_quantity belongs to amend-order)" if name == "new_quantity" else "")
        )


def _check_value(name: str, value: object) -> None:
    if isinstance(value, list):
        if name in POLICY_NAMES:
            raise RequestInvalid(
                f"param {name[:64]!r} is a list: it takes one value, and {_SEPARATORS} or between the "
                "elements of a list, which could be split otherwise; send one value per request"
            )
        if not value:
            raise RequestInvalid(
                f"param {name[:64]!r} is an empty list: {_SEPARATORS}, so the name would run into the next "
                "one; leave it out"
            )
        for item in value:
            if isinstance(item, list):
                raise RequestInvalid(
                    f"param {name[:64]!r} has a list inside a list, which Crypto.com's samples do not sign"
                )
            _check_scalar(name, item)
    elif isinstance(value, dict):
        raise RequestInvalid(
            f"param {name[:64]!r} is an object outside a list: Crypto.com's samples sign it differently "
            "(Python str(), JavaScript recursion); send it flattened or as text"
        )
    else:
        _check_scalar(name, value)


def _check_scalar(name: str, value: object) -> None:
    if value is None:
        raise RequestInvalid(
            f"param {name[:64]!r} is null: Crypto.com signs it as the lower-case text 'null', which reads as "
            "part of a name; leave the parameter out"
        )
    _scalar(value, name)  # booleans and decimal numbers are refused there
    if not isinstance(value, str):
        return  # an integer: its digits (and '-') are in the grammar
    if value == "":
        raise RequestInvalid(
            f"param {name[:64]!r} is empty: {_SEPARATORS}, so the name would run into the next one; "
            "leave it out or give it a value"
        )
    if value[0] == "_":
        raise RequestInvalid(
            f"param {name[:64]!r} begins with '_': {_SEPARATORS}, so the '_' could be read as the end of "
            "the name; send the value without it"
        )
    for char in value:
        if "a" <= char <= "z":
            raise RequestInvalid(
                f"param {name[:64]!r} has the lower-case letter {char!r} in its value: {_SEPARATORS}, and "
                "lower-case letters are what tells a name from a value, so names could be read inside it; "
                "send the value in upper case (client order ids: capitals, digits, '-', '_')"
            )
        if not " " <= char <= "`":
            raise RequestInvalid(
                f"param {name[:64]!r} has the character {char!r} in its value: Crypto.com's values take "
                "printable ASCII other than lower-case letters and {|}~ here (characters that sort after the "
                "letters could begin a name inside the value); send it without"
            )


def _method(path: str) -> str:
    index = path.find("/private/")
    if index < 0 or path.endswith("/private/"):
        raise RequestInvalid(
            "path must end with the private method, e.g. /exchange/v1/private/user-balance "
            "(Crypto.com signs the method name from 'private/' on)"
        )
    return path[index + 1:]


class CryptocomScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.method != "POST":
            raise RequestInvalid("Crypto.com private methods are POST requests with a JSON body")
        if request.query:
            raise RequestInvalid("Crypto.com takes private params in the JSON body; move the query into 'body'")
        method = _method(request.path)
        params, params_text = _params(request)
        present = [name for name in _ENVELOPE_KEYS if name in params]
        if present:
            raise RequestInvalid(
                f"remove {present[0]!r}: give only the method's params; "
                "the agent adds id, method, api_key, sig and nonce"
            )
        check_decodable(params, method)
        signed_params = param_string(params)
        nonce = str(key.nonce(env.now_ms))
        message = method + nonce + key.api_key + signed_params + nonce
        sig = key.mac(message.encode("utf-8"), "sha256").hex()
        body = (
            f'{{"id":{ccxt_json(nonce)},"method":{ccxt_json(method)},"params":{params_text},'
            f'"api_key":{ccxt_json(key.api_key)},"sig":{ccxt_json(sig)},"nonce":{ccxt_json(nonce)}}}'
        )
        return SignedRequest(
            method="POST", path=request.path, headers=(("Content-Type", JSON_CONTENT_TYPE),), body=body
        )


SCHEME = CryptocomScheme()
