"""Safe starting policies: for each exchange, the endpoints a trading bot needs and nothing else.

`signing-agent policy template --exchange binance --key binance-main` prints one. The lists
hold order placement, amendment and cancellation, and reads of orders, fills, balances and
positions: what ccxt's createOrder / cancelOrder / fetchOrder / fetchOpenOrders / fetchMyTrades
/ fetchBalance / fetchPositions use. Whatever an operator adds, the default-deny categories of
agent.rules (withdrawals, transfers, sub-accounts, API keys...) stay refused unless the key's
`allow` names them; tests check that no template endpoint falls in one.

Futures templates say, in a comment, how a key whose bot must set leverage, margin mode or position
mode itself gets those endpoints, and why they are off by default: with a bot's token an attacker
could raise leverage, then trade. On Binance, Bybit and MEXC (which do not sign the path) that takes
`allow = ["account-settings"]` too, as the endpoint list cannot bind a signature to its path there.
"""

from __future__ import annotations

from agent.rules import PATH_BOUND
from agent.rules.view import display_name
from agent.schemes import scheme_for

_BINANCE_SPOT = (
    "GET /api/v3/account", "POST /api/v3/order", "POST /api/v3/order/test", "GET /api/v3/order",
    "DELETE /api/v3/order", "GET /api/v3/openOrders", "DELETE /api/v3/openOrders", "GET /api/v3/allOrders",
    "GET /api/v3/myTrades",
)

TRADING_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "binance": _BINANCE_SPOT,
    "binanceus": _BINANCE_SPOT,
    "binanceusdm": (
        "GET /fapi/v2/account", "GET /fapi/v2/balance", "GET /fapi/v2/positionRisk", "POST /fapi/v1/order",
        "GET /fapi/v1/order", "DELETE /fapi/v1/order", "GET /fapi/v1/openOrders", "DELETE /fapi/v1/allOpenOrders",
        "GET /fapi/v1/userTrades",
    ),
    "binancetr": (
        "GET /open/v1/account/spot", "POST /open/v1/orders", "GET /open/v1/orders", "GET /open/v1/orders/detail",
        "POST /open/v1/orders/cancel", "GET /open/v1/orders/trades",
    ),
    "okx": (
        "GET /api/v5/account/balance", "GET /api/v5/account/positions", "POST /api/v5/trade/order",
        "POST /api/v5/trade/batch-orders", "POST /api/v5/trade/amend-order", "POST /api/v5/trade/cancel-order",
        "POST /api/v5/trade/cancel-batch-orders", "GET /api/v5/trade/order", "GET /api/v5/trade/orders-pending",
        "GET /api/v5/trade/fills",
    ),
    "kucoin": (
        "GET /api/v1/accounts", "POST /api/v1/orders", "DELETE /api/v1/orders/*", "GET /api/v1/orders",
        "GET /api/v1/orders/*", "GET /api/v1/fills",
    ),
    "kucoinfutures": (
        "GET /api/v1/account-overview", "GET /api/v1/positions", "POST /api/v1/orders", "DELETE /api/v1/orders/*",
        "GET /api/v1/orders", "GET /api/v1/orders/*", "GET /api/v1/fills",
    ),
    "bitget": (
        "GET /api/v2/spot/account/assets", "POST /api/v2/spot/trade/place-order", "POST /api/v2/spot/trade/cancel-order",
        "GET /api/v2/spot/trade/orderInfo", "GET /api/v2/spot/trade/unfilled-orders", "GET /api/v2/spot/trade/fills",
        "GET /api/v2/mix/account/accounts", "GET /api/v2/mix/position/all-position", "POST /api/v2/mix/order/place-order",
        "POST /api/v2/mix/order/cancel-order", "GET /api/v2/mix/order/detail", "GET /api/v2/mix/order/orders-pending",
    ),
    "kraken": (
        "POST /0/private/Balance", "POST /0/private/AddOrder", "POST /0/private/EditOrder", "POST /0/private/CancelOrder",
        "POST /0/private/OpenOrders", "POST /0/private/ClosedOrders", "POST /0/private/QueryOrders",
        "POST /0/private/TradesHistory",
    ),
    "bitfinex": (
        "POST /v2/auth/r/wallets", "POST /v2/auth/w/order/submit", "POST /v2/auth/w/order/update",
        "POST /v2/auth/w/order/cancel", "POST /v2/auth/r/orders", "POST /v2/auth/r/orders/*",
        "POST /v2/auth/r/trades/hist", "POST /v2/auth/r/trades/*/hist",
    ),
    "gemini": (
        "POST /v1/balances", "POST /v1/order/new", "POST /v1/order/cancel", "POST /v1/order/status", "POST /v1/orders",
        "POST /v1/mytrades",
    ),
    "bybit": (
        "GET /v5/account/wallet-balance", "GET /v5/position/list", "POST /v5/order/create", "POST /v5/order/amend",
        "POST /v5/order/cancel", "GET /v5/order/realtime", "GET /v5/order/history", "GET /v5/execution/list",
    ),
    "mexc": (
        "GET /api/v3/account", "POST /api/v3/order", "GET /api/v3/order", "DELETE /api/v3/order",
        "GET /api/v3/openOrders", "GET /api/v3/myTrades",
        "GET /api/v1/private/account/assets", "GET /api/v1/private/position/open_positions",
        "POST /api/v1/private/order/submit", "POST /api/v1/private/order/cancel",
        "GET /api/v1/private/order/list/open_orders/*",
    ),
    "coinbase": (
        "GET /api/v3/brokerage/accounts", "POST /api/v3/brokerage/orders", "POST /api/v3/brokerage/orders/edit",
        "POST /api/v3/brokerage/orders/batch_cancel", "GET /api/v3/brokerage/orders/historical/batch",
        "GET /api/v3/brokerage/orders/historical/fills", "GET /api/v3/brokerage/orders/historical/*",
    ),
    "bitstamp": (
        "POST /api/v2/account_balances/", "POST /api/v2/buy/*/", "POST /api/v2/sell/*/", "POST /api/v2/buy/market/*/",
        "POST /api/v2/sell/market/*/", "POST /api/v2/cancel_order/", "POST /api/v2/order_status/",
        "POST /api/v2/open_orders/all/", "POST /api/v2/user_transactions/",
    ),
    "cryptocom": (
        "POST /v1/private/user-balance", "POST /v1/private/create-order", "POST /v1/private/cancel-order",
        "POST /v1/private/get-order-detail", "POST /v1/private/get-open-orders", "POST /v1/private/get-trades",
    ),
    "deribit": (
        "GET /api/v2/private/get_account_summary", "GET /api/v2/private/get_positions", "GET /api/v2/private/buy",
        "GET /api/v2/private/sell", "GET /api/v2/private/edit", "GET /api/v2/private/cancel",
        "GET /api/v2/private/get_open_orders_by_currency", "GET /api/v2/private/get_user_trades_by_currency",
    ),
    "gate": (
        "GET /api/v4/spot/accounts", "POST /api/v4/spot/orders", "GET /api/v4/spot/orders", "GET /api/v4/spot/orders/*",
        "DELETE /api/v4/spot/orders/*", "GET /api/v4/spot/open_orders", "GET /api/v4/spot/my_trades",
        "GET /api/v4/futures/*/accounts", "GET /api/v4/futures/*/positions", "POST /api/v4/futures/*/orders",
        "GET /api/v4/futures/*/orders", "DELETE /api/v4/futures/*/orders/*",
    ),
    "htx": (
        "GET /v1/account/accounts", "GET /v1/account/accounts/*/balance", "POST /v1/order/orders/place",
        "POST /v1/order/orders/*/submitcancel", "GET /v1/order/orders/*", "GET /v1/order/openOrders",
        "GET /v1/order/matchresults",
    ),
}

# The endpoints ccxt's set_leverage, set_margin_mode and set_position_mode use, for the futures
# templates' comment (agent.rules: account-settings where the path is not signed).
SETTINGS_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "binanceusdm": ("POST /fapi/v1/leverage", "POST /fapi/v1/marginType", "POST /fapi/v1/positionSide/dual"),
    "bybit": ("POST /v5/position/set-leverage", "POST /v5/account/set-margin-mode", "POST /v5/position/switch-mode"),
    "mexc": ("POST /api/v1/private/position/change_leverage", "POST /api/v1/private/position/change_position_mode"),
    "okx": ("POST /api/v5/account/set-leverage", "POST /api/v5/account/set-position-mode"),
    "kucoinfutures": ("POST /api/v2/changeCrossUserLeverage", "POST /api/v2/position/changeMarginMode",
                      "POST /api/v2/position/switchPositionMode"),
    "bitget": ("POST /api/v2/mix/account/set-leverage", "POST /api/v2/mix/account/set-margin-mode",
               "POST /api/v2/mix/account/set-position-mode"),
    "gate": ("POST /api/v4/futures/*/positions/*/leverage", "POST /api/v4/futures/*/dual_mode"),
}

_UNBOUND_SETTINGS = '''# Leverage, margin mode and position mode are refused by default (category
# "account-settings"): with this bot's token an attacker could raise leverage, then trade (size
# caps bound each order, not the margin behind a position). {name} does not sign the request
# path, so this list cannot keep a signature from being sent to those endpoints: the category can.
# Best: set them once on the exchange. A key whose bot must set them itself (ccxt set_leverage,
# set_margin_mode, set_position_mode) uncomments `allow` and adds the endpoints to the list:
# allow = ["account-settings"]
{endpoints}
'''
_BOUND_SETTINGS = '''# Leverage, margin mode and position mode are off by default: with this bot's token an attacker
# could raise leverage, then trade (size caps bound each order, not the margin behind a
# position). {name} signs the request path, so this list decides: a key whose bot must set them
# itself (ccxt set_leverage, set_margin_mode, set_position_mode) adds the endpoints:
{endpoints}
'''

TEMPLATE = '''# Safe start for key "{key}" ({exchange}): trading only.
# Withdrawals, transfers, sub-accounts, API-key management and other fund-moving or
# account-changing endpoints are refused whatever this list says.
[keys."{key}"]
endpoints = [
{endpoints}
]
{settings}# symbols = ["..."]            # recommended: only the symbols this bot trades
rate_per_second = 10           # this key, all bots together
# max_order = {{ SYMBOL = "0.01" }}        # base quantity per order
# max_order_quote = {{ SYMBOL = "500" }}   # quote amount per order
timestamps = "skew"            # caller clocks within timestamp_skew_ms of the agent's
max_age_days = 90              # rotate keys at least this often
'''

BOT_TEMPLATE = '''
[bots."{bot}"]
keys = ["{key}"]
rate_per_second = 20
'''


def default_policy(exchange: str, key: str, *, bot: str | None = None) -> str:
    """The TOML text of a safe starting policy for KEY on EXCHANGE (and a grant to BOT)."""
    scheme_for(exchange)  # UnknownExchange, naming the exchanges there are
    endpoints = "\n".join(f'  "{e}",' for e in TRADING_ENDPOINTS[exchange])
    text = TEMPLATE.format(key=key, exchange=exchange, endpoints=endpoints, settings=_settings(exchange))
    if bot:
        text += BOT_TEMPLATE.format(bot=bot, key=key)
    return text


def _settings(exchange: str) -> str:
    """The futures templates' comment on leverage, margin mode and position mode; '' for the others."""
    listed = SETTINGS_ENDPOINTS.get(exchange)
    if not listed:
        return ""
    form = _BOUND_SETTINGS if PATH_BOUND[exchange] else _UNBOUND_SETTINGS
    return form.format(name=display_name(exchange), endpoints="\n".join(f'#   "{e}",' for e in listed))
