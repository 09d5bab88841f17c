"""KuCoin (spot and futures): one scheme, the path signed."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import (BASE, BOTH, QUOTE, batch, fields_of, first_of, repriced, side_of, sized, traded,
                                type_of, unsure)
from agent.rules.view import Fields, View, decimal, json_body

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (explicit("sub-account", r"/api/v1/broker/nd/account", "creates a broker sub-account"),)

# Paths where a keyword misleads: the endpoint moves margin between a position and its own account
# (ccxt's reduceMargin), which is position management, not a withdrawal.
NOT_FORBIDDEN = re.compile(
    r"/api/v1/margin/withdrawmargin|/api/v1/copy-trade/futures/position/margin/withdraw-margin"
)


# -- orders ------------------------------------------------------------------------------------------

_KUCOIN_PLACE = re.compile(
    r"/api/v1/(?:orders|hf/orders|hf/orders/sync|margin/order|stop-order|st-orders|copy-trade/futures/orders"
    r"|copy-trade/futures/st-orders)|/api/v3/(?:hf/margin/order|oco/order|hf/margin/oco-order|hf/margin/stop-order)"
    r"|/api/ua/v1/[^/]+/order/place"
)
_KUCOIN_BATCH = re.compile(
    r"/api/v1/(?:orders/multi|hf/orders/multi|hf/orders/multi/sync)|/api/ua/v1/[^/]+/order/place(?:-batch|/batch)"
)


def orders(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    uta = v.key.startswith("/api/ua/")
    futures = v.exchange.id == "kucoinfutures" or "/futures/" in v.key  # sizes in lots (copy trading too)
    if _KUCOIN_BATCH.fullmatch(v.key):
        return [_kucoin_order(fields_of(o), top.symbol("symbol"), uta, futures)
                for o in batch(v, top, "orderList") or [{}]]
    if _KUCOIN_PLACE.fullmatch(v.key):
        if isinstance(v.body, list):
            return [_kucoin_order(fields_of(o), None, uta, futures) for o in batch(v, top) or [{}]]
        return [_kucoin_order(top, None, uta, futures)]
    if v.key == "/api/v1/hf/orders/alter" and top.has("newSize"):
        return [sized(top.symbol("symbol"), top.get("newSize"), BASE)]
    return []


def amends(v: View) -> list[OrderFacts]:
    """The HF alter with a new price and no new size."""
    top = v.fields()
    if v.method == "POST" and v.key == "/api/v1/hf/orders/alter" and top.has("newPrice") and not top.has("newSize"):
        return [repriced(top.symbol("symbol"), top.get("newPrice"))]
    return []


def _kucoin_order(f: Fields, inherited: str | None, uta: bool, futures: bool) -> OrderFacts:
    symbol = f.symbol("symbol") or inherited
    side, order_type = side_of(f.text("side")), type_of(f.text("type") or "limit")  # KuCoin's default: limit
    if uta:
        if unsure(f, "sizeUnit"):
            return sized(symbol, f.get("size"), BOTH)
        unit = {"baseccy": BASE, "unit": BASE, "quoteccy": QUOTE}.get(f.text("sizeUnit"), BOTH)
        if futures or f.text("sizeUnit") == "unit":  # lots of a multiplier the request does not carry
            return sized(symbol, f.get("size"), unit)
        return traded(symbol, f.get("size"), unit, price=f.get("price"), side=side, order_type=order_type)
    # Classic: size (base, or lots for futures) or qty (base); funds or valueQty (quote). The price makes
    # a notional only where size is in the base asset (spot, margin): a futures lot is worth a
    # contract multiplier the request does not carry, so futures notionals are read from valueQty only.
    price = None if futures else f.number("price")
    return OrderFacts(symbol, decimal(first_of(f, "size", "qty")), decimal(first_of(f, "funds", "valueQty")),
                      price, side, order_type, base_sized=not futures)


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol", "symbols"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=NOT_FORBIDDEN,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
