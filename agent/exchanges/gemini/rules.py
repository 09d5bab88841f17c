"""Gemini: POST for everything, the payload in a header."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, no_price_amends, side_of, traded
from agent.rules.view import View, json_body

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("sub-account", r"/v1/account/create", "creates a sub-account"),
    explicit("api-key-management", r"/v1/oauth/.*", "manages OAuth credentials"),
    explicit("block-trade", r"/v1/clearing/.*", "settles trades with a chosen counterparty"),
    explicit("convert", r"/v1/instant/.*", "buys or sells at a quoted price outside the order book"),
)

# Read endpoints (path keys, fullmatch), whatever the method.
READS = Reads(get=True, paths=re.compile(
    r"/v[12]/transfers|/v[12]/withdraw/[^/]+(/[^/]+)?/feeestimate|/v1/approvedaddresses/account/[^/]+"
    r"|/v1/payments/methods|/v1/staking/(rewards|history)|/v1/balances/(staking|earn)"
    r"|/v1/earn/(interest|history)|/v1/account/list|/v1/clearing/(status|list|trades|broker/list)"
))


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    if v.key != "/v1/order/new":
        return []
    top = v.fields()
    # Gemini takes limit orders only ("exchange limit", and its stop-limit): the price bounds every fill.
    return [traded(top.symbol("symbol"), top.get("amount"), BASE, price=top.get("price"),
                   side=side_of(top.text("side")), order_type="limit")]


# Amends of the price alone: none (Gemini has no amend endpoint).
RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol"}),
    path_symbols=(), read_orders=orders, read_amends=no_price_amends, reads=READS,
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
