"""Bitstamp's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

BITSTAMP = Template(
    trading=(
        "POST /api/v2/account_balances/", "POST /api/v2/buy/*/", "POST /api/v2/sell/*/", "POST /api/v2/buy/market/*/",
        "POST /api/v2/sell/market/*/", "POST /api/v2/cancel_order/", "POST /api/v2/order_status/",
        "POST /api/v2/open_orders/all/", "POST /api/v2/user_transactions/",
    ),
    settings=(),
)
