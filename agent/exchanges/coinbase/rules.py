"""Coinbase (Advanced Trade and v2)."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, sized
from agent.rules.view import View, decimal, json_body, maybe_json

# Path segments that carry a pair (key regex, fullmatch; group 1 is the symbol).
PATH_SYMBOLS = (re.compile(r"/api/v3/brokerage/(?:products|cfm/positions|intx/positions)/([^/]+)(?:/.*)?"),)

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("withdrawal", r"/v2/accounts/[^/]+/transactions(/.*)?",
             "sends, requests or completes a money transfer from a wallet"),
    explicit("payment", r"/v2/accounts/[^/]+/(buys|sells|deposits)(/.*)?",
             "buys, sells or deposits through a payment method"),
    explicit("transfer", r"/api/v3/brokerage/intx/(allocate|multi_asset_collateral)",
             "moves funds into or out of a perpetuals portfolio"),
)


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    if v.key == "/api/v3/brokerage/orders":
        symbol = top.symbol("product_id")
        config = maybe_json(top.get("order_configuration"))
        kinds = [value for value in config.values() if isinstance(value, dict)] if isinstance(config, dict) else []
        if not kinds:
            return [OrderFacts(symbol, None, None)]
        return [OrderFacts(symbol, decimal(k.get("base_size")), decimal(k.get("quote_size"))) for k in kinds]
    if v.key == "/api/v3/brokerage/orders/edit" and top.has("size"):
        return [sized(top.symbol("product_id"), top.get("size"), BASE)]
    return []


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"product_id", "product_ids"}),
    path_symbols=PATH_SYMBOLS, read_orders=orders, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None,
    signature_is_login=None,
)
