"""Gate (v4): the path, query and body hash are signed; pairs in some paths."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, BOTH, QUOTE, batch, fields_of, repriced, side_of, sized, traded, type_of, unsure
from agent.rules.view import Fields, View, json_body

# Path segments that carry a pair (key regex, fullmatch; group 1 is the symbol).
PATH_SYMBOLS = (re.compile(r"/api/v4/(?:futures|delivery)/[^/]+/(?:dual_comp/)?positions/([^/]+)(?:/.*)?"),)

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("withdrawal", r"/api/v4/withdrawals/push", "sends funds to another Gate user"),
    explicit("withdrawal", r"/api/v4/push", "sends funds to another Gate user"),
)


# -- orders ------------------------------------------------------------------------------------------

_GATE_DERIV = r"/api/v4/(?:futures|delivery)/[^/]+"


def orders(v: View) -> list[OrderFacts]:
    top = v.fields()
    key, method = v.key, v.method
    if method == "POST" and key in ("/api/v4/spot/orders", "/api/v4/spot/cross_liquidate_orders"):
        return [_gate_spot(top, None)]
    if method == "POST" and key == "/api/v4/spot/pov_orders":  # an algorithm: the unit of its amount is not documented
        return [sized(top.symbol("currency_pair"), top.get("amount"), BOTH)]
    if method == "POST" and key == "/api/v4/spot/batch_orders":
        return [_gate_spot(fields_of(o), None) for o in batch(v, top) or [{}]]
    if method == "POST" and key == "/api/v4/spot/amend_batch_orders":
        objs = [fields_of(o) for o in batch(v, top) or [{}]]
        return [sized(f.symbol("currency_pair"), f.get("amount"), BASE)
                for f in objs if f.has("amount") or not f.names()]
    if method == "POST" and key == "/api/v4/spot/price_orders":
        return [_gate_spot(Fields.of(top.get("put")), top.symbol("market"))]
    if method == "POST" and (re.fullmatch(_GATE_DERIV + r"/(?:orders|bbo_orders)", key)
                             or key == "/api/v4/options/orders"):
        return [sized(top.symbol("contract"), top.get("size"), BASE)]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/batch_orders", key):
        return [sized(f.symbol("contract"), f.get("size"), BASE) for f in map(fields_of, batch(v, top) or [{}])]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/batch_amend_orders", key):
        objs = [fields_of(o) for o in batch(v, top) or [{}]]
        return [sized(f.symbol("contract"), f.get("size"), BASE) for f in objs if f.has("size") or not f.names()]
    if method == "POST" and re.fullmatch(_GATE_DERIV + r"/price_orders", key):
        initial = Fields.of(top.get("initial"))
        return [sized(initial.symbol("contract"), initial.get("size"), BASE)]
    if method in ("PUT", "PATCH") and re.fullmatch(r"/api/v4/spot/orders/[^/]+", key):
        return [sized(top.symbol("currency_pair"), top.get("amount"), BASE)] if top.has("amount") else []
    if method in ("PUT", "PATCH") and re.fullmatch(_GATE_DERIV + r"/orders/[^/]+|/api/v4/options/orders/[^/]+", key):
        return [sized(top.symbol("contract"), top.get("size"), BASE)] if top.has("size") else []
    return []


def amends(v: View) -> list[OrderFacts]:
    """Amends of the price only (no amount, or no size for futures): PATCH /spot/orders/{id}, the spot batch
    amend, PUT /futures|delivery/{settle}/orders/{id}, the futures batch amend."""
    top = v.fields()
    key, method = v.key, v.method
    if method in ("PUT", "PATCH") and re.fullmatch(r"/api/v4/spot/orders/[^/]+", key):
        objs, pair, size = [top], "currency_pair", "amount"
    elif method == "POST" and key == "/api/v4/spot/amend_batch_orders":
        objs, pair, size = [fields_of(o) for o in batch(v, top) or []], "currency_pair", "amount"
    elif method in ("PUT", "PATCH") and re.fullmatch(_GATE_DERIV + r"/orders/[^/]+", key):
        objs, pair, size = [top], "contract", "size"
    elif method == "POST" and re.fullmatch(_GATE_DERIV + r"/batch_amend_orders", key):
        objs, pair, size = [fields_of(o) for o in batch(v, top) or []], "contract", "size"
    else:
        return []
    return [repriced(f.symbol(pair), f.get("price")) for f in objs if f.has("price") and not f.has(size)]


def _gate_spot(f: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("currency_pair") or inherited
    if unsure(f, "type", "side"):
        return sized(symbol, f.get("amount"), BOTH)
    # Gate: a market buy's amount is the quote to spend; limit orders (the default type) are in base.
    order_type, side = f.text("type") or "limit", side_of(f.text("side"))
    if order_type == "market" and side == "buy":
        unit = QUOTE
    else:
        unit = BASE if order_type in ("limit", "market") else BOTH
    return traded(symbol, f.get("amount"), unit, price=f.get("price") if order_type != "market" else None,
                  side=side, order_type=type_of(order_type))


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"currency_pair", "contract", "market"}),
    path_symbols=PATH_SYMBOLS, read_orders=orders, read_amends=amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=(*COMMON_METHODS, "PATCH"),
    signature_is_login=None,
)
