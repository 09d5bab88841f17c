"""A local exchange for tests: an HTTP(S) server on 127.0.0.1 that checks every private request's
signature the way the exchange would, answers in the exchange's response shape, and records what it
verified.

    from support.exchange_server import ExchangeServer, binance_spot
    from support.reference import hmac_credential

    with ExchangeServer() as server:
        url = server.add(binance_spot(), hmac_credential("binance", api_key, secret))
        ...                                   # point the bot at URL (instead of https://api.binance.com)
        assert server.verified("binance")     # every private request it saw, with the verdict

How a signature is checked. The bytes the exchange verifies are the model of
tests/support/exchange_readers.py (READERS: written from each exchange's documentation), never the
agent's scheme. The MAC over them is computed by tests/support/reference.py's SoftwareCredential, which holds
the secret in memory as the exchange does. SIGNATURES says, per exchange, where the request carries its
signature and which MAC and encoding it is; `verify()` compares the two. So a request verifies here
only if an independent model of the exchange accepts it.

Families. A `Family` is one exchange as the server plays it: the exchange id (its reader and
signature), the host the real exchange answers on (`host`: what a TLS certificate names and what a
send-mode agent would connect to), and its routes: (METHOD, path) -> a `Route` holding the recorded
response shape (a JSON value, or a function of the `Received` request for answers that echo it) and
whether the route is private (signature checked). Each family gets its own listening port, so paths of
two exchanges never clash; `server.url(exchange)` is its base URL. The families below: binance_spot()
(also MEXC spot), binance_usdm(), htx_spot(), coinbase_advanced(), okx_spot(), bybit_spot(), kucoin_spot(),
gate_spot(), bitget_spot(), kraken_spot(), bitfinex_spot(), bitstamp_spot(), cryptocom_spot(),
deribit_perpetual(), gemini_spot() and mexc_spot_and_futures() (MEXC's futures on its spot family's port), each with its order placement, amend and cancel where ccxt calls them, and its read of
an order by client order id. Add a route with `family.route("GET", "/api/v3/openOrders", [])`; a path
ending in `/{id}` matches any last segment (an order id in the path). `family.headers` go on every
answer (the exchange's rate-limit headers, for a test).

Failure hooks, for the bot's retry and timeout paths (each applies to the next TIMES matching
requests, then is gone): `fail(exchange, status, headers=..., body=...)` (a 429 with Retry-After, a
503...), `delay(exchange, seconds)` (a slow answer), `drop(exchange)` (the request is acted on, an
order accepted, and the connection closed without an answer: the lost answer a send-mode agent must
reconcile). Orders are kept by client order id (`Family.orders`), so an order can be looked up by it
(Binance GET /api/v3/order?origClientOrderId=...) and a test can count what was placed. A request
with a bad signature gets the family's `unauthorized` answer (its status and body as the exchange documents it).

Coinbase CDP keys' JWTs are checked with the key's public half (`_verify_jwt`). Not checked (yet):
passphrase headers (OKX, KuCoin, Bitget), the freshness of timestamps and receive windows, and nonces growing per key.

TLS: `ExchangeServer(tls=TestCA(tmp_path))` serves HTTPS with a certificate for each family's host
and 127.0.0.1, signed by a throw-away CA whose certificate is `TestCA.ca_file`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from support.exchange_readers import READERS, Http
from support.reference import SoftwareCredential

# -- where each exchange reads the signature, and how it computes it -------------------------------


def _param(name: str) -> Callable[[Http], str | None]:
    """The value of the one NAME= segment of the query or the form body (as sent, not decoded)."""

    def read(http: Http) -> str | None:
        found = [seg[len(name) + 1:] for text in (http.query, http.body) for seg in text.split("&")
                 if seg.startswith(name + "=")]
        return found[0] if len(found) == 1 else None

    return read


def _header(name: str) -> Callable[[Http], str | None]:
    return lambda http: http.header(name) or None


def _deribit_sig(http: Http) -> str | None:
    scheme, _, fields = http.header("Authorization").partition(" ")
    values = dict(part.split("=", 1) for part in fields.split(",") if "=" in part)
    return values.get("sig") if scheme == "deri-hmac-sha256" else None


def _percent_decoded(read: Callable[[Http], str | None]) -> Callable[[Http], str | None]:
    return lambda http: None if read(http) is None else unquote(read(http))


def _cryptocom_sig(http: Http) -> str | None:
    try:
        return json.loads(http.body).get("sig")
    except (ValueError, AttributeError):
        return None


def _cryptocom_message(http: Http) -> bytes | None:
    """method + id + api_key + paramString + nonce, paramString as Crypto.com documents it (param_text of
    test_cryptocom_paramstring.py, written from its samples)."""
    from adversarial.test_cryptocom_paramstring import param_text

    try:
        body = json.loads(http.body, parse_float=Decimal)
        return (f"{body['method']}{body['id']}{body['api_key']}{param_text(body.get('params') or {})}"
                f"{body['nonce']}").encode()
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Signature:
    """Where an exchange reads the signature (READ), the HMAC's hash, and how the MAC is written.
    MESSAGE: the signed bytes, where the exchange's reader does not give them (Crypto.com's reader
    reads the body back; the paramString prehash is built here from the documented paramString)."""

    read: Callable[[Http], str | None]
    hash_name: str
    encoding: str  # "hex" (compared case-insensitively) or "base64"
    message: Callable[[Http], bytes | None] | None = None


_BINANCE = Signature(_param("signature"), "sha256", "hex")
SIGNATURES: dict[str, Signature] = {
    "binance": _BINANCE, "binanceusdm": _BINANCE, "binanceus": _BINANCE, "binancetr": _BINANCE,
    "okx": Signature(_header("OK-ACCESS-SIGN"), "sha256", "base64"),
    "kucoin": Signature(_header("KC-API-SIGN"), "sha256", "base64"),
    "kucoinfutures": Signature(_header("KC-API-SIGN"), "sha256", "base64"),
    "bitget": Signature(_header("ACCESS-SIGN"), "sha256", "base64"),
    "bybit": Signature(_header("X-BAPI-SIGN"), "sha256", "hex"),
    "gate": Signature(_header("SIGN"), "sha512", "hex"),
    "htx": Signature(_percent_decoded(_param("Signature")), "sha256", "base64"),
    "kraken": Signature(_header("API-Sign"), "sha512", "base64"),
    "bitfinex": Signature(_header("bfx-signature"), "sha384", "hex"),
    "gemini": Signature(_header("X-GEMINI-SIGNATURE"), "sha384", "hex"),
    "bitstamp": Signature(_header("X-Auth-Signature"), "sha256", "hex"),
    "deribit": Signature(_deribit_sig, "sha256", "hex"),
    "coinbase": Signature(_header("CB-ACCESS-SIGN"), "sha256", "hex"),  # legacy HMAC keys (CDP JWTs: _verify_jwt)
    "cryptocom": Signature(_cryptocom_sig, "sha256", "hex", _cryptocom_message),
}
# MEXC signs spot like Binance (the `signature` parameter) and futures in a header; its reader tells them apart.
_MEXC_CONTRACT = Signature(_header("Signature"), "sha256", "hex")


def _signature_of(exchange: str, http: Http) -> Signature | None:
    if exchange == "mexc":
        return _MEXC_CONTRACT if http.header("Request-Time") else _BINANCE
    return SIGNATURES.get(exchange)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str  # what was checked, or why it failed (never the secret, never the expected MAC)


def _verify_jwt(http: Http, credential: SoftwareCredential, now: float) -> Verdict:
    """A Coinbase CDP key's JWT, as Coinbase checks it: the signature under the registered public key,
    the key id, the lifetime, and the one thing it binds, `METHOD host path` (the reader's model)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    parts = http.header("Authorization")[len("Bearer "):].split(".")
    if len(parts) != 3:
        return Verdict(False, "the bearer token is not a JWT")

    def b64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    header, claims, signature = json.loads(b64(parts[0])), json.loads(b64(parts[1])), b64(parts[2])
    public = credential.private_key.public_key()
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, f"{parts[0]}.{parts[1]}".encode())
        else:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return Verdict(False, "the JWT's signature does not verify under the key's public key")
    if header.get("kid") != credential.api_key or claims.get("sub") != credential.api_key:
        return Verdict(False, "the JWT names another key")
    if not claims.get("nbf", 0) - 5 <= now <= claims.get("exp", 0):
        return Verdict(False, "the JWT is not valid now")
    if READERS["coinbase"].verified(http) is None:
        return Verdict(False, "the JWT's uri is not this request's METHOD host path")
    return Verdict(True, "JWT signature, key id, lifetime and uri match (the body and query are not covered)")


def verify(exchange: str, http: Http, credential: SoftwareCredential) -> Verdict:
    """Does HTTP carry a valid signature for CREDENTIAL, as EXCHANGE verifies it?"""
    if exchange == "coinbase" and http.header("Authorization").startswith("Bearer "):
        return _verify_jwt(http, credential, time.time())
    signature = _signature_of(exchange, http)
    reader = READERS.get(exchange)
    if signature is None or reader is None:
        return Verdict(False, f"{exchange}: signature check not modelled")
    sent = signature.read(http)
    if not sent:
        return Verdict(False, "no signature where the exchange reads it")
    message = signature.message(http) if signature.message else reader.verified(http)
    if message is None:
        return Verdict(False, "the exchange cannot rebuild the signed bytes from this request")
    mac = credential.mac(message, signature.hash_name)
    if signature.encoding == "hex":
        ok = hmac.compare_digest(sent.lower(), mac.hex())
    else:
        ok = hmac.compare_digest(sent, base64.b64encode(mac).decode())
    return Verdict(ok, f"{signature.hash_name} HMAC over {len(message)} bytes " + ("matches" if ok else "differs"))


# -- families: routes and response shapes ------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the server received it, and what it made of it."""

    exchange: str
    http: Http
    private: bool
    verdict: Verdict | None  # None for a public route
    status: int

    @property
    def params(self) -> dict[str, str]:
        """The query and form-body parameters (the last of a repeated name), decoded."""
        pairs = parse_qsl(self.http.query, keep_blank_values=True)
        if self.http.body and not self.http.body.lstrip().startswith(("{", "[")):
            pairs += parse_qsl(self.http.body, keep_blank_values=True)
        return dict(pairs)


Answer = Any  # a JSON value, or a function of the Received request returning one (or a Reply)


@dataclass(frozen=True)
class Reply:
    """An answer whose status is not the route's (a lookup that finds no such order)."""

    status: int
    body: Any


@dataclass(frozen=True)
class Route:
    response: Answer
    private: bool = True
    status: int = 200


@dataclass
class Family:
    """One exchange as the server plays it (see the module docstring)."""

    exchange: str
    host: str
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    # The exchange's answer to a request whose signature does not verify: (status, body).
    unauthorized: tuple[int, Any] = (401, {"error": "invalid signature"})
    not_found: tuple[int, Any] = (404, {"error": "no such endpoint"})
    # Orders accepted, by client order id (in the order they came): lookups read it, tests count it.
    orders: dict[str, dict] = field(default_factory=dict)
    # Headers on every answer of this family (a test sets the exchange's rate-limit headers here).
    headers: dict[str, str] = field(default_factory=dict)

    def route(self, method: str, path: str, response: Answer, *, private: bool = True, status: int = 200) -> "Family":
        """PATH may end in a segment `{id}`, which matches any one segment (the order id in the path)."""
        self.routes[(method, path)] = Route(response, private, status)
        return self

    def find(self, method: str, path: str) -> Route | None:
        found = self.routes.get((method, path))
        if found is None:
            head, _, last = path.rpartition("/")
            found = self.routes.get((method, head + "/{id}")) if last else None
        return found

    def order_by_id(self, order_id: str) -> tuple[str, dict] | None:
        """(client order id, order) of the order the exchange numbered ORDER_ID."""
        return next(((cid, o) for cid, o in self.orders.items() if o.get("_id") == order_id), None)

    def next_id(self) -> str:
        return str(7_000_000 + len(self.orders))


def binance_spot(exchange: str = "binance", host: str = "api.binance.com") -> Family:
    """Binance spot (also what ccxt's load_markets, fetch_balance and create_order call), with response
    shapes as Binance's REST documentation (spot, /api/v3) shows them. Orders are kept by
    newClientOrderId, and GET /api/v3/order finds one by origClientOrderId (-2013 when there is none);
    DELETE /api/v3/order cancels one. MEXC spot copies these paths and shapes:
    binance_spot("mexc", "api.mexc.com")."""
    btcusdt = {
        "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
        "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"},
            {"filterType": "NOTIONAL", "minNotional": "5.00", "applyMinToMarket": True,
             "maxNotional": "9000000.00", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
    }

    def order(req: Received) -> dict:
        p = req.params
        placed = {"symbol": p.get("symbol"), "orderId": 28, "orderListId": -1,
                  "clientOrderId": p.get("newClientOrderId", "x-local-1"), "transactTime": int(p["timestamp"]),
                  "price": p.get("price", "0"), "origQty": p.get("quantity", "0"), "executedQty": "0",
                  "cummulativeQuoteQty": "0", "status": "NEW", "timeInForce": p.get("timeInForce", "GTC"),
                  "type": p.get("type"), "side": p.get("side"), "workingTime": int(p["timestamp"]), "fills": [],
                  "selfTradePreventionMode": "NONE"}
        if req.status == 200:
            family.orders[placed["clientOrderId"]] = placed
        return placed

    def lookup(req: Received) -> Any:
        found = family.orders.get(req.params.get("origClientOrderId", ""))
        return found if found is not None else Reply(400, {"code": -2013, "msg": "Order does not exist."})

    def cancel(req: Received) -> Any:
        found = family.orders.get(req.params.get("origClientOrderId", ""))
        if found is None:
            return Reply(400, {"code": -2011, "msg": "Unknown order sent."})
        if req.status == 200:
            found["status"] = "CANCELED"
        return {**found, "origClientOrderId": found["clientOrderId"], "status": "CANCELED"}

    account = {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": False,
               "canDeposit": True, "accountType": "SPOT", "permissions": ["SPOT"],
               "balances": [{"asset": "BTC", "free": "0.50000000", "locked": "0.00000000"},
                            {"asset": "USDT", "free": "10000.00000000", "locked": "0.00000000"}]}
    family = (Family(exchange, host,
                     unauthorized=(401, {"code": -1022, "msg": "Signature for this request is not valid."}),
                     not_found=(404, {"code": -1100, "msg": "no such endpoint"}))
              .route("GET", "/api/v3/exchangeInfo", lambda _: {"timezone": "UTC", "serverTime": int(time.time() * 1000),
                                                               "rateLimits": [], "symbols": [btcusdt]}, private=False)
              .route("GET", "/api/v3/account", account)
              .route("POST", "/api/v3/order", order)
              .route("GET", "/api/v3/order", lookup)
              .route("DELETE", "/api/v3/order", cancel)
              .route("GET", "/api/v3/openOrders", []))
    return family


def binance_usdm() -> Family:
    """Binance USD-M futures (fapi.binance.com): place, modify (PUT: price and quantity of a LIMIT order,
    in place), cancel and the query by origClientOrderId or orderId, in the response shape of Binance's
    USD-M REST documentation (Trade > New Order, Modify Order, Cancel Order, Query Order). Form-encoded
    parameters, as on spot; -2013 "Order does not exist." and -2011 "Unknown order sent." as documented."""

    def shown(order: dict) -> dict:
        return {k: v for k, v in order.items() if not k.startswith("_")}

    def place(req: Received) -> dict:
        p = req.params
        now = int(time.time() * 1000)
        order = _keep(family, req, p.get("newClientOrderId", ""), {
            "symbol": p.get("symbol"), "status": "NEW", "clientOrderId": p.get("newClientOrderId", ""),
            "price": p.get("price", "0"), "avgPrice": "0.00", "origQty": p.get("quantity", "0"), "executedQty": "0",
            "cumQty": "0", "cumQuote": "0", "timeInForce": p.get("timeInForce", "GTC"), "type": p.get("type"),
            "reduceOnly": p.get("reduceOnly", "false") == "true", "closePosition": False, "side": p.get("side"),
            "positionSide": p.get("positionSide", "BOTH"), "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": p.get("type"), "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "updateTime": now})
        order["orderId"] = int(order["_id"])
        return shown(order)

    def known(req: Received) -> dict | None:
        p = req.params
        if p.get("origClientOrderId"):
            return family.orders.get(p["origClientOrderId"])
        return (family.order_by_id(p.get("orderId", "")) or (None, None))[1]

    def query(req: Received) -> Any:
        found = known(req)
        return shown(found) if found else Reply(400, {"code": -2013, "msg": "Order does not exist."})

    def modify(req: Received) -> Any:
        found = known(req)
        if found is None:
            return Reply(400, {"code": -2013, "msg": "Order does not exist."})
        change = {"origQty": req.params.get("quantity", found["origQty"]), "price": req.params.get("price", found["price"])}
        if req.status == 200:
            found.update(change)
        return shown({**found, **change})

    def cancel(req: Received) -> Any:
        found = known(req)
        if found is None:
            return Reply(400, {"code": -2011, "msg": "Unknown order sent."})
        if req.status == 200:
            found["status"] = "CANCELED"
        return shown({**found, "status": "CANCELED"})

    family = (Family("binanceusdm", "fapi.binance.com",
                     unauthorized=(401, {"code": -1022, "msg": "Signature for this request is not valid."}),
                     not_found=(404, {"code": -1100, "msg": "no such endpoint"}))
              .route("POST", "/fapi/v1/order", place)
              .route("PUT", "/fapi/v1/order", modify)
              .route("DELETE", "/fapi/v1/order", cancel)
              .route("GET", "/fapi/v1/order", query))
    return family


def htx_spot() -> Family:
    """HTX spot (api.huobi.pro), with the response shapes of HTX's spot REST documentation. The body of
    an order is read as JSON, as HTX reads it: the signature (in the query) does not cover it."""

    def place(req: Received) -> dict:
        body = json.loads(req.http.body or "{}")
        order_id = str(1000 + len(family.orders))
        if req.status == 200:
            family.orders[body.get("client-order-id") or order_id] = {**body, "id": order_id}
        return {"status": "ok", "data": order_id}

    def lookup(req: Received) -> dict:
        found = family.orders.get(req.params.get("clientOrderId", ""))
        if found is None:
            return {"status": "error", "err-code": "base-record-invalid", "err-msg": "record invalid", "data": None}
        return {"status": "ok", "data": {"id": int(found["id"]), "symbol": found.get("symbol"),
                                         "account-id": int(found.get("account-id", 0)), "amount": found.get("amount"),
                                         "price": found.get("price"), "type": found.get("type"),
                                         "client-order-id": found.get("client-order-id"), "state": "submitted",
                                         "created-at": int(time.time() * 1000), "field-amount": "0.0",
                                         "field-cash-amount": "0.0", "field-fees": "0.0", "source": "spot-api"}}

    family = (Family("htx", "api.huobi.pro",
                     unauthorized=(200, {"status": "error", "err-code": "api-signature-not-valid",
                                         "err-msg": "Signature not valid: Incorrect Access key [Access key错误]",
                                         "data": None}),
                     not_found=(404, {"status": "error", "err-code": "invalid-parameter"}))
              .route("GET", "/v1/account/accounts", {"status": "ok", "data": [
                  {"id": 10000001, "type": "spot", "subtype": "", "state": "working"}]})
              .route("POST", "/v1/order/orders/place", place)
              .route("GET", "/v1/order/orders/getClientOrder", lookup))
    return family


def coinbase_advanced() -> Family:
    """Coinbase Advanced Trade (api.coinbase.com), CDP keys: a JWT per request (see _verify_jwt). The
    body is read as JSON, as Coinbase reads it: the JWT does not cover it. An order whose client_order_id
    it already has is answered with that order and not placed again, as Coinbase documents."""

    def create(req: Received) -> dict:
        body = json.loads(req.http.body or "{}")
        known = family.orders.get(body.get("client_order_id", ""))
        if known is not None:  # documented: "the order corresponding with that ID will be returned instead"
            body, order_id = known, known["order_id"]
        else:
            order_id = f"11111111-0000-0000-0000-{len(family.orders):012d}"
        if req.status == 200 and known is None:
            family.orders[body.get("client_order_id", order_id)] = {**body, "order_id": order_id}
        return {"success": True, "success_response": {
            "order_id": order_id, "product_id": body.get("product_id"), "side": body.get("side"),
            "client_order_id": body.get("client_order_id")}, "order_configuration": body.get("order_configuration")}

    family = (Family("coinbase", "api.coinbase.com",
                     unauthorized=(401, {"error": "unauthorized", "message": "Unauthorized"}),
                     not_found=(404, {"error": "NOT_FOUND", "message": "Not Found"}))
              .route("GET", "/api/v3/brokerage/accounts", {"accounts": [], "has_next": False, "cursor": "",
                                                          "size": 0})
              .route("POST", "/api/v3/brokerage/orders", create))
    return family


def _json_body(req: Received) -> Any:
    try:
        return json.loads(req.http.body or "{}")
    except ValueError:
        return {}


def _keep(family: Family, req: Received, client_id: str, order: dict) -> dict:
    """ORDER, numbered and kept under CLIENT_ID when the request was accepted (not a fault's answer)."""
    order = {**order, "_id": family.next_id()}
    if req.status == 200:
        family.orders[client_id or order["_id"]] = order
    return order


def okx_spot() -> Family:
    """OKX v5 (www.okx.com): place (one order, or a batch as ccxt's create_order sends), amend, cancel,
    and the read by clOrdId (51603 "Order does not exist" when there is none), in OKX's response shapes."""

    def ack(order: dict, code: str = "0") -> dict:
        return {"clOrdId": order.get("clOrdId", ""), "ordId": order["_id"], "tag": order.get("tag", ""),
                "ts": str(int(time.time() * 1000)), "sCode": code, "sMsg": "Order placed" if code == "0" else ""}

    def place(req: Received) -> dict:
        body = _json_body(req)
        placed = [_keep(family, req, o.get("clOrdId", ""), {**o, "state": "live"})
                  for o in (body if isinstance(body, list) else [body])]
        return {"code": "0", "msg": "", "data": [ack(o) for o in placed], "inTime": "", "outTime": ""}

    def change(state: str | None) -> Callable[[Received], Any]:
        def answer(req: Received) -> Any:
            body = _json_body(req)
            found = (family.orders.get(body.get("clOrdId", "")) if body.get("clOrdId")
                     else (family.order_by_id(str(body.get("ordId"))) or (None, None))[1])
            if found is None:
                return {"code": "1", "msg": "", "data": [{"clOrdId": "", "ordId": "", "sCode": "51603",
                                                          "sMsg": "Order does not exist"}]}
            if req.status == 200:
                found.update({"sz": body.get("newSz", found.get("sz")), "px": body.get("newPx", found.get("px"))})
                found["state"] = state or found["state"]
            return {"code": "0", "msg": "", "data": [{**ack(found), "reqId": body.get("reqId", "")}]}
        return answer

    def lookup(req: Received) -> Any:
        found = family.orders.get(req.params.get("clOrdId", ""))
        if found is None:
            return {"code": "51603", "msg": "Order does not exist", "data": []}
        return {"code": "0", "msg": "", "data": [{
            "instId": found.get("instId"), "ordId": found["_id"], "clOrdId": found.get("clOrdId", ""),
            "tag": found.get("tag", ""), "px": found.get("px", ""), "sz": found.get("sz"),
            "ordType": found.get("ordType"), "side": found.get("side"), "tdMode": found.get("tdMode"),
            "state": found["state"], "accFillSz": "0", "avgPx": "", "fee": "0", "feeCcy": "USDT",
            "cTime": str(int(time.time() * 1000)), "uTime": str(int(time.time() * 1000))}]}

    family = (Family("okx", "www.okx.com", unauthorized=(401, {"msg": "Invalid Sign", "code": "50113"}),
                     not_found=(404, {"msg": "Not Found", "code": "50000"}))
              .route("POST", "/api/v5/trade/order", place)
              .route("POST", "/api/v5/trade/batch-orders", place)
              .route("POST", "/api/v5/trade/amend-order", change(None))
              .route("POST", "/api/v5/trade/cancel-order", change("canceled"))
              .route("GET", "/api/v5/trade/order", lookup))
    return family


def bybit_spot() -> Family:
    """Bybit v5 (api.bybit.com), spot: create, amend, cancel, and GET /v5/order/realtime by orderLinkId
    (an empty list when there is none), in Bybit's response shapes."""

    def result(data: Any, code: int = 0, message: str = "OK") -> dict:
        return {"retCode": code, "retMsg": message, "result": data, "retExtInfo": {},
                "time": int(time.time() * 1000)}

    def create(req: Received) -> dict:
        body = _json_body(req)
        order = _keep(family, req, body.get("orderLinkId", ""), {**body, "orderStatus": "New"})
        return result({"orderId": order["_id"], "orderLinkId": body.get("orderLinkId", "")})

    def change(status: str | None) -> Callable[[Received], Any]:
        def answer(req: Received) -> Any:
            body = _json_body(req)
            found = (family.orders.get(body.get("orderLinkId", "")) if body.get("orderLinkId")
                     else (family.order_by_id(str(body.get("orderId"))) or (None, None))[1])
            if found is None:
                return result({}, 110001, "Order does not exist.")
            if req.status == 200:
                found.update({k: body[k] for k in ("qty", "price") if k in body})
                found["orderStatus"] = status or found["orderStatus"]
            return result({"orderId": found["_id"], "orderLinkId": found.get("orderLinkId", "")})
        return answer

    def realtime(req: Received) -> dict:
        found = family.orders.get(req.params.get("orderLinkId", ""))
        listed = [] if found is None else [{
            "orderId": found["_id"], "orderLinkId": found.get("orderLinkId", ""), "symbol": found.get("symbol"),
            "price": found.get("price", "0"), "qty": found.get("qty"), "side": found.get("side"),
            "orderType": found.get("orderType"), "orderStatus": found["orderStatus"], "cumExecQty": "0",
            "cumExecValue": "0", "avgPrice": "", "timeInForce": "GTC", "createdTime": str(int(time.time() * 1000)),
            "updatedTime": str(int(time.time() * 1000))}]
        return result({"category": req.params.get("category", "spot"), "list": listed, "nextPageCursor": ""})

    family = (Family("bybit", "api.bybit.com", unauthorized=(401, {"retCode": 10004, "retMsg": "error sign!",
                                                                  "result": {}, "retExtInfo": {}, "time": 0}),
                     not_found=(404, {"retCode": 10000, "retMsg": "Not Found"}))
              .route("POST", "/v5/order/create", create)
              .route("POST", "/v5/order/amend", change(None))
              .route("POST", "/v5/order/cancel", change("Cancelled"))
              .route("GET", "/v5/order/realtime", realtime))
    return family


def kucoin_spot() -> Family:
    """KuCoin spot (api.kucoin.com): POST /api/v1/orders, the HF amend ccxt's edit_order calls, cancel by
    order id, and the read by clientOid, in KuCoin's response shapes."""

    def place(req: Received) -> dict:
        body = _json_body(req)
        order = _keep(family, req, body.get("clientOid", ""), {**body, "isActive": True})
        return {"code": "200000", "data": {"orderId": order["_id"]}}

    def alter(req: Received) -> Any:
        body = _json_body(req)
        known = (family.orders.get(body.get("clientOid", "")) if body.get("clientOid")
                 else (family.order_by_id(str(body.get("orderId"))) or (None, None))[1])
        if known is None:
            return Reply(404, {"code": "400100", "msg": "The order does not exist."})
        if req.status == 200:
            known.update({"size": body.get("newSize", known.get("size")), "price": body.get("newPrice", known.get("price"))})
        return {"code": "200000", "data": {"newOrderId": known["_id"], "clientOid": known.get("clientOid", "")}}

    def cancel(req: Received) -> Any:
        order_id = req.http.path.rsplit("/", 1)[1]
        known = family.order_by_id(order_id)
        if known is None:
            return Reply(404, {"code": "400100", "msg": "The order does not exist."})
        if req.status == 200:
            known[1]["isActive"] = False
        return {"code": "200000", "data": {"cancelledOrderIds": [order_id]}}

    def lookup(req: Received) -> Any:
        found = family.orders.get(req.http.path.rsplit("/", 1)[1])
        if found is None:
            return Reply(404, {"code": "400100", "msg": "The order does not exist."})
        return {"code": "200000", "data": {
            "id": found["_id"], "symbol": found.get("symbol"), "opType": "DEAL", "type": found.get("type"),
            "side": found.get("side"), "price": found.get("price"), "size": found.get("size"), "dealSize": "0",
            "dealFunds": "0", "fee": "0", "feeCurrency": "USDT", "timeInForce": "GTC", "isActive": found["isActive"],
            "cancelExist": not found["isActive"], "clientOid": found.get("clientOid"),
            "createdAt": int(time.time() * 1000)}}

    family = (Family("kucoin", "api.kucoin.com", unauthorized=(401, {"code": "400005", "msg": "Invalid KC-API-SIGN"}),
                     not_found=(404, {"code": "404000", "msg": "Not Found"}))
              .route("POST", "/api/v1/orders", place)
              .route("POST", "/api/v1/hf/orders/alter", alter)
              .route("DELETE", "/api/v1/orders/{id}", cancel)
              .route("GET", "/api/v1/order/client-order/{id}", lookup))
    return family


def gate_spot() -> Family:
    """Gate v4 spot (api.gateio.ws): place, amend (PATCH, as ccxt's edit_order sends it), cancel, and the
    read of an order by id or by its `text` (ORDER_NOT_FOUND when there is none), in Gate's order shape."""

    def shown(order: dict) -> dict:
        now = int(time.time() * 1000)
        return {"id": order["_id"], "text": order.get("text", ""), "currency_pair": order.get("currency_pair"),
                "type": order.get("type", "limit"), "account": order.get("account", "spot"), "side": order.get("side"),
                "amount": order.get("amount"), "price": order.get("price"), "time_in_force": "gtc",
                "left": order.get("amount"), "filled_total": "0", "fee": "0", "fee_currency": "BTC",
                "status": order["status"], "create_time_ms": now, "update_time_ms": now}

    def place(req: Received) -> dict:
        body = _json_body(req)
        return shown(_keep(family, req, body.get("text", ""), {**body, "status": "open"}))

    def by_id(req: Received) -> dict | None:
        key = req.http.path.rsplit("/", 1)[1]
        return family.orders.get(key) or (family.order_by_id(key) or (None, None))[1]

    def read(req: Received) -> Any:
        found = by_id(req)
        return shown(found) if found else Reply(404, {"label": "ORDER_NOT_FOUND", "message": "Order not found"})

    def cancel(req: Received) -> Any:
        found = by_id(req)
        if found is None:
            return Reply(404, {"label": "ORDER_NOT_FOUND", "message": "Order not found"})
        if req.status == 200:
            found["status"] = "cancelled"
        return shown({**found, "status": "cancelled"})

    def amend(req: Received) -> Any:
        # PATCH /spot/orders/{order_id}: amount and/or price change in place (the order keeps its id and
        # text), answered with the order as Gate shows it. ccxt sends the fields in the query and the body.
        found = by_id(req)
        if found is None:
            return Reply(404, {"label": "ORDER_NOT_FOUND", "message": "Order not found"})
        change = {k: v for k, v in {**req.params, **_json_body(req)}.items() if k in ("amount", "price")}
        if req.status == 200:
            found.update(change)
        return shown({**found, **change})

    family = (Family("gate", "api.gateio.ws",
                     unauthorized=(401, {"label": "INVALID_SIGNATURE", "message": "Signature mismatch"}),
                     not_found=(404, {"label": "NOT_FOUND", "message": "Not found"}))
              .route("POST", "/api/v4/spot/orders", place)
              .route("GET", "/api/v4/spot/orders/{id}", read)
              .route("PATCH", "/api/v4/spot/orders/{id}", amend)
              .route("DELETE", "/api/v4/spot/orders/{id}", cancel))
    return family


def bitget_spot() -> Family:
    """Bitget v2 spot (api.bitget.com): place, cancel-replace (ccxt's edit_order), cancel, and the read
    by clientOid, in Bitget's response shapes."""

    def answer(data: Any) -> dict:
        return {"code": "00000", "msg": "success", "requestTime": int(time.time() * 1000), "data": data}

    def place(req: Received) -> dict:
        body = _json_body(req)
        order = _keep(family, req, body.get("clientOid", ""), {**body, "status": "live"})
        return answer({"orderId": order["_id"], "clientOid": body.get("clientOid", "")})

    def known(body: dict) -> dict | None:
        if body.get("clientOid"):
            return family.orders.get(body["clientOid"])
        return (family.order_by_id(str(body.get("orderId"))) or (None, None))[1]

    def replace_order(req: Received) -> Any:
        body = _json_body(req)
        old = known(body)
        if old is None:
            return Reply(400, {"code": "43001", "msg": "The order does not exist", "data": None})
        if req.status == 200:
            old["status"] = "cancelled"
        new = _keep(family, req, body.get("newClientOid", ""), {**old, **body, "clientOid": body.get("newClientOid", ""),
                                                                "status": "live"})
        return answer({"orderId": new["_id"], "clientOid": new.get("clientOid", ""), "success": "success", "msg": None})

    def cancel(req: Received) -> Any:
        found = known(_json_body(req))
        if found is None:
            return Reply(400, {"code": "43001", "msg": "The order does not exist", "data": None})
        if req.status == 200:
            found["status"] = "cancelled"
        return answer({"orderId": found["_id"], "clientOid": found.get("clientOid", "")})

    def info(req: Received) -> dict:
        found = family.orders.get(req.params.get("clientOid", ""))
        now = str(int(time.time() * 1000))
        return answer([] if found is None else [{
            "userId": "1", "symbol": found.get("symbol"), "orderId": found["_id"], "clientOid": found.get("clientOid"),
            "price": found.get("price"), "size": found.get("size"), "orderType": found.get("orderType"),
            "side": found.get("side"), "status": found["status"], "priceAvg": "0", "baseVolume": "0",
            "quoteVolume": "0", "enterPointSource": "API", "feeDetail": "", "orderSource": "normal",
            "cTime": now, "uTime": now}])

    family = (Family("bitget", "api.bitget.com",
                     unauthorized=(400, {"code": "40009", "msg": "sign signature error", "data": None}),
                     not_found=(404, {"code": "40404", "msg": "Request URL NOT FOUND", "data": None}))
              .route("POST", "/api/v2/spot/trade/place-order", place)
              .route("POST", "/api/v2/spot/trade/cancel-replace-order", replace_order)
              .route("POST", "/api/v2/spot/trade/cancel-order", cancel)
              .route("GET", "/api/v2/spot/trade/orderInfo", info))
    return family


def _by_client_or_id(family: Family, client_id: object, order_id: object) -> dict | None:
    """The order kept under CLIENT_ID (when given), else the one the exchange numbered ORDER_ID."""
    if client_id not in (None, ""):
        return family.orders.get(str(client_id))
    return (family.order_by_id(str(order_id)) or (None, None))[1]


def _acted(req: Received, found: dict | None, missing: Callable[[], Any], answer: Callable[[dict], Any],
           **change: Any) -> Any:
    """The answer to an amend or cancel of FOUND (MISSING's when there is none); CHANGE is kept on the
    order only when the request was accepted (not a fault's answer)."""
    if found is None:
        return missing()
    if req.status == 200:
        found.update(change)
    return answer({**found, **change})


def kraken_spot() -> Family:
    """Kraken spot (api.kraken.com): AddOrder, AmendOrder (in place: the order keeps its txid and the
    answer names the amend), CancelOrder, by txid or cl_ord_id, in Kraken's answer shape ({"error": [],
    "result": ...}, errors with HTTP 200)."""

    def result(data: Any) -> dict:
        return {"error": [], "result": data}

    def add(req: Received) -> dict:
        p = req.params
        order = _keep(family, req, p.get("cl_ord_id", ""), {**p, "status": "open"})
        order["_id"] = f"OQCLML-BW3P3-{int(order['_id']):06d}"[-19:]
        descr = f"{p.get('type')} {p.get('volume')} {p.get('pair')} @ {p.get('ordertype')} {p.get('price')}"
        return result({"descr": {"order": descr}, "txid": [order["_id"]]})

    def known(req: Received) -> dict | None:
        return _by_client_or_id(family, req.params.get("cl_ord_id"), req.params.get("txid"))

    def amend(req: Received) -> dict:
        found = known(req)
        if found is None:
            return {"error": ["EOrder:Unknown order"]}
        change = {k: req.params[n] for k, n in (("volume", "order_qty"), ("price", "limit_price")) if n in req.params}
        if req.status == 200:
            found.update(change)
        return result({"amend_id": f"TJSMEH-AA67V-{len(family.orders):06d}"})

    def cancel(req: Received) -> dict:
        found = known(req)
        if found is None:
            return {"error": ["EOrder:Unknown order"]}
        if req.status == 200:
            found["status"] = "canceled"
        return result({"count": 1})

    family = (Family("kraken", "api.kraken.com", unauthorized=(200, {"error": ["EAPI:Invalid signature"]}),
                     not_found=(404, {"error": ["EGeneral:Unknown method"]}))
              .route("POST", "/0/private/AddOrder", add)
              .route("POST", "/0/private/AmendOrder", amend)
              .route("POST", "/0/private/CancelOrder", cancel))
    return family


def bitfinex_spot() -> Family:
    """Bitfinex v2 (api.bitfinex.com): order submit, update (in place) and cancel, answered with the
    notification arrays of Bitfinex's REST v2 reference ([MTS, TYPE, MESSAGE_ID, null, ORDERS, CODE,
    STATUS, TEXT]; an order is the 32-field order array)."""

    def array(order: dict) -> list:
        now = int(time.time() * 1000)
        amount = order.get("amount")
        return [int(order["_id"]), None, order.get("cid"), order.get("symbol"), now, now, amount, amount,
                order.get("type"), None, None, None, 0, order["status"], None, None, float(order.get("price", 0)),
                0, 0, 0, None, None, None, 0, 0, None, None, None, "API>BFX", None, None, {}]

    def note(kind: str, orders: Any, text: str) -> list:
        return [int(time.time() * 1000), kind, None, None, orders, None, "SUCCESS", text]

    def submit(req: Received) -> list:
        body = _json_body(req)
        order = _keep(family, req, str(body.get("cid", "")), {**body, "status": "ACTIVE"})
        return note("on-req", [array(order)], "Submitting 1 orders.")

    def change(kind: str, status: str | None) -> Callable[[Received], Any]:
        def answer(req: Received) -> Any:
            body = _json_body(req)
            found = _by_client_or_id(family, body.get("cid"), body.get("id"))
            if found is None:
                return Reply(500, ["error", 10001, "Order not found."])
            if req.status == 200:
                found.update({k: body[k] for k in ("amount", "price") if k in body})
                found["status"] = status or found["status"]
            return note(kind, array(found), "Submitted for cancellation; waiting for confirmation."
                        if status else "Submitting update to exchange limit buy order for 0.02 BTC.")
        return answer

    family = (Family("bitfinex", "api.bitfinex.com", unauthorized=(500, ["error", 10100, "apikey: invalid"]),
                     not_found=(404, ["error", 10020, "request: not found"]))
              .route("POST", "/v2/auth/w/order/submit", submit)
              .route("POST", "/v2/auth/w/order/update", change("ou-req", None))
              .route("POST", "/v2/auth/w/order/cancel", change("oc-req", "CANCELED")))
    return family


def bitstamp_spot() -> Family:
    """Bitstamp v2 (www.bitstamp.net): a limit buy on /api/v2/buy/{pair}/, replace_order (the order is
    cancelled and a new one placed, with a new id), cancel_order, and order_status by client_order_id,
    in Bitstamp's answer shapes (form parameters; errors {"status": "error", "reason", "code"})."""

    def shown(order: dict) -> dict:
        return {"id": order["_id"], "datetime": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime()),
                "type": "0", "price": order.get("price"), "amount": order.get("amount"),
                "client_order_id": order.get("client_order_id", ""), "market": "BTC/USD"}

    def buy(req: Received) -> dict:
        p = req.params
        return shown(_keep(family, req, p.get("client_order_id", ""), {**p, "status": "Open"}))

    def known(req: Received) -> dict | None:
        return _by_client_or_id(family, req.params.get("client_order_id"), req.params.get("id"))

    def missing() -> Reply:
        return Reply(400, {"status": "error", "reason": "Order not found.", "code": "API0014"})

    def replace_order(req: Received) -> Any:
        old = known(req)
        if old is None:
            return missing()
        if req.status == 200:
            old["status"] = "Canceled"
        new_id = req.params.get("client_order_id", "")
        fields = {k: req.params[k] for k in ("amount", "price") if k in req.params}
        return shown(_keep(family, req, new_id, {**old, **fields, "client_order_id": new_id, "status": "Open"}))

    def cancel(req: Received) -> Any:
        return _acted(req, known(req), missing, lambda o: {"id": int(o["_id"]), "amount": o.get("amount"),
                                                           "price": o.get("price"), "type": 0, "market": "BTC/USD"},
                      status="Canceled")

    def status(req: Received) -> Any:
        found = known(req)
        if found is None:
            return missing()
        return {"id": found["_id"], "datetime": shown(found)["datetime"], "type": "0", "status": found["status"],
                "market": "BTC/USD", "transactions": [], "amount_remaining": found.get("amount"),
                "client_order_id": found.get("client_order_id", "")}

    family = (Family("bitstamp", "www.bitstamp.net",
                     unauthorized=(403, {"status": "error", "reason": "Invalid signature", "code": "API0005"}),
                     not_found=(404, {"status": "error", "reason": "Not found", "code": "API0001"}))
              .route("POST", "/api/v2/buy/btcusd/", buy)
              .route("POST", "/api/v2/replace_order/", replace_order)
              .route("POST", "/api/v2/cancel_order/", cancel)
              .route("POST", "/api/v2/order_status/", status))
    return family


def cryptocom_spot() -> Family:
    """Crypto.com Exchange v1 (api.crypto.com): private/create-order, amend-order (in place),
    cancel-order and get-order-detail (by order_id or client_oid), each answered as {"id", "method",
    "code": 0, "result"} from the request's own id and method, as Crypto.com documents."""
    # The signed text's model (_cryptocom_message) is imported now, not at the first request: its import
    # (hypothesis) takes longer than a send-mode agent's read timeout on a loaded machine.
    from adversarial.test_cryptocom_paramstring import param_text  # noqa: F401

    def rpc(req: Received, result: Any, code: int = 0, message: str = "") -> Any:
        body = _json_body(req)
        answer = {"id": body.get("id"), "method": body.get("method"), "code": code}
        return {**answer, "result": result} if code == 0 else Reply(400, {**answer, "message": message})

    def params(req: Received) -> dict:
        inner = _json_body(req).get("params")
        return inner if isinstance(inner, dict) else {}

    def ids(order: dict) -> dict:
        return {"client_oid": order.get("client_oid", ""), "order_id": order["_id"]}

    def create(req: Received) -> Any:
        p = params(req)
        return rpc(req, ids(_keep(family, req, p.get("client_oid", ""), {**p, "status": "ACTIVE"})))

    def change(status: str | None) -> Callable[[Received], Any]:
        def answer(req: Received) -> Any:
            p = params(req)
            found = _by_client_or_id(family, p.get("client_oid") if not p.get("order_id") else None, p.get("order_id"))
            if found is None:
                return rpc(req, None, 212, "INVALID_ORDERID")
            if req.status == 200:
                found.update({k: p["new_" + k] for k in ("quantity", "price") if "new_" + k in p})
                found["status"] = status or found["status"]
            return rpc(req, ids(found))
        return answer

    def detail(req: Received) -> Any:
        p = params(req)
        found = _by_client_or_id(family, p.get("client_oid"), p.get("order_id"))
        if found is None:
            return rpc(req, None, 212, "INVALID_ORDERID")
        now = int(time.time() * 1000)
        return rpc(req, {**ids(found), "account_id": "1", "order_type": found.get("type"),
                         "time_in_force": "GOOD_TILL_CANCEL", "side": found.get("side"), "exec_inst": [],
                         "quantity": found.get("quantity"), "limit_price": found.get("price"),
                         "order_value": "0", "avg_price": "0", "cumulative_quantity": "0", "cumulative_value": "0",
                         "cumulative_fee": "0", "status": found["status"], "update_user_id": "1",
                         "order_date": time.strftime("%Y-%m-%d", time.gmtime()), "instrument_name":
                         found.get("instrument_name"), "fee_instrument_name": "USD", "create_time": now,
                         "create_time_ns": str(now * 1_000_000), "update_time": now})

    root = "/exchange/v1/private/"
    family = (Family("cryptocom", "api.crypto.com",
                     unauthorized=(401, {"id": -1, "code": 40101, "message": "Authentication failure"}),
                     not_found=(404, {"id": -1, "code": 40401, "message": "Not found"}))
              .route("POST", root + "create-order", create)
              .route("POST", root + "amend-order", change(None))
              .route("POST", root + "cancel-order", change("CANCELED"))
              .route("POST", root + "get-order-detail", detail))
    return family


def deribit_perpetual() -> Family:
    """Deribit v2 (www.deribit.com), JSON-RPC over GET: private/buy, edit (in place), cancel and
    get_order_state_by_label, answered {"jsonrpc": "2.0", "result": ...} with Deribit's order object."""

    def rpc(result: Any) -> dict:
        now = int(time.time() * 1_000_000)
        return {"jsonrpc": "2.0", "result": result, "usIn": now, "usOut": now + 200, "usDiff": 200,
                "testnet": False}

    def shown(order: dict) -> dict:
        now = int(time.time() * 1000)
        return {"order_id": order["_id"], "order_state": order["status"], "instrument_name":
                order.get("instrument_name"), "direction": "buy", "amount": float(order.get("amount", 0)),
                "price": float(order.get("price", 0)), "label": order.get("label", ""), "order_type":
                order.get("type", "limit"), "time_in_force": "good_til_cancelled", "creation_timestamp": now,
                "last_update_timestamp": now, "filled_amount": 0.0, "average_price": 0.0, "post_only": False,
                "reduce_only": False, "api": True, "replaced": order.get("replaced", False), "web": False,
                "is_liquidation": False, "max_show": float(order.get("amount", 0)), "risk_reducing": False}

    def buy(req: Received) -> dict:
        p = req.params
        return rpc({"order": shown(_keep(family, req, p.get("label", ""), {**p, "status": "open"})), "trades": []})

    def known(req: Received) -> dict | None:
        return (family.order_by_id(req.params.get("order_id", "")) or (None, None))[1]

    def missing() -> Reply:
        return Reply(400, {"jsonrpc": "2.0", "error": {"message": "order_not_found", "code": 10004}})

    def edit(req: Received) -> Any:
        change = {k: req.params[k] for k in ("amount", "price") if k in req.params}
        return _acted(req, known(req), missing, lambda o: rpc({"order": shown(o), "trades": []}), replaced=True,
                      **change)

    def cancel(req: Received) -> Any:
        return _acted(req, known(req), missing, lambda o: rpc(shown(o)), status="cancelled")

    def by_label(req: Received) -> dict:
        found = family.orders.get(req.params.get("label", ""))
        return rpc([] if found is None else [shown(found)])

    family = (Family("deribit", "www.deribit.com",
                     unauthorized=(400, {"jsonrpc": "2.0", "error": {"message": "invalid_signature", "code": 13004}}),
                     not_found=(400, {"jsonrpc": "2.0", "error": {"message": "Method not found", "code": -32601}}))
              .route("GET", "/api/v2/private/buy", buy)
              .route("GET", "/api/v2/private/edit", edit)
              .route("GET", "/api/v2/private/cancel", cancel)
              .route("GET", "/api/v2/private/get_order_state_by_label", by_label))
    return family


def gemini_spot() -> Family:
    """Gemini (api.gemini.com): /v1/order/new, /v1/order/cancel and /v1/order/status (by order_id or
    client_order_id), each answered with Gemini's order status object. The parameters are the JSON in the
    base64 X-GEMINI-PAYLOAD header, as Gemini reads them (the body is empty). ccxt amends by cancel + new."""

    def params(req: Received) -> dict:
        try:
            payload = json.loads(base64.b64decode(req.http.header("X-GEMINI-PAYLOAD")))
        except ValueError:
            return {}
        return payload if isinstance(payload, dict) else {}

    def shown(order: dict) -> dict:
        now = int(time.time() * 1000)
        live = order["status"] == "live"
        return {"order_id": order["_id"], "id": order["_id"], "symbol": order.get("symbol"), "exchange": "gemini",
                "avg_execution_price": "0.00", "side": order.get("side"), "type": order.get("type"),
                "timestamp": str(now // 1000), "timestampms": now, "is_live": live, "is_cancelled": not live,
                "is_hidden": False, "was_forced": False, "executed_amount": "0",
                "client_order_id": order.get("client_order_id", ""), "options": [], "price": order.get("price"),
                "original_amount": order.get("amount"), "remaining_amount": order.get("amount")}

    def new(req: Received) -> dict:
        p = params(req)
        return shown(_keep(family, req, p.get("client_order_id", ""), {**p, "status": "live"}))

    def known(req: Received) -> dict | None:
        p = params(req)
        return _by_client_or_id(family, p.get("client_order_id"), p.get("order_id"))

    def missing() -> Reply:
        return Reply(400, {"result": "error", "reason": "OrderNotFound", "message": "Order not found"})

    def cancel(req: Received) -> Any:
        return _acted(req, known(req), missing, shown, status="cancelled")

    def status(req: Received) -> Any:
        found = known(req)
        return shown(found) if found is not None else missing()

    family = (Family("gemini", "api.gemini.com",
                     unauthorized=(400, {"result": "error", "reason": "InvalidSignature",
                                         "message": "InvalidSignature"}),
                     not_found=(404, {"result": "error", "reason": "EndpointNotFound", "message": "Not found"}))
              .route("POST", "/v1/order/new", new)
              .route("POST", "/v1/order/cancel", cancel)
              .route("POST", "/v1/order/status", status))
    return family


def mexc_spot_and_futures() -> Family:
    """MEXC: spot as binance_spot("mexc", ...) plays it, and the futures (contract) API on the same port
    (the agent sends every path of a MEXC key to its one send_to): order/create and order/cancel (a JSON
    array of order ids), answered {"success": true, "code": 0, "data": ...} as MEXC's contract API
    documents. ccxt amends a futures order by cancel + new."""

    def create(req: Received) -> dict:
        body = _json_body(req)
        order = _keep(family, req, str(body.get("externalOid", "")), {**body, "state": 2})  # 2: uncompleted
        return {"success": True, "code": 0, "data": {"orderId": order["_id"], "ts": int(time.time() * 1000)}}

    def cancel(req: Received) -> dict:
        body = _json_body(req)
        results = []
        for order_id in body if isinstance(body, list) else []:
            found = family.order_by_id(str(order_id))
            if found is not None and req.status == 200:
                found[1]["state"] = 4  # 4: cancelled
            results.append({"orderId": str(order_id), "errorCode": 0 if found else 2040,
                            "errorMsg": "success" if found else "order not exist"})
        return {"success": True, "code": 0, "data": results}

    family = binance_spot("mexc", "api.mexc.com")
    family.route("POST", "/api/v1/private/order/create", create)
    family.route("POST", "/api/v1/private/order/cancel", cancel)
    return family


# -- TLS ---------------------------------------------------------------------------------------------


class TestCA:
    """A throw-away certificate authority in DIRECTORY: `ca_file` for the client, `context(hosts)` for the server."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signing-agent test exchange CA")])
        self._name = name
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=1))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.ca_file = directory / "exchange-ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def context(self, host: str) -> ssl.SSLContext:
        """A server context with a certificate for HOST and 127.0.0.1, signed by this CA."""
        x509, ser = self._x509, self._ser
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, host)]))
                .issuer_name(self._name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(self._key, self._hashes.SHA256()))
        chain, key_file = self.directory / f"{host}.pem", self.directory / f"{host}.key"
        chain.write_bytes(cert.public_bytes(ser.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        key_file.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


# -- the server --------------------------------------------------------------------------------------


@dataclass
class _Fault:
    exchange: str | None  # None: any family
    times: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    drop: bool = False  # act on the request, then close the connection without answering


class ExchangeServer:
    """One listening port per family on 127.0.0.1 (HTTPS with TLS=TestCA); see the module docstring."""

    def __init__(self, *, tls: TestCA | None = None) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._families: dict[str, tuple[Family, SoftwareCredential, ThreadingHTTPServer]] = {}
        self._faults: list[_Fault] = []
        self.log: list[Received] = []

    # -- set-up

    def add(self, family: Family, credential: SoftwareCredential) -> str:
        """Serve FAMILY, checking private requests against CREDENTIAL (the key the exchange issued).
        Returns its base URL."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(family.exchange))
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.context(family.host).wrap_socket(server.socket, server_side=True)
        self._families[family.exchange] = (family, credential, server)
        threading.Thread(target=server.serve_forever, name=f"exchange-{family.exchange}", daemon=True).start()
        return self.url(family.exchange)

    def url(self, exchange: str) -> str:
        port = self._families[exchange][2].server_address[1]
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"

    def credential(self, exchange: str) -> SoftwareCredential:
        """The key FAMILY's requests are checked against (to check a request that was never sent)."""
        return self._families[exchange][1]

    def close(self) -> None:
        for _, _, server in self._families.values():
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "ExchangeServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- failure hooks

    def fail(self, exchange: str | None, status: int, *, headers: dict[str, str] | None = None, body: Any = None,
             times: int = 1) -> None:
        """Answer the next TIMES requests to EXCHANGE (None: any) with STATUS, HEADERS and BODY, unchecked."""
        with self._lock:
            self._faults.append(_Fault(exchange, times, status, dict(headers or {}), body))

    def delay(self, exchange: str | None, seconds: float, *, times: int = 1) -> None:
        """Hold the next TIMES answers to EXCHANGE (None: any) for SECONDS before answering as usual."""
        with self._lock:
            self._faults.append(_Fault(exchange, times, delay=seconds))

    def drop(self, exchange: str | None, *, times: int = 1) -> None:
        """Act on the next TIMES requests to EXCHANGE (None: any) as usual (an order is accepted and
        kept), then close the connection without sending the answer."""
        with self._lock:
            self._faults.append(_Fault(exchange, times, drop=True))

    # -- what it saw

    def received(self, exchange: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.log if exchange is None or r.exchange == exchange]

    def verified(self, exchange: str | None = None) -> list[Received]:
        """The private requests whose signature verified."""
        return [r for r in self.received(exchange) if r.private and r.verdict is not None and r.verdict.ok]

    def rejected(self, exchange: str | None = None) -> list[Received]:
        """The private requests whose signature did not verify (answered with the family's `unauthorized`)."""
        return [r for r in self.received(exchange) if r.private and r.verdict is not None and not r.verdict.ok]

    # -- answering

    def _take_fault(self, exchange: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.exchange in (None, exchange):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, exchange: str, http: Http) -> tuple[int, dict[str, str], Any, bool]:
        family, credential, _ = self._families[exchange]
        fault = self._take_fault(exchange)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        route = family.find(http.method, http.path)
        verdict = verify(exchange, http, credential) if route is not None and route.private else None
        private = route is not None and route.private
        if fault is not None and fault.status is not None:
            status, headers, body = fault.status, fault.headers, fault.body
        elif route is None:
            (status, body), headers = family.not_found, {}
        elif verdict is not None and not verdict.ok:
            (status, body), headers = family.unauthorized, {}
        else:
            status, headers, body = route.status, dict(family.headers), route.response
        received = Received(exchange, http, private, verdict, status)
        if callable(body):  # an answer that echoes the request (an order's id, symbol, side...)
            body = body(received)
        if isinstance(body, Reply):
            status, body = body.status, body.body
            received = replace(received, status=status)
        with self._lock:
            self.log.append(received)
        return status, headers, body, fault is not None and fault.drop

    def _handler(self, exchange: str) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                path, _, query = self.path.partition("?")
                http = Http(self.command, path, query, body, tuple(self.headers.items()))
                status, headers, answer, drop = owner._answer(exchange, http)
                if drop:  # acted on; the answer is lost with the connection
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html" if isinstance(answer, bytes) else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (ConnectionError, ssl.SSLError):  # the client gave up waiting (a delay hook): as it may
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the log is `owner.log`
                pass

        return Handler
