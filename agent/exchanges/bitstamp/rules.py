"""Bitstamp (v2): form bodies, the pair in the path."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, BOTH, QUOTE, no_price_amends, sized, traded
from agent.rules.view import View, form_body

# Path segments that carry a pair (key regex, fullmatch; group 1 is the symbol).
PATH_SYMBOLS = (
    re.compile(r"/api/v2/(?:buy|sell)(?:/(?:market|instant))?/([^/]+)"),
    re.compile(r"/api/v2/(?:open_orders|cancel_all_orders|user_transactions|balance|fees/trading)/([^/]+)"),
)

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("withdrawal", r"/api/v2/crypto-transactions/deposits/[^/]+/reject",
             "sends a deposit back to an address"),
    explicit("api-key-management", r"/api/v2/revoke_all_api_keys", "revokes API keys"),
)

# Read endpoints (path keys, fullmatch), whatever the method.
READS = Reads(get=True, paths=re.compile(
    r"/api/v2/(withdrawal-requests|withdrawal/status|fees/withdrawal(/[^/]+)?|earn/subscriptions)"
))


# -- orders ------------------------------------------------------------------------------------------

_BITSTAMP_ORDER = re.compile(r"/api/v2/(buy|sell)(?:/(market|instant))?/([^/]+)")


def orders(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    if v.key == "/api/v2/replace_order":
        return [sized(top.symbol("pair"), top.get("amount"), BASE)] if top.has("amount") else []
    match = _BITSTAMP_ORDER.fullmatch(v.key)
    if match is None or match.group(3) in ("market", "instant"):
        return []
    side, kind, pair = match.groups()
    symbol = pair.upper()
    unit = BASE
    # /buy/<pair>/ is a limit order (price); /buy/market/ and /buy/instant/ fill at the book.
    order_type = "limit" if kind is None else "market"
    if kind == "instant":
        if side == "buy":
            unit = QUOTE  # an instant buy spends an amount of the counter currency
        elif top.has("amount_in_counter"):
            flag = top.text("amount_in_counter")
            unit = QUOTE if flag in ("true", "1") else BASE if flag in ("false", "0") else BOTH
    return [traded(symbol, top.get("amount"), unit, price=top.get("price") if kind is None else None, side=side,
                   order_type=order_type)]


# Amends of the price alone: none (replace_order carries the amount: read as an order).
RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=form_body, json_rpc=None, symbol_params=frozenset({"pair"}),
    path_symbols=PATH_SYMBOLS, read_orders=orders, read_amends=no_price_amends, reads=READS,
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
