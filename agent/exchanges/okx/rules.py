"""OKX (v5): the path, query and JSON body are signed."""

from __future__ import annotations

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit, param_rule
from agent.rules.orders import BASE, BOTH, QUOTE, batch, fields_of, repriced, side_of, sized, traded, type_of, unsure
from agent.rules.view import Fields, View, json_body

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("transfer", r"/api/v5/account/move-positions", "moves positions to another account"),
    explicit("withdrawal", r"/api/v5/tradingbot/grid/withdraw-income", "moves a bot's profit out of it"),
)

PARAM_RULES = (param_rule("withdrawal", "toAddr", "OKX's withdrawal endpoint (/api/v5/asset/withdrawal)"),)


# -- orders ------------------------------------------------------------------------------------------

_OKX_LIMIT_TYPES = frozenset({"limit", "post_only", "fok", "ioc", "mmp", "mmp_and_post_only", "op_fok"})
_OKX = {
    "/api/v5/trade/order": ("sz", False),
    "/api/v5/trade/batch-orders": ("sz", True),
    "/api/v5/trade/order-algo": ("sz", False),
    "/api/v5/trade/amend-order": ("newsz", False),
    "/api/v5/trade/amend-batch-orders": ("newsz", True),
    "/api/v5/trade/amend-algos": ("newsz", False),
    "/api/v5/sprd/order": ("sz", False),
    "/api/v5/sprd/amend-order": ("newsz", False),
}


def orders(v: View) -> list[OrderFacts]:
    spec = _OKX.get(v.key)
    if spec is None or v.method != "POST":
        return []
    size, _ = spec
    top = v.fields()
    # A batch is a JSON array; an object sent to a batch endpoint is read as one order.
    fields = [fields_of(o) for o in batch(v, top) or [{}]] if isinstance(v.body, list) else [top]
    out = []
    for f in fields:
        if size == "newsz" and not f.has(size):
            continue  # an amend of the price only
        symbol = f.symbol("instId") or f.symbol("sprdId")
        unit = _okx_unit(f, symbol) if size == "sz" else BASE
        if symbol is not None and symbol.count("-") == 1 and v.key != "/api/v5/trade/order-algo":
            # A spot or margin pair (BTC-USDT): sizes in coins, priced by px (newPx for an amend).
            # Derivatives count contracts, and algo orders trigger later at a price not known now.
            price = f.get("px" if size == "sz" else "newpx")
            out.append(traded(symbol, f.get(size), unit, price=price, side=side_of(f.text("side")),
                              order_type=type_of(f.text("ordType"), limit=_OKX_LIMIT_TYPES)))
        else:
            out.append(sized(symbol, f.get(size), unit))
    return out


def amends(v: View) -> list[OrderFacts]:
    """Amends of the price only: newPx (or, for options, newPxUsd / newPxVol: unread) without newSz."""
    if v.method != "POST" or v.key not in ("/api/v5/trade/amend-order", "/api/v5/trade/amend-batch-orders"):
        return []
    top = v.fields()
    fields = [fields_of(o) for o in batch(v, top) or [{}]] if isinstance(v.body, list) else [top]
    return [repriced(f.symbol("instId"), f.get("newpx"))
            for f in fields if not f.has("newsz") and (f.has("newpx") or f.has("newpxusd") or f.has("newpxvol"))]


def _okx_unit(f: Fields, symbol: str | None) -> str:
    if symbol is None or symbol.count("-") != 1:
        return BASE if symbol is not None else BOTH  # derivatives: contracts (or the option's unit)
    if unsure(f, "tgtCcy", "ordType", "side"):
        return BOTH
    target = f.text("tgtCcy")
    if f.has("tgtCcy"):
        return {"quote_ccy": QUOTE, "base_ccy": BASE}.get(target, BOTH)
    # No tgtCcy: limit orders are in base; OKX's docs make a spot market buy quote by default, ccxt
    # treats margin market buys as base: both.
    if f.text("ordType") in _OKX_LIMIT_TYPES or f.text("side") == "sell":
        return BASE
    return BOTH


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"instid", "instfamily", "uly", "sprdid"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
