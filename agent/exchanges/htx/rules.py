"""HTX: the path and query are signed, a POST body is not."""

from __future__ import annotations

import re

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, UnboundNote, explicit, param_rule
from agent.rules.orders import (BASE, BOTH, QUOTE, batch, fields_of, no_price_amends, side_of, sized, traded, type_of,
                                unsure)
from agent.rules.view import Fields, View, json_body

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("margin-borrow", r"/v1/(cross-)?margin/orders", "applies for a margin loan"),
    explicit("convert", r"/v1/stable-coin/exchange", "exchanges stable coins"),
)

PARAM_RULES = (
    param_rule("withdrawal", "address amount currency", "HTX's withdrawal endpoint (/v1/dw/withdraw/api/create)"),
    param_rule("sub-account", "sub-uid", "HTX's sub-user transfer (/v1/subuser/transfer)"),
    param_rule("sub-account", "sub_uid", "HTX's master/sub transfers (/api/v1/contract_master_sub_transfer)"),
    param_rule("transfer", "fromUid toUid", "HTX's point transfer (/v2/point/transfer)"),
    param_rule("transfer", "from_margin_account to_margin_account", "HTX's futures transfers (swap_transfer_inner)"),
    param_rule("transfer", "currency amount",
               "HTX's transfers and margin loans (/v1/account/transfer, /v2/account/transfer, /v1/futures/transfer, "
               "/v1/margin/orders...)"),
    param_rule("transfer", "asset amount", "HTX's futures transfers (/v5/account/universal_transfer...)"),
)


# -- orders ------------------------------------------------------------------------------------------

_HTX_CONTRACT = re.compile(
    r"/(?:api|swap-api|linear-swap-api)/v1/(?:contract|swap|swap_cross)_(?:order|trigger_order|tpsl_order|track_order)"
)
_HTX_CONTRACT_BATCH = re.compile(r"/(?:api|swap-api|linear-swap-api)/v1/(?:contract|swap|swap_cross)_batchorder")


def orders(v: View) -> list[OrderFacts]:
    if v.method != "POST":
        return []
    top = v.fields()
    key = v.key
    if key in ("/v1/order/orders/place", "/v1/order/auto/place"):
        return [_htx_spot(top)]
    if key == "/v1/order/batch-orders":
        return [_htx_spot(fields_of(o)) for o in batch(v, top, "orders") or [{}]]
    if key == "/v2/algo-orders":
        return [OrderFacts(top.symbol("symbol"), top.number("orderSize"), top.number("orderValue"))]
    if _HTX_CONTRACT.fullmatch(key) or key in ("/v5/trade/order", "/v5/algo/order"):
        return [_htx_contract(top)]
    if _HTX_CONTRACT_BATCH.fullmatch(key) or key == "/v5/trade/batch_orders":
        return [_htx_contract(fields_of(o)) for o in batch(v, top, "orders_data", "orders") or [{}]]
    return []


def _htx_spot(f: Fields) -> OrderFacts:
    symbol = f.symbol("symbol")
    if unsure(f, "type"):
        return sized(symbol, f.get("amount"), BOTH)
    # HTX: the type is "<side>-<kind>" (buy-limit, sell-market, buy-ioc, buy-limit-maker, buy-stop-limit...);
    # a buy-market order's amount is the quote to spend.
    side, _, kind = f.text("type").partition("-")
    order_type = type_of(kind, limit=("limit", "ioc", "limit-maker", "limit-fok", "stop-limit", "stop-limit-fok"))
    return traded(symbol, f.get("amount"), QUOTE if f.text("type") == "buy-market" else BASE,
                  price=f.get("price") if order_type == "limit" else None, side=side_of(side), order_type=order_type)


def _htx_contract(f: Fields) -> OrderFacts:
    return sized(f.symbol("contract_code") or f.symbol("symbol"), f.get("volume"), BASE)


# Amends of the price alone: none (no amend endpoint on the spot API).
RULES = Rules(
    path_bound=False,
    unbound_note=UnboundNote("{name} does not sign POST bodies, so the body can be swapped", frozenset({"POST"})),
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol", "contract_code"}),
    path_symbols=(), read_orders=orders, read_amends=no_price_amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
