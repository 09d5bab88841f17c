"""Binance (spot, USD-M futures, Binance US, Binance TR): one scheme, parameters signed without the path."""

from __future__ import annotations

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, UnboundNote, explicit, param_rule
from agent.rules.orders import batch, fields_of, no_price_amends, side_of, type_of
from agent.rules.view import Fields, View, form_body

# Account and position settings, reached by parameters alone as the path is not signed.
_SETTINGS = (
    explicit("account-settings", r"/(?:fapi|dapi)/v1/leverage|/papi/v1/(?:um|cm)/leverage",
             "sets a symbol's leverage"),
    explicit("account-settings", r"/(?:fapi|dapi)/v1/margintype",
             "switches a symbol between isolated and cross margin"),
    explicit("account-settings", r"/(?:fapi|dapi)/v1/positionside/dual|/papi/v1/(?:um|cm)/positionside/dual",
             "switches between hedge and one-way position mode"),
    explicit("account-settings", r"/fapi/v1/multiassetsmargin", "switches multi-assets margin mode"),
    explicit("account-settings", r"/sapi/v1/margin/max-leverage", "sets the margin account's maximum leverage"),
    explicit("account-settings", r"/sapi/v1/margin/isolated/account", "enables or disables an isolated margin account"),
    explicit("account-settings", r"/sapi/v1/portfolio/delta-mode", "switches portfolio-margin delta mode"),
    explicit("account-settings", r"/fapi/v1/feeburn|/papi/v1/um/feeburn|/sapi/v1/bnbburn",
             "switches paying fees and margin interest in BNB"),
)
EXPLICIT = (
    explicit("block-trade", r"/eapi/v1/block/.*", "arranges a block trade with a chosen counterparty"),
    *_SETTINGS,
)

PARAM_RULES = (
    param_rule("withdrawal", "coin address amount", "Binance's withdrawal endpoint (/sapi/v1/capital/withdraw/apply)"),
    param_rule("sub-account", "toEmail asset amount", "Binance's sub-account transfers (/sapi/v1/sub-account/...)"),
    param_rule("sub-account", "fromEmail asset amount", "Binance's sub-account transfers (/sapi/v1/sub-account/...)"),
    param_rule("sub-account", "email", "Binance's sub-account management endpoints (/sapi/v1/sub-account/...)"),
    param_rule("sub-account", "subAccountString", "Binance's virtual sub-account creation"),
    param_rule("sub-account", "subAccountApiKey", "Binance's sub-account API-key endpoints"),
    param_rule("sub-account", "subAccountId", "Binance's broker sub-account endpoints"),
    param_rule("earn", "productId amount", "Binance's simple-earn, savings and staking subscriptions"),
    param_rule("earn", "projectId amount", "Binance's locked simple-earn subscriptions"),
    param_rule("earn", "tokenName", "Binance's leveraged-token (BLVT) subscriptions"),
    param_rule("earn", "subscriptionAmount",
               "Binance's auto-invest (/sapi/v1/lending/auto-invest/one-off, /plan/add): it buys any asset"),
    param_rule("api-key-management", "apiName", "Binance's margin special key (/sapi/v1/margin/apiKey)"),
    param_rule("earn", "poolId", "Binance's liquidity-pool (bswap) endpoints"),
    param_rule("loan", "loanCoin", "Binance's crypto-loan endpoints (/sapi/v1/loan/...)"),
    param_rule("loan", "collateralCoin", "Binance's crypto-loan endpoints (/sapi/v1/loan/...)"),
    param_rule("convert", "fromAsset toAsset", "Binance's convert quote endpoint (/sapi/v1/convert/getQuote)"),
    param_rule("convert", "quoteId", "Binance's convert accept endpoint (/sapi/v1/convert/acceptQuote)"),
    param_rule("convert", "baseAsset quoteAsset", "Binance's convert limit and swap endpoints"),
    param_rule("convert", "fromCoin toCoin", "Binance US's OTC quote endpoint (/sapi/v1/otc/quotes)"),
    param_rule("payment", "token amount", "Binance's gift-card endpoint (/sapi/v1/giftcard/createCode)"),
    param_rule("payment", "baseToken faceToken", "Binance's gift-card endpoint (/sapi/v1/giftcard/buyCode)"),
    param_rule("block-trade", "blockOrderMatchingKey",
               "Binance's block-trade execution (/eapi/v1/block/order/execute)"),
    param_rule("block-trade", "liquidity legs", "Binance's options block-trade creation (/eapi/v1/block/order/create)"),
    param_rule("transfer", "asset amount",
               "Binance's transfer, borrow and repay endpoints (/sapi/v1/asset/transfer, /sapi/v1/futures/transfer, "
               "/sapi/v1/margin/loan...)"),
    # No Binance trading endpoint takes `amount` (orders use quantity / quoteOrderQty); the fund-moving
    # ones that send it with no other telling name do (ETH staking, portfolio-margin transfers,
    # isolated position margin), and `depositAmount` (dual investment) or `asset` alone (dust).
    param_rule("transfer", "amount", "Binance's fund-moving endpoints (staking, portfolio-margin transfer, position "
                                     "margin...): no trading endpoint takes 'amount'"),
    param_rule("earn", "depositAmount", "Binance's dual-investment subscription"),
    param_rule("convert", "asset", "Binance's dust transfer (/sapi/v1/asset/dust): no trading endpoint takes 'asset'"),
)

SETTINGS_RULES = (
    param_rule("account-settings", "leverage",
               "Binance's leverage endpoints (/fapi/v1/leverage, /dapi/v1/leverage, /papi/v1/um/leverage...)"),
    param_rule("account-settings", "marginType",
               "Binance's margin-type switch (/fapi/v1/marginType, /dapi/v1/marginType)"),
    param_rule("account-settings", "dualSidePosition",
               "Binance's position-mode switch (/fapi/v1/positionSide/dual, /dapi/v1/positionSide/dual...)"),
    param_rule("account-settings", "multiAssetsMargin",
               "Binance's multi-assets margin switch (/fapi/v1/multiAssetsMargin)"),
    param_rule("account-settings", "maxLeverage", "Binance's margin maximum leverage (/sapi/v1/margin/max-leverage)"),
    param_rule("account-settings", "feeBurn", "Binance's BNB fee switch (/fapi/v1/feeBurn, /papi/v1/um/feeBurn)"),
    param_rule("account-settings", "spotBNBBurn", "Binance's BNB burn switch (/sapi/v1/bnbBurn)"),
    param_rule("account-settings", "interestBNBBurn", "Binance's BNB burn switch (/sapi/v1/bnbBurn)"),
)


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    """Binance (and MEXC spot): any path, any method. An order is any parameter set with a side or a
    quantity: quantity, workingQuantity, pendingQuantity (order lists) are each an order's size."""
    top = v.fields()
    out: list[OrderFacts] = []
    names = top.names()
    if {"side", "workingside", "pendingside", "quoteorderqty"} & names or any(n.endswith("quantity") for n in names):
        out += _binance_order(top, None)
    for list_name in ("batchOrders", "legs"):
        for obj in batch(v, top, list_name) or ():
            out += _binance_order(fields_of(obj), top.symbol("symbol"))
    return out


# Types with a limit price the order will not cross; MARKET fills at the book. The stop and
# take-profit market types trigger a market order later, at a price nobody knows now: unread (None).
_LIMIT_TYPES = ("limit", "limit_maker", "stop_loss_limit", "take_profit_limit", "stop", "take_profit")


def _binance_order(f: Fields, inherited: str | None) -> list[OrderFacts]:
    symbol = f.symbol("symbol") or inherited
    quote = f.number("quoteOrderQty")
    # quantity x price is the notional in the quote asset (spot, margin, USD-M); COIN-M and options count
    # contracts, where it over-counts (a contract is worth far less than the price), never under. The path
    # is not signed, so it cannot tell them apart anyway. Order lists price each leg (workingPrice...).
    side = side_of(f.text("side"))
    sizes = [name for name in f.names() if name.endswith("quantity")]
    if not sizes:
        return [OrderFacts(symbol, None, quote, f.number("price"), side, _type(f, ""))]
    out = []
    for i, name in enumerate(sizes):
        leg = name.removesuffix("quantity")  # "", "working", "pending"
        out.append(OrderFacts(symbol, f.number(name), quote if i == 0 else None, f.number(leg + "price"),
                              side_of(f.text(leg + "side")) or side, _type(f, leg), base_sized=True))
    return out


def _type(f: Fields, leg: str) -> str | None:
    return type_of(f.text(leg + "type"), limit=_LIMIT_TYPES)


# Amends of the price alone: none. cancelReplace and the USD-M modify carry side, size and price (read as
# orders); keepPriority amends the size only.
RULES = Rules(
    path_bound=False, unbound_note=UnboundNote("{name} signs only the parameters, so the path is not bound", None),
    body_format=form_body, json_rpc=None, symbol_params=frozenset({"symbol", "symbols", "pair"}),
    path_symbols=(), read_orders=orders, read_amends=no_price_amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=SETTINGS_RULES, param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
