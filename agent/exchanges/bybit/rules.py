"""Bybit (v5): the payload is signed, not the path; GET payloads are the query, POST a JSON object."""

from __future__ import annotations

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, UnboundNote, explicit, param_rule
from agent.rules.orders import BASE, BOTH, QUOTE, batch, fields_of, repriced, side_of, sized, traded, type_of, unsure
from agent.rules.view import Fields, View, json_body

_POSITION = r"/(?:v5|(?:contract|unified)/v3/private(?:/copytrading)?)/position/"
# Endpoints whose names carry no keyword; then the account and position settings the path does not bind.
EXPLICIT = (
    explicit("api-key-management", r"/v5/user/(update|delete|create)-api", "manages this account's API keys"),
    explicit("convert", r"/v5/asset/exchange/.*", "converts between coins"),
    explicit("sub-account", r"/v5/user/(create-sub-member|frozen-sub-member|del-submember)",
             "creates, freezes or deletes sub-members", any_method=True),
    explicit("account-settings", _POSITION + r"set-leverage", "sets a symbol's leverage"),
    explicit("account-settings", _POSITION + r"switch-isolated",
             "switches a symbol between isolated and cross margin (and sets its leverage)"),
    explicit("account-settings", _POSITION + r"switch-mode", "switches between hedge and one-way position mode"),
    explicit("account-settings", _POSITION + r"set-risk-limit", "sets a position's risk limit"),
    explicit("account-settings", _POSITION + r"set-auto-add-margin", "switches auto-add-margin"),
    explicit("account-settings", r"/v5/position/add-margin",
             "adds or removes a position's margin (removing raises its effective leverage)"),
    explicit("account-settings", r"/v5/account/set-margin-mode|/(?:contract|unified)/v3/private/account/setmarginmode",
             "switches the account's margin mode (isolated, cross, portfolio)"),
    explicit("account-settings", r"/v5/account/set-hedging-mode", "switches spot hedging"),
    explicit("account-settings", r"/v5/account/set-collateral-switch(?:-batch)?", "switches coins as collateral"),
    explicit("account-settings", r"/v5/account/set-delta-mode", "switches delta-neutral mode"),
    explicit("account-settings", r"/v5/account/set-limit-px-action", "sets what happens to orders beyond price limits"),
    explicit("account-settings", r"/v5/account/upgrade-to-uta", "upgrades the account to a unified trading account"),
    explicit("account-settings", r"/v5/spot-margin-trade/(?:switch-mode|set-leverage)",
             "switches spot margin trading or sets its leverage"),
    explicit("account-settings", r"/v5/spot-cross-margin-trade/switch", "switches spot margin trading"),
)

PARAM_RULES = (
    param_rule("withdrawal", "coin address amount", "Bybit's withdrawal endpoint (/v5/asset/withdraw/create)"),
    param_rule("sub-account", "fromMemberId", "Bybit's universal transfer (/v5/asset/transfer/universal-transfer)"),
    param_rule("sub-account", "toMemberId", "Bybit's universal transfer (/v5/asset/transfer/universal-transfer)"),
    param_rule("sub-account", "subuid", "Bybit's sub-member and sub-API endpoints (/v5/user/...)"),
    param_rule("sub-account", "subMemberIds", "Bybit's sub-member transfer settings"),
    param_rule("sub-account", "memberType", "Bybit's sub-member creation (/v5/user/create-sub-member)"),
    param_rule("api-key-management", "permissions", "Bybit's API-key endpoints (/v5/user/update-api...)"),
    param_rule("api-key-management", "apikey", "Bybit's API-key deletion (/v5/user/delete-sub-api)"),
    param_rule("transfer", "fromAccountType toAccountType",
               "Bybit's transfers (/v5/asset/transfer/inter-transfer, universal-transfer)"),
    param_rule("transfer", "transferId", "Bybit's transfers (/v5/asset/transfer/inter-transfer)"),
    param_rule("transfer", "fromUid toUid", "Bybit's position move (/v5/position/move-positions)"),
    param_rule("loan", "loanCurrency", "Bybit's crypto-loan endpoints (/v5/crypto-loan/...)"),
    param_rule("convert", "fromCoin toCoin", "Bybit's convert quote (/v5/asset/exchange/quote-apply)"),
    param_rule("convert", "quoteTxId", "Bybit's convert execution (/v5/asset/exchange/convert-execute)"),
    param_rule("earn", "ltCoin", "Bybit's leveraged-token purchase and redemption"),
    param_rule("earn", "productId", "Bybit's earn orders (/v5/earn/place-order)"),
    param_rule("margin-borrow", "coin qty", "Bybit's spot-margin borrow (/v5/spot-cross-margin-trade/loan)"),
    param_rule("transfer", "coin amount", "Bybit's borrow, repay, lending and earn endpoints (/v5/account/borrow...)"),
)

SETTINGS_RULES = (
    param_rule("account-settings", "buyLeverage sellLeverage",
               "Bybit's leverage endpoints (/v5/position/set-leverage, /v5/position/switch-isolated)"),
    param_rule("account-settings", "tradeMode", "Bybit's margin-type switch (/v5/position/switch-isolated)"),
    param_rule("account-settings", "category mode", "Bybit's position-mode switch (/v5/position/switch-mode)"),
    param_rule("account-settings", "riskId", "Bybit's risk limit (/v5/position/set-risk-limit)"),
    param_rule("account-settings", "autoAddMargin",
               "Bybit's auto-add-margin switch (/v5/position/set-auto-add-margin)"),
    param_rule("account-settings", "margin", "Bybit's position margin (/v5/position/add-margin)"),
    param_rule("account-settings", "setMarginMode", "Bybit's margin-mode switch (/v5/account/set-margin-mode)"),
    param_rule("account-settings", "setHedgingMode", "Bybit's spot hedging switch (/v5/account/set-hedging-mode)"),
    param_rule("account-settings", "collateralSwitch", "Bybit's collateral switch (/v5/account/set-collateral-switch)"),
    param_rule("account-settings", "spotMarginMode", "Bybit's spot margin switch (/v5/spot-margin-trade/switch-mode)"),
    param_rule("account-settings", "leverage", "Bybit's spot margin leverage (/v5/spot-margin-trade/set-leverage)"),
    param_rule("account-settings", "switch", "Bybit's spot margin switch (/v5/spot-cross-margin-trade/switch)"),
)


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    if v.method != "POST":  # GET payloads (query strings) cannot be replayed as a POST body
        return []
    top = v.fields()
    out: list[OrderFacts] = []
    if top.has("qty") or top.has("side"):
        out.append(_bybit_order(top, top, None))
    for obj in batch(v, top, "request") or ():
        out.append(_bybit_order(fields_of(obj), top, top.symbol("symbol")))
    return out


def amends(v: View) -> list[OrderFacts]:
    """/v5/order/amend of the price only: an order id and a price, no qty and no side (with both, the request
    is read as an order). Bybit signs no path, so these parameters on any path are read the same way. The
    items of a batch amend are orders (agent.rules.orders' batch), priced where they carry one."""
    if v.method != "POST":
        return []
    top = v.fields()
    if top.has("qty") or top.has("side") or not (top.has("orderId") or top.has("orderLinkId")):
        return []
    return [repriced(top.symbol("symbol"), top.get("price"))] if top.has("price") else []


def _bybit_order(f: Fields, top: Fields, inherited: str | None) -> OrderFacts:
    symbol = f.symbol("symbol") or inherited
    holder = f if f.has("category") else top
    if unsure(f, "orderType", "side", "marketUnit") or unsure(holder, "category"):
        return sized(symbol, f.get("qty"), BOTH)
    category, order_type, side = holder.text("category"), f.text("orderType"), f.text("side")
    if order_type != "market" or category not in ("spot", ""):
        unit = BASE
    else:
        unit = {"quotecoin": QUOTE, "basecoin": BASE}.get(f.text("marketUnit")) if f.has("marketUnit") else None
        if unit is None and not f.has("marketUnit") and category == "spot":
            # Bybit: a spot market buy is sized in the quote coin unless marketUnit says otherwise.
            unit = QUOTE if side == "buy" else BASE if side == "sell" else BOTH
        unit = unit or BOTH
    if category not in ("spot", "linear"):  # inverse contracts count USD, options contracts: not priced
        return sized(symbol, f.get("qty"), unit)
    # Spot and linear (USDT, USDC) contracts count the base coin: qty x price is the notional.
    return traded(symbol, f.get("qty"), unit, price=f.get("price") if order_type != "market" else None,
                  side=side_of(side), order_type=type_of(order_type))


RULES = Rules(
    path_bound=False, unbound_note=UnboundNote("{name} signs only the payload, so the path is not bound", None),
    body_format=json_body, json_rpc=None, symbol_params=frozenset({"symbol"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=SETTINGS_RULES, param_methods=frozenset({"POST"}), methods=COMMON_METHODS,
    signature_is_login=None,
)
