"""Crypto.com Exchange: POST for everything, JSON bodies."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads
from agent.rules.orders import BASE, batch, fields_of, no_price_amends, price_of, side_of, sized, type_of
from agent.rules.view import Fields, View, json_body

# Read endpoints (path keys, fullmatch), whatever the method.
READS = Reads(get=False, paths=re.compile(
    r"/(exchange/v1|v1|v2)/private/(\w+/)?(get-[\w-]+|user-balance(-history)?|fiat-withdraw-history"
    r"|fiat-deposit-history|fiat-deposit-info|fiat-transaction-quota|fiat-transaction-limit"
    r"|fiat-get-bank-accounts)"
))


# -- orders ------------------------------------------------------------------------------------------

_CRYPTOCOM_PLACE = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?create-order")
_CRYPTOCOM_LIST = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?create-(?:order-list|oco|oto|otoco)")
_CRYPTOCOM_AMEND = re.compile(r"/(?:exchange/v1|v1|v2)/private/(?:advanced/)?amend-order")


def orders(v: View) -> list[OrderFacts]:
    top = v.fields()
    if _CRYPTOCOM_PLACE.fullmatch(v.key):
        return [_cryptocom_order(top)]
    if _CRYPTOCOM_LIST.fullmatch(v.key):
        return [_cryptocom_order(fields_of(o)) for o in batch(v, top, "order_list") or [{}]]
    if _CRYPTOCOM_AMEND.fullmatch(v.key) and top.has("new_quantity"):
        return [sized(top.symbol("instrument_name"), top.get("new_quantity"), BASE)]
    return []


def _cryptocom_order(f: Fields) -> OrderFacts:
    # LIMIT and the *_LIMIT stops hold their limit in 'price'; MARKET and the market stops fill at the book.
    order_type = type_of(f.text("type"), limit=("limit", "stop_limit", "take_profit_limit"))
    return OrderFacts(f.symbol("instrument_name"), f.number("quantity"), f.number("notional"),
                      price_of(f.get("price")) if order_type == "limit" else None, side_of(f.text("side")),
                      order_type, base_sized=True)


# Amends of the price alone: none (amend-order carries new_price and new_quantity: read as an order).
RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"instrument_name"}),
    path_symbols=(), read_orders=orders, read_amends=no_price_amends, reads=READS,
    explicit=(), not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
