"""Client order ids: how Send places an order at most once and finds out what became of it.

An order whose answer is lost (the connection broke, the exchange did not answer in time) may have
been placed. Sending it again could place it twice, so the agent never does. Instead, where the
exchange takes a client order id, every order the agent sends carries one (the bot's, or one the
agent makes, unique), and after a lost answer the agent asks the exchange for the order by that id:

    found    the lookup's answer is returned, marked `reconciled` (ccxt parses it as an order)
    absent   the exchange said, in its documented words, that it has no such order (yet)
    unknown  anything else: the order's fate is not known

Neither of the last two is "not placed": an exchange may still act on a request it received
before the lookup. The bot is told the client order id so it can look again, or send the order
again WITH that id (the exchange refuses a second order with an id it already has).

An exchange is listed here only where its documentation names the parameter, its lookup and its
"no such order" answer; elsewhere a lost order's answer is DEADLINE_EXCEEDED, not re-sent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from signing_agent_client.request import RawBody, UnsignedRequest

FOUND, ABSENT, UNKNOWN = "found", "absent", "unknown"


@dataclass(frozen=True)
class ClientIds:
    places: frozenset[tuple[str, str]]  # (method, path) of the order placement endpoints
    param: str  # the client order id's parameter name
    make: Callable[[], str]  # a fresh id in the exchange's alphabet and length
    lookup: Callable[[UnsignedRequest, str], UnsignedRequest]  # the read of the order by its id
    state: Callable[[int, bytes], str]  # FOUND, ABSENT or UNKNOWN from the lookup's answer


def _hex_id(prefix: str, length: int) -> Callable[[], str]:
    """PREFIX and random hex, LENGTH characters in all: letters and digits every exchange here takes."""
    return lambda: (prefix + os.urandom(length).hex())[:length]


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def param(request: UnsignedRequest, name: str) -> str | None:
    """The value of parameter NAME in REQUEST's query, form body or top-level JSON body."""
    for n, v in request.query:
        if n == name:
            return v
    body = request.body
    if isinstance(body, RawBody):
        parsed = _json(body.text.encode())
        value = parsed.get(name) if isinstance(parsed, dict) else None
        return value if isinstance(value, str) else None
    for n, v in body or ():
        if n == name:
            return v
    return None


def with_param(request: UnsignedRequest, name: str, value: str) -> UnsignedRequest:
    """REQUEST with NAME=VALUE added where its parameters are (JSON body, form body, or query)."""
    body = request.body
    if isinstance(body, RawBody):
        parsed = _json(body.text.encode()) if body.text.strip() else {}
        if not isinstance(parsed, dict):
            return request  # not an object: left as the bot sent it (the rules read it as it is)
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
    symbol = param(request, "symbol") or ""
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
                           query=(("instId", param(request, "instId") or ""), ("clOrdId", client_id)))


def _okx_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if not isinstance(parsed, dict):
        return UNKNOWN
    if status == 200 and parsed.get("code") == "0" and parsed.get("data"):
        return FOUND
    return ABSENT if parsed.get("code") == "51603" else UNKNOWN  # "Order does not exist"


def _bybit_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/v5/order/realtime",
                           query=(("category", param(request, "category") or ""), ("orderLinkId", client_id)))


def _bybit_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status != 200 or not isinstance(parsed, dict) or parsed.get("retCode") != 0:
        return UNKNOWN
    found = (parsed.get("result") or {}).get("list")
    return FOUND if found else ABSENT if found == [] else UNKNOWN


def _htx_lookup(request: UnsignedRequest, client_id: str) -> UnsignedRequest:
    return UnsignedRequest("GET", "/v1/order/orders/getClientOrder", query=(("clientOrderId", client_id),))


def _htx_state(status: int, body: bytes) -> str:
    parsed = _json(body)
    if status != 200 or not isinstance(parsed, dict):
        return UNKNOWN
    if parsed.get("status") == "ok" and isinstance(parsed.get("data"), dict):
        return FOUND
    return ABSENT if parsed.get("err-code") == "base-record-invalid" else UNKNOWN  # "record invalid"


_BINANCE = ClientIds(places=frozenset({("POST", "/api/v3/order"), ("POST", "/fapi/v1/order")}),
                     param="newClientOrderId", make=_hex_id("sa", 32), lookup=_binance_lookup,
                     state=_binance_state)
REGISTRY: dict[str, ClientIds] = {
    "binance": _BINANCE, "binanceusdm": _BINANCE, "binanceus": _BINANCE,
    "okx": ClientIds(places=frozenset({("POST", "/api/v5/trade/order")}), param="clOrdId",
                     make=_hex_id("sa", 32), lookup=_okx_lookup, state=_okx_state),
    "htx": ClientIds(places=frozenset({("POST", "/v1/order/orders/place")}), param="client-order-id",
                     make=_hex_id("sa", 32), lookup=_htx_lookup, state=_htx_state),
    "bybit": ClientIds(places=frozenset({("POST", "/v5/order/create")}), param="orderLinkId",
                       make=_hex_id("sa", 36), lookup=_bybit_lookup, state=_bybit_state),
}


def for_request(exchange_id: str, request: UnsignedRequest) -> ClientIds | None:
    """The client-id rules when REQUEST places an order on an exchange that takes a client order id."""
    found = REGISTRY.get(exchange_id)
    return found if found is not None and (request.method, request.path) in found.places else None
