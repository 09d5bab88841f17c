"""MEXC: spot (Binance-like, form bodies) and futures (/api/v1/private/, JSON); the path is not signed."""

from __future__ import annotations

from decimal import Decimal

from agent.exchanges.binance.rules import orders as binance_orders
from agent.exchanges.mexc.scheme import CONTRACT_PREFIX
from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, UnboundNote, explicit, param_rule
from agent.rules.orders import BASE, batch, fields_of, no_price_amends, sized
from agent.rules.view import FORM, JSON, View, maybe_json

# Account and position settings the unsigned path does not bind.
EXPLICIT = (
    explicit("account-settings", r"/api/v1/private/position/change_leverage",
             "sets a position's leverage (and its margin type)"),
    explicit("account-settings", r"/api/v1/private/position/change_position_mode",
             "switches between hedge and one-way position mode"),
    explicit("account-settings", r"/api/v1/private/position/change_auto_add_im", "switches auto-add-margin"),
    explicit("account-settings", r"/api/v1/private/position/change_margin",
             "adds or removes a position's margin (removing raises its effective leverage)"),
    explicit("account-settings", r"/api/v1/private/account/change_risk_level", "sets a position's risk limit"),
    explicit("account-settings", r"/api/v3/mxdeduct/enable", "switches paying fees in MX"),
)

PARAM_RULES = (
    param_rule("withdrawal", "coin address amount", "MEXC's withdrawal endpoint (/api/v3/capital/withdraw)"),
    param_rule("sub-account", "subAccount", "MEXC's sub-account endpoints (/api/v3/sub-account/...)"),
    param_rule("sub-account", "toAccount", "MEXC's internal transfer (/api/v3/capital/transfer/internal)"),
    param_rule("api-key-management", "permissions", "MEXC's sub-account API-key creation"),
    param_rule("transfer", "fromAccountType toAccountType", "MEXC's transfers (/api/v3/capital/transfer)"),
    param_rule("transfer", "asset amount", "MEXC's transfers (/api/v3/capital/transfer...)"),
)

SETTINGS_RULES = (
    param_rule("account-settings", "leverage positionType",
               "MEXC's leverage endpoint without a position (/api/v1/private/position/change_leverage)"),
    param_rule("account-settings", "leverage positionId",
               "MEXC's leverage endpoint on a position (/api/v1/private/position/change_leverage)"),
    param_rule("account-settings", "level positionType",
               "MEXC's risk limit (/api/v1/private/account/change_risk_level)"),
    param_rule("account-settings", "isEnabled",
               "MEXC's auto-add-margin switch (/api/v1/private/position/change_auto_add_im)"),
    param_rule("account-settings", "positionId amount",
               "MEXC's position margin (/api/v1/private/position/change_margin)"),
    param_rule("account-settings", "mxDeductEnable", "MEXC's MX fee switch (/api/v3/mxDeduct/enable)"),
)


def body_format(path: str, text: str) -> str:
    """Spot bodies are form text; futures (/api/v1/private/) bodies JSON."""
    return JSON if path.startswith(CONTRACT_PREFIX) else FORM


# -- orders ------------------------------------------------------------------------------------------


def orders(v: View) -> list[OrderFacts]:
    if not v.key.startswith(CONTRACT_PREFIX):
        return binance_orders(v)
    # Futures: a GET signs a sorted query and a POST a JSON body; only a POST can place an order.
    if v.method != "POST":
        return []
    top = v.fields()
    if isinstance(v.body, list):
        if v.body and all(_order_id(element) for element in v.body):
            return []  # a list of order ids (order/cancel): no endpoint places orders from one
        return [sized(f.symbol("symbol"), f.get("vol"), BASE) for f in map(fields_of, batch(v, top) or [{}])]
    if top.has("vol") or top.has("side"):
        return [sized(top.symbol("symbol"), top.get("vol"), BASE)]
    return []


def _order_id(value: object) -> bool:
    """A plain id (text or number), not an object or a list written as JSON text."""
    return (isinstance(value, (str, int, Decimal)) and not isinstance(value, bool)
            and not isinstance(maybe_json(value), (dict, list)))


# Amends of the price alone: none (MEXC has no amend endpoint).
RULES = Rules(
    path_bound=False, unbound_note=UnboundNote("{name} signs only the parameters, so the path is not bound", None),
    body_format=body_format, json_rpc=None, symbol_params=frozenset({"symbol", "symbols"}),
    path_symbols=(), read_orders=orders, read_amends=no_price_amends, reads=Reads(get=True, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=PARAM_RULES, settings_rules=SETTINGS_RULES, param_methods=None, methods=COMMON_METHODS,
    signature_is_login=None,
)
