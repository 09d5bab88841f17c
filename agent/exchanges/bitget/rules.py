"""Bitget: the path, query and JSON body are signed."""

from __future__ import annotations

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, param_rule
from agent.rules.orders import (BASE, BOTH, QUOTE, batch, fields_of, first_of, repriced, side_of, sized, traded,
                                type_of, unsure)
from agent.rules.view import Fields, View, decimal, json_body

PARAM_RULES = (
    param_rule("withdrawal", "address size", "Bitget's withdrawal endpoint (/api/v2/spot/wallet/withdrawal)"),
)


# -- orders ------------------------------------------------------------------------------------------

_BITGET: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # key: (kind, size field(s) rule, batch list names)
    "/api/v2/spot/trade/place-order": ("spot", "size", ()),
    "/api/v2/spot/trade/batch-orders": ("spot", "size", ("orderList",)),
    "/api/v2/spot/trade/cancel-replace-order": ("spot", "size", ()),
    "/api/v2/spot/trade/batch-cancel-replace-order": ("spot", "size", ("orderList",)),
    "/api/v2/spot/trade/place-plan-order": ("plan", "size", ()),
    "/api/v2/spot/trade/modify-plan-order": ("plan", "size", ()),
    "/api/v2/mix/order/place-order": ("base", "size", ()),
    "/api/v2/mix/order/batch-place-order": ("base", "size", ("orderList",)),
    "/api/v2/mix/order/place-plan-order": ("base", "size", ()),
    "/api/v2/mix/order/place-tpsl-order": ("base", "size", ()),
    "/api/v2/mix/order/click-backhand": ("base", "size", ()),
    "/api/v2/mix/order/modify-order": ("amend", "newSize", ()),
    "/api/v2/mix/order/modify-plan-order": ("amend", "newSize", ()),
    "/api/v2/mix/order/modify-tpsl-order": ("amend", "size", ()),
    "/api/v2/margin/crossed/place-order": ("margin", "", ()),
    "/api/v2/margin/isolated/place-order": ("margin", "", ()),
    "/api/v2/margin/crossed/batch-place-order": ("margin", "", ("orderList",)),
    "/api/v2/margin/isolated/batch-place-order": ("margin", "", ("orderList",)),
    "/api/spot/v1/trade/orders": ("spot", "quantity", ()),
    "/api/spot/v1/trade/batch-orders": ("spot", "quantity", ("orderList",)),
    "/api/spot/v1/plan/placeplan": ("spot", "size", ()),
    "/api/spot/v1/plan/modifyplan": ("amend", "size", ()),
    "/api/mix/v1/order/placeorder": ("base", "size", ()),
    "/api/mix/v1/order/batch-orders": ("base", "size", ("orderDataList",)),
    "/api/mix/v1/plan/placeplan": ("base", "size", ()),
    "/api/mix/v1/plan/placetpsl": ("base", "size", ()),
    "/api/mix/v1/plan/placetrailstop": ("base", "size", ()),
    "/api/margin/v1/cross/order/placeorder": ("margin", "", ()),
    "/api/margin/v1/isolated/order/placeorder": ("margin", "", ()),
    "/api/margin/v1/cross/order/batchplaceorder": ("margin", "", ("orderList",)),
    "/api/margin/v1/isolated/order/batchplaceorder": ("margin", "", ("orderList",)),
    "/api/v3/trade/place-order": ("uta", "qty", ()),
    "/api/v3/trade/place-strategy-order": ("uta", "qty", ()),
    "/api/v3/trade/place-reality-order": ("uta", "qty", ()),
    "/api/v3/trade/place-batch": ("uta", "qty", ("orderList",)),
    "/api/v3/trade/modify-order": ("amend", "qty", ()),
    "/api/v3/trade/batch-modify-order": ("amend", "qty", ("orderList",)),
    "/api/v3/trade/modify-strategy-order": ("amend", "qty", ()),
}


def orders(v: View) -> list[OrderFacts]:
    spec = _BITGET.get(v.key)
    if spec is None or v.method != "POST":
        return []
    kind, size, lists = spec
    triggered = kind == "plan" or any(word in v.key for word in ("plan", "tpsl", "trailstop", "strategy"))
    top = v.fields()
    objs = batch(v, top, *lists) if lists or isinstance(v.body, list) else None
    fields = [fields_of(o) for o in objs] if objs is not None else [top]
    out = []
    for f in fields:
        symbol = f.symbol("symbol") or top.symbol("symbol")
        # Sizes are in the base coin everywhere (futures too). Plan, TP/SL, trailing and strategy orders
        # trigger later, at a price not known now: not priced (a budget refuses them, fail closed).
        side, order_type = side_of(f.text("side")), type_of(f.text("orderType"))
        price = f.get("price") if order_type != "market" else None
        if kind == "amend":
            if f.has(size) or f.has("newQty"):
                new_size = first_of(f, size, "newQty")
                out.append(sized(symbol, new_size, BASE) if triggered
                           else traded(symbol, new_size, BASE, price=first_of(f, "newPrice", "price")))
        elif kind == "margin":
            out.append(OrderFacts(symbol, decimal(first_of(f, "baseSize", "baseQuantity")),
                                  decimal(first_of(f, "quoteSize", "quoteAmount")), decimal(price), side,
                                  order_type, base_sized=True))
        else:
            unit = BASE if kind == "base" else _bitget_unit(kind, f, top)
            out.append(sized(symbol, f.get(size), unit) if triggered
                       else traded(symbol, f.get(size), unit, price=price, side=side, order_type=order_type))
    return out


def amends(v: View) -> list[OrderFacts]:
    """modify-order (v2 futures) and the v3 modify-order with a new price and no new size."""
    spec = _BITGET.get(v.key)
    if spec is None or v.method != "POST" or spec[0] != "amend" or "plan" in v.key or "tpsl" in v.key \
            or "strategy" in v.key:
        return []
    _, size, lists = spec
    top = v.fields()
    objs = batch(v, top, *lists) if lists or isinstance(v.body, list) else None
    fields = [fields_of(o) for o in objs] if objs is not None else [top]
    return [repriced(f.symbol("symbol") or top.symbol("symbol"), first_of(f, "newPrice", "price"))
            for f in fields if not (f.has(size) or f.has("newQty")) and (f.has("newPrice") or f.has("price"))]


def _bitget_unit(kind: str, f: Fields, top: Fields) -> str:
    if unsure(f, "orderType", "side", "planType", "category"):
        return BOTH
    market_buy = f.text("orderType") == "market" and f.text("side") == "buy"
    if kind == "uta":
        # UTA qty: ccxt sends the base amount, Bitget's docs are not explicit for spot market buys.
        category = f.text("category") or top.text("category")
        return BOTH if market_buy and category in ("spot", "margin", "") else BASE
    if kind == "plan" and f.has("planType"):
        return {"total": QUOTE, "amount": BASE}.get(f.text("planType"), BOTH)
    # Spot: a market buy's size is the quote amount to spend.
    return QUOTE if market_buy else BASE


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol", "symbols"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=Reads(get=True, paths=None),
    explicit=(), not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
