"""Kraken: POST for everything; form bodies, or JSON."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit, param_rule
from agent.rules.orders import BASE, BOTH, QUOTE, batch, fields_of, repriced, side_of, sized, traded, type_of, unsure
from agent.rules.view import FORM, JSON, Fields, View

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("session-token", r"/0/private/getwebsocketstoken",
             "mints a WebSocket token that places orders without the agent"),
    explicit("sub-account", r"/0/private/createsubaccount", "creates a sub-account"),
)

# Read endpoints (path keys, fullmatch), whatever the method.
READS = Reads(get=False, paths=re.compile(
    r"/0/private/(withdrawmethods|withdrawaddresses|withdrawinfo|withdrawstatus|depositmethods"
    r"|depositaddresses|depositstatus|earn/(allocatestatus|deallocatestatus|strategies|allocations))"
))

PARAM_RULES = (param_rule("withdrawal", "asset key amount", "Kraken's withdrawal endpoint (/0/private/Withdraw)"),)


def body_format(path: str, text: str) -> str:
    """Kraken takes form bodies, or JSON ones (an object)."""
    return JSON if text.lstrip().startswith("{") else FORM


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    top = v.fields()
    name = v.key.removeprefix("/0/private/")
    if name == "addorder":
        return [_kraken_order(top, None)]
    if name == "addorderbatch":
        return [_kraken_order(fields_of(o), top.symbol("pair")) for o in batch(v, top, "orders") or [{}]]
    if name == "editorder" and top.has("volume"):
        return [_kraken_order(top, None)]
    if name == "amendorder" and top.has("order_qty"):
        return [sized(top.symbol("pair"), top.get("order_qty"), BASE)]
    return []


# Kraken's ordertype, and where its limit price is: 'price' for limit and iceberg, 'price2' for the
# stop and take-profit limits ('price' is their trigger). The market-triggering kinds are unread.
_KRAKEN_LIMIT = {"limit": "price", "iceberg": "price", "stop-loss-limit": "price2", "take-profit-limit": "price2"}


def amends(v: View) -> list[OrderFacts]:
    """EditOrder with a new price and no volume, AmendOrder with limit_price and no order_qty. Neither says
    the side or the order type (EditOrder's price may be a stop's trigger); AmendOrder names no pair."""
    top = v.fields()
    name = v.key.removeprefix("/0/private/")
    if name == "editorder" and not top.has("volume") and (top.has("price") or top.has("price2")):
        # Without the order type, either price may be the limit: both are held to the band.
        return [repriced(top.symbol("pair"), top.get(name)) for name in ("price", "price2") if top.has(name)]
    if name == "amendorder" and not top.has("order_qty") and (top.has("limit_price") or top.has("trigger_price")):
        return [repriced(top.symbol("pair"), top.get("limit_price"))]
    return []


def _kraken_order(f: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("pair") or inherited
    if unsure(f, "oflags"):
        return sized(symbol, f.get("volume"), BOTH)
    flags = {flag.strip() for flag in f.text("oflags").split(",")}
    # viqc: "volume in quote currency". The side is 'type'. An edit carries neither side nor type, and
    # its 'price' may be a stop's trigger: unread.
    order_type = type_of(f.text("ordertype"), limit=_KRAKEN_LIMIT)
    price = f.get(_KRAKEN_LIMIT[f.text("ordertype")]) if order_type == "limit" else None
    return traded(symbol, f.get("volume"), QUOTE if "viqc" in flags else BASE, price=price,
                  side=side_of(f.text("type")), order_type=order_type)


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=body_format, json_rpc=None, symbol_params=frozenset({"pair"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=READS,
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
