"""Coinbase (Advanced Trade and v2)."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, no_price_amends, price_of, side_of, sized
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
        config = config if kinds else {}
        if not kinds:
            return [OrderFacts(symbol, None, None)]
        side = side_of(top.text("side"))
        # The configuration's name says the type (market_market_ioc, limit_limit_gtc, stop_limit_stop_limit_gtc,
        # sor_limit_ioc...); a limit kind's limit_price bounds every fill, stop kinds included.
        return [OrderFacts(symbol, decimal(k.get("base_size")), decimal(k.get("quote_size")),
                           price_of(k.get("limit_price")), side,
                           "market" if name.startswith("market_") else "limit" if "limit_price" in k else None,
                           base_sized=True)
                for name, k in config.items() if isinstance(k, dict)]
    if v.key == "/api/v3/brokerage/orders/edit" and top.has("size"):
        return [sized(top.symbol("product_id"), top.get("size"), BASE)]
    return []


# Amends of the price alone: none (an edit carries both price and size: read as an order).
RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"product_id", "product_ids"}),
    path_symbols=PATH_SYMBOLS, read_orders=orders, read_amends=no_price_amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
