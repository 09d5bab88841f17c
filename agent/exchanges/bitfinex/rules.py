"""Bitfinex (v2): POST for everything, JSON bodies."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, repriced, traded
from agent.rules.view import Fields, View, decimal, json_body, maybe_json

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("api-key-management", r"/v2/auth/w/token", "mints an auth token that trades without the agent"),
    explicit("earn", r"/v2/auth/w/funding/.*", "manages funding (lending) offers"),
    explicit("withdrawal", r"/v2/auth/w/ext/wallets/withdrawals/.*", "requests a withdrawal"),
)

# Read endpoints (path keys, fullmatch), whatever the method.
READS = Reads(get=False, paths=re.compile(r"/v2/auth/(r|calc)/.*"))


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    top = v.fields()
    if v.key == "/v2/auth/w/order/submit":
        return [_bitfinex_order(top, amend=False)]
    if v.key == "/v2/auth/w/order/update":
        return [_bitfinex_order(top, amend=True)] if top.has("amount") or top.has("delta") else []
    if v.key == "/v2/auth/w/order/multi":
        out = []
        ops = maybe_json(top.get("ops"))
        for op in ops if isinstance(ops, list) else [None]:
            if not (isinstance(op, list) and len(op) == 2 and isinstance(op[0], str) and isinstance(op[1], dict)):
                out.append(OrderFacts(None, None, None))  # an operation the rules cannot read
                continue
            kind, payload = op[0].lower(), Fields(op[1].items())
            if kind == "on":
                out.append(_bitfinex_order(payload, amend=False))
            elif kind == "ou" and (payload.has("amount") or payload.has("delta")):
                out.append(_bitfinex_order(payload, amend=True))
        return out
    return []


def amends(v: View) -> list[OrderFacts]:
    """order/update (and multi's "ou") with a price and no amount or delta. An update names its order by id,
    not its symbol or side: the band then fails closed (cancel and place a new order instead)."""
    top = v.fields()
    if v.key == "/v2/auth/w/order/update":
        updates = [top]
    elif v.key == "/v2/auth/w/order/multi":
        ops = maybe_json(top.get("ops"))
        updates = [Fields(op[1].items()) for op in (ops if isinstance(ops, list) else [])
                   if isinstance(op, list) and len(op) == 2 and op[0] == "ou" and isinstance(op[1], dict)]
    else:
        return []
    return [repriced(f.symbol("symbol"), f.get("price")) for f in updates
            if f.has("price") and not (f.has("amount") or f.has("delta"))]


# The order type without its "EXCHANGE " prefix (exchange wallet) -> where its limit price is. A stop's
# 'price' is its trigger, so only STOP LIMIT's price_aux_limit bounds its fills; the market kinds are
# unread prices.
_BITFINEX_LIMIT = {"limit": "price", "fok": "price", "ioc": "price", "stop limit": "price_aux_limit"}


def _bitfinex_order(f: Fields, amend: bool) -> OrderFacts:
    # A 'delta' changes the amount by an offset from a size the request does not show.
    amount = None if amend and f.has("delta") else f.get("amount")
    # The amount's sign is the side: positive buys, negative sells. An update does not restate the type.
    text = str(amount).strip() if decimal(amount) is not None else ""
    side = None if amend or not text else "sell" if text.startswith("-") else "buy"
    kind = f.text("type").removeprefix("exchange ")
    order_type = "limit" if kind in _BITFINEX_LIMIT else "market" if kind == "market" else None
    price = f.get(_BITFINEX_LIMIT[kind]) if order_type == "limit" else None
    return traded(f.symbol("symbol"), amount, BASE, price=price, side=side, order_type=order_type)


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=READS,
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
