"""Safe starting policies: for each exchange, the endpoints a trading bot needs and nothing else.

`signing-agent policy template --exchange binance --key binance-main` prints one. The lists
hold order placement, amendment and cancellation, and reads of orders, fills, balances and
positions: what ccxt's createOrder / cancelOrder / fetchOrder / fetchOpenOrders / fetchMyTrades
/ fetchBalance / fetchPositions use. Whatever an operator adds, the default-deny categories of
agent.rules (withdrawals, transfers, sub-accounts, API keys...) stay refused unless the key's
`allow` names them; tests check that no template endpoint falls in one.
"""

from __future__ import annotations

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

TEMPLATE = '''# Safe start for key "{key}" ({exchange}): trading only.
# Withdrawals, transfers, sub-accounts, API-key management and other fund-moving or
# account-changing endpoints are refused whatever this list says.
[keys."{key}"]
endpoints = [
{endpoints}
]
# symbols = ["..."]            # recommended: only the symbols this bot trades
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
    text = TEMPLATE.format(key=key, exchange=exchange, endpoints=endpoints)
    if bot:
        text += BOT_TEMPLATE.format(bot=bot, key=key)
    return text
