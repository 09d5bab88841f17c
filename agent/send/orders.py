"""Client order ids: how Send places an order at most once and finds out what became of it.

An order whose answer is lost (the connection broke, the exchange did not answer in time) may have
been placed. Sending it again could place it twice, so the agent never does. Instead, where the
exchange takes a client order id, every order the agent sends carries one (the bot's, or one the
agent makes, unique), and after a lost answer the agent asks the exchange for the order by that id:

    found    the lookup's answer is returned, marked `reconciled`: the exchange's read of the order, in that
             read's shape (Deribit's is a list of the orders with the label, Bybit's a list too)
    absent   the exchange said, in its documented words, that it has no such order (yet)
    unknown  anything else: the order's fate is not known

Neither of the last two is "not placed": an exchange may still act on a request it received
before the lookup. The bot is told the client order id so it can look again, or send the order
again WITH that id (the exchange refuses a second order with an id it already has).

An exchange is listed here only where its documentation names the parameter and a way to find the
order by it; elsewhere a lost order's answer is DEADLINE_EXCEEDED, not re-sent. The lookup's answer is
called ABSENT only where the exchange documents its "no such order" answer; elsewhere (and where an
order that is no longer open is not found by its client id, as on Gate) anything but the order is UNKNOWN.
Coinbase has no read by client order id: its documented answer to an order whose client_order_id it
already has is that order, not a second one, so its lookup is the same order, signed afresh.

A bot's own id is kept when it has the form the exchange documents (FORM), else refused
(INVALID_ARGUMENT) before anything is signed: an id the exchange would refuse, or one that could not be
looked up, defeats the point. Where the exchange documents no form (Bitget, MEXC, Coinbase, Bitstamp, Deribit), the
agent's bound is letters, digits, '_' and '-', at most 64 (ccxt's ids fit): a lookup may carry the id
in a signed query or path, where other characters are refused or ambiguous.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from urllib.parse import quote

from agent.schemes.encoding import form_pairs
from signing_agent_client.request import RawBody, RequestInvalid, UnsignedRequest

FOUND, ABSENT, UNKNOWN = "found", "absent", "unknown"


@dataclass(frozen=True)
class ClientIds:
    places: re.Pattern[str]  # "METHOD path" of the order placement endpoints (fullmatch)
    param: str  # the client order id's parameter name
    make: Callable[[], str]  # a fresh id in the exchange's alphabet and length
    lookup: Callable[[UnsignedRequest, str], UnsignedRequest]  # the read of the order by its id
    state: Callable[[int, bytes], str]  # FOUND, ABSENT or UNKNOWN from the lookup's answer
    valid: re.Pattern[str]  # the ids the exchange takes (fullmatch)
    form: str  # VALID in words, for the refusal of a bot's id
    # Whether the exchange refuses a second order with an id it already has, so that sending the order
    # again with the same id is safe: not Deribit (a label may be shared by many orders by design), nor
    # Crypto.com (its documentation does not say).
    refuses_reuse: bool = True

    def checked(self, exchange_name: str, client_id: object) -> str:
        """CLIENT_ID (the bot's) when the exchange takes it; RequestInvalid naming the form if not."""
        if isinstance(client_id, str) and self.valid.fullmatch(client_id):
            return client_id
        shown = repr(client_id)[:70]
        raise RequestInvalid(f"{self.param} {shown} is not a client order id {exchange_name} takes ({self.form}): "
                             f"send one of that form, or none (the agent then makes one)")


def _hex_id(prefix: str, length: int) -> Callable[[], str]:
    """PREFIX and random hex, LENGTH characters in all: letters and digits every exchange here takes."""
    return lambda: (prefix + os.urandom(length).hex())[:length]


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _json_order(text: str) -> dict | None:
    """The order of a JSON body: its top-level object, or the one object of a one-element array (OKX's
    batch-orders with one order, which ccxt's create_order sends)."""
    parsed = _json(text.encode())
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    return parsed if isinstance(parsed, dict) else None


def _is_json(text: str) -> bool:
    """Whether a raw body is JSON (or empty): else it is a raw form body, as ccxt sends Binance's, MEXC's
    and Bitstamp's orders (text the agent signs byte for byte)."""
    return text.lstrip()[:1] in ("{", "[", "")


def _raw_form(text: str) -> list[tuple[str, str]] | None:
    """The pairs of a raw form body, None where it does not read one way (the signer refuses it then)."""
    try:
        return form_pairs(text, "the exchange")
    except RequestInvalid:
        return None


def param(request: UnsignedRequest, name: str) -> object:
    """The value of parameter NAME in REQUEST's query, form body (pairs or raw text) or JSON body
    (_json_order), None if absent. A JSON value is returned as it is (not always a string)."""
    for n, v in request.query:
        if n == name:
            return v
    body = request.body
    if isinstance(body, RawBody):
        if not _is_json(body.text):
            return dict(_raw_form(body.text) or ()).get(name)
        order = _json_order(body.text)
        return order.get(name) if order is not None else None
    for n, v in body or ():
        if n == name:
            return v
    return None


def text_param(request: UnsignedRequest, name: str) -> str:
    """Parameter NAME as text, "" when absent or not a string (for building a lookup)."""
    value = param(request, name)
    return value if isinstance(value, str) else ""


def with_param(request: UnsignedRequest, name: str, value: str) -> UnsignedRequest:
    """REQUEST with NAME=VALUE added where its parameters are (JSON body, form body, raw form body, or query)."""
    body = request.body
    if isinstance(body, RawBody) and not _is_json(body.text):
        if _raw_form(body.text) is None:
            return request  # not a form that reads one way: left as it is, for the signer to refuse
        text = f"{body.text}&{quote(name, safe='')}={quote(value, safe='')}"  # the bot's bytes kept before it
        return UnsignedRequest(request.method, request.path, query=request.query, body=RawBody(text))
    if isinstance(body, RawBody):
        parsed = _json(body.text.encode()) if body.text.strip() else {}
        if not isinstance(parsed, dict):
            return request  # not an object (a batch): left as the bot sent it; the caller sees no id in it
        # Added as text before the closing brace: the bot's bytes stay as they were (no number or
        # spacing rewritten by a JSON round trip), and the rules read the result as usual.
        text = body.text.strip() or "{}"
        member = json.dumps(name) + ":" + json.dumps(value)
        head = text[:-1].rstrip()
        text = head + ("," if parsed else "") + member + "}"
        return UnsignedRequest(request.method, request.path, query=request.query, body=RawBody(text))
    if body is not None:
        return UnsignedRequest(request.method, request.path, query=request.query, body=(*body, (name, value)))
    return UnsignedRequest(request.method, request.path, query=(*request.query, (name, value)), body=None)


# -- the exchanges ---------------------------------------------------------------------------------


def _binance_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    symbol = text_param(request, "symbol")
    return UnsignedRequest("GET", request.path, query=(("symbol", symbol), ("origClientOrderId", client_id)))


def _binance_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status == 200 and isinstance(parsed, dict) and "orderId" in parsed:
        return FOUND
    if isinstance(parsed, dict) and parsed.get("code") == -2013:  # "Order does not exist."
        return ABSENT
    return UNKNOWN


def _okx_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/api/v5/trade/order",
                           query=(("instId", text_param(request, "instId")), ("clOrdId", client_id)))


def _okx_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if not isinstance(parsed, dict):
        return UNKNOWN
    data = parsed.get("data")
    if status == 200 and parsed.get("code") == "0" and isinstance(data, list) and data and isinstance(data[0], dict):
        return FOUND
    return ABSENT if parsed.get("code") == "51603" else UNKNOWN  # "Order does not exist"


def _bybit_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/v5/order/realtime",
                           query=(("category", text_param(request, "category")), ("orderLinkId", client_id)))


def _bybit_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status != 200 or not isinstance(parsed, dict) or parsed.get("retCode") != 0:
        return UNKNOWN
    result = parsed.get("result")
    found = result.get("list") if isinstance(result, dict) else None
    return FOUND if isinstance(found, list) and found else ABSENT if found == [] else UNKNOWN


def _htx_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/v1/order/orders/getClientOrder", query=(("clientOrderId", client_id),))


def _htx_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status != 200 or not isinstance(parsed, dict):
        return UNKNOWN
    if parsed.get("status") == "ok" and isinstance(parsed.get("data"), dict):
        return FOUND
    return ABSENT if parsed.get("err-code") == "base-record-invalid" else UNKNOWN  # "record invalid"


def _kucoin_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    if request.path == "/api/v1/hf/orders":
        return UnsignedRequest("GET", f"/api/v1/hf/orders/client-order/{client_id}",
                               query=(("symbol", text_param(request, "symbol")),))
    return UnsignedRequest("GET", f"/api/v1/order/client-order/{client_id}")


def _kucoin_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    found = status == 200 and isinstance(parsed, dict) and parsed.get("code") == "200000" and isinstance(
        parsed.get("data"), dict) and parsed["data"].get("id")
    return FOUND if found else UNKNOWN


def _gate_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    # Gate reads an order by its `text` in place of its id (GET /spot/orders/{order_id}).
    return UnsignedRequest("GET", f"/api/v4/spot/orders/{client_id}",
                           query=(("currency_pair", text_param(request, "currency_pair")),))


def _gate_state(status: int, body: bytes) -> str:
    # ORDER_NOT_FOUND is not ABSENT: Gate finds an order by its text only while it is open.
    parsed = _json(body)
    return FOUND if status == 200 and isinstance(parsed, dict) and parsed.get("id") else UNKNOWN


def _bitget_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/api/v2/spot/trade/orderInfo", query=(("clientOid", client_id),))


def _bitget_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    ok = status == 200 and isinstance(parsed, dict) and parsed.get("code") == "00000"
    return FOUND if ok and isinstance(parsed.get("data"), list) and parsed["data"] else UNKNOWN


def _mexc_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    return FOUND if status == 200 and isinstance(parsed, dict) and "orderId" in parsed else UNKNOWN


def _coinbase_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    # The same order again: Coinbase answers an order whose client_order_id it has with that order
    # ("the order will not be created and the order corresponding with that ID will be returned").
    return request


def _coinbase_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status != 200 or not isinstance(parsed, dict) or parsed.get("success") is not True:
        return UNKNOWN
    placed = parsed.get("success_response")
    return FOUND if isinstance(placed, dict) and placed.get("order_id") else UNKNOWN


def _cryptocom_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    # private/get-order-detail takes order_id or client_oid (Crypto.com Exchange v1 REST reference,
    # exchange-docs.crypto.com/exchange/v1/rest-ws/index.html#private-get-order-detail). The body is the
    # params object, as for every Crypto.com request here (agent.exchanges.cryptocom.scheme).
    root = request.path[:-len("create-order")]
    return UnsignedRequest("POST", root + "get-order-detail", body=RawBody(json.dumps({"client_oid": client_id})))


def _cryptocom_state(status: int, body: bytes) -> str:
    # Crypto.com's "no such order" (INVALID_ORDERID, 212) is not documented as meaning "never placed".
    parsed = _json(body)
    result = parsed.get("result") if isinstance(parsed, dict) else None
    ok = status == 200 and isinstance(parsed, dict) and parsed.get("code") == 0
    return FOUND if ok and isinstance(result, dict) and result.get("order_id") else UNKNOWN


def _deribit_currency(instrument: str) -> str:
    """The currency Deribit files INSTRUMENT's orders under: BTC-PERPETUAL and BTC-27DEC24-60000-C under
    BTC, the linear BTC_USDC-PERPETUAL under USDC (its settlement currency)."""
    head = instrument.split("-", 1)[0]
    return head.rsplit("_", 1)[-1]


def _deribit_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    # private/get_order_state_by_label: currency (required) and label; it answers the recent orders with
    # that label as a list (docs.deribit.com/api-reference/trading/private-get_order_state_by_label).
    currency = _deribit_currency(text_param(request, "instrument_name"))
    return UnsignedRequest("GET", "/api/v2/private/get_order_state_by_label",
                           query=(("currency", currency), ("label", client_id)))


def _deribit_state(status: int, body: bytes) -> str:
    # An empty list is not ABSENT: Deribit lists "recent" orders by label only.
    parsed = _json(body)
    result = parsed.get("result") if isinstance(parsed, dict) else None
    if status != 200 or not isinstance(result, list):
        return UNKNOWN
    return FOUND if any(isinstance(o, dict) and o.get("order_id") for o in result) else UNKNOWN


def _bitstamp_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    # POST /api/v2/order_status/ takes id or client_order_id, in the form body (Bitstamp's API reference,
    # www.bitstamp.net/api, "Order status"; its codes 400.015/400.008 name the parameter).
    return UnsignedRequest("POST", "/api/v2/order_status/", body=(("client_order_id", client_id),))


def _bitstamp_state(status: int, body: bytes) -> str:
    # Bitstamp's errors are {"status": "error", "reason", "code"}; "Order not found." is not "never placed".
    parsed = _json(body)
    ok = status == 200 and isinstance(parsed, dict) and parsed.get("status") != "error"
    return FOUND if ok and parsed.get("id") else UNKNOWN


def _at(*endpoints: tuple[str, str]) -> re.Pattern[str]:
    """The pattern of these exact (method, path) endpoints, for ClientIds.places."""
    return re.compile("|".join(re.escape(f"{method} {path}") for method, path in endpoints))


def _form(alphabet: str, words: str, longest: int, prefix: str = "") -> tuple[re.Pattern[str], str]:
    lead = f"{prefix!r} then " if prefix else ""
    return re.compile(f"{re.escape(prefix)}[{alphabet}]{{1,{longest}}}"), f"{lead}1-{longest} {words}"


_ALNUM = ("A-Za-z0-9", "letters or digits")
_DASHED = ("A-Za-z0-9_-", "letters, digits, '_' or '-'")
_UNDOCUMENTED = _form(*_DASHED, 64)  # the agent's bound where the exchange documents none (module docstring)
_BINANCE = ClientIds(_at(("POST", "/api/v3/order"), ("POST", "/fapi/v1/order")), "newClientOrderId",
                     _hex_id("sa", 32), _binance_lookup, _binance_state,
                     *_form("A-Za-z0-9.:/_-", "letters, digits or '.:/_-'", 36))
# Crypto.com's signed text reads a lower-case letter as the start of a parameter name, so the agent
# signs no value with one, nor one beginning with '_' (agent.exchanges.cryptocom.scheme): its ids are
# capitals, digits, '_' and '-', at most 36 (Crypto.com's bound on client_oid).
_CRYPTOCOM_FORM = (re.compile(r"[A-Z0-9-][A-Z0-9_-]{0,35}"),
                   "1-36 capital letters, digits, '_' or '-', not beginning with '_'")


def _cryptocom_id() -> str:
    return _hex_id("SA", 32)().upper()


REGISTRY: dict[str, ClientIds] = {
    "binance": _BINANCE, "binanceusdm": _BINANCE, "binanceus": _BINANCE,
    # OKX: ccxt's create_order sends one order as a batch
    "okx": ClientIds(_at(("POST", "/api/v5/trade/order"), ("POST", "/api/v5/trade/batch-orders")),
                     "clOrdId", _hex_id("sa", 32), _okx_lookup, _okx_state, *_form(*_ALNUM, 32)),
    "htx": ClientIds(_at(("POST", "/v1/order/orders/place")), "client-order-id", _hex_id("sa", 32),
                     _htx_lookup, _htx_state, *_form(*_DASHED, 64)),
    "bybit": ClientIds(_at(("POST", "/v5/order/create")), "orderLinkId", _hex_id("sa", 36),
                       _bybit_lookup, _bybit_state, *_form(*_DASHED, 36)),
    "kucoin": ClientIds(_at(("POST", "/api/v1/orders"), ("POST", "/api/v1/hf/orders")), "clientOid",
                        _hex_id("sa", 32), _kucoin_lookup, _kucoin_state, *_form(*_DASHED, 40)),
    "gate": ClientIds(_at(("POST", "/api/v4/spot/orders")), "text", _hex_id("t-sa", 30), _gate_lookup,
                      _gate_state, *_form("A-Za-z0-9_.-", "letters, digits or '_.-'", 28, prefix="t-")),
    "bitget": ClientIds(_at(("POST", "/api/v2/spot/trade/place-order")), "clientOid", _hex_id("sa", 32),
                        _bitget_lookup, _bitget_state, *_UNDOCUMENTED),
    "mexc": ClientIds(_at(("POST", "/api/v3/order")), "newClientOrderId", _hex_id("sa", 32),
                      _binance_lookup, _mexc_state, *_UNDOCUMENTED),
    "coinbase": ClientIds(_at(("POST", "/api/v3/brokerage/orders")), "client_order_id", _hex_id("sa", 32),
                          _coinbase_lookup, _coinbase_state, *_UNDOCUMENTED),
    "cryptocom": ClientIds(_at(("POST", "/exchange/v1/private/create-order")), "client_oid",
                           _cryptocom_id, _cryptocom_lookup, _cryptocom_state, *_CRYPTOCOM_FORM, refuses_reuse=False),
    # Bitstamp's orders name their pair in the path: /api/v2/buy/btcusd/, /api/v2/sell/market/ethusd/.
    # client_order_id has no documented form; Bitstamp refuses one it already has (400.019).
    "bitstamp": ClientIds(re.compile(r"POST /api/v2/(buy|sell)/(market/)?[a-z0-9]+/"), "client_order_id",
                          _hex_id("sa", 32), _bitstamp_lookup, _bitstamp_state, *_UNDOCUMENTED),
    # Deribit's label: at most 64 characters, no alphabet documented (the agent's bound, as above).
    "deribit": ClientIds(_at(("GET", "/api/v2/private/buy"), ("GET", "/api/v2/private/sell")), "label",
                         _hex_id("sa", 32), _deribit_lookup, _deribit_state, *_UNDOCUMENTED,
                         refuses_reuse=False),
}


def for_request(exchange_id: str, request: UnsignedRequest) -> ClientIds | None:
    """The client-id rules when REQUEST places an order on an exchange that takes a client order id."""
    found = REGISTRY.get(exchange_id)
    return found if found is not None and found.places.fullmatch(f"{request.method} {request.path}") else None
