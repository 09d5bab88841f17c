"""Bitfinex's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

BITFINEX = Template(
    trading=(
        "POST /v2/auth/r/wallets", "POST /v2/auth/w/order/submit", "POST /v2/auth/w/order/update",
        "POST /v2/auth/w/order/cancel", "POST /v2/auth/r/orders", "POST /v2/auth/r/orders/*",
        "POST /v2/auth/r/trades/hist", "POST /v2/auth/r/trades/*/hist",
    ),
    settings=(),
)
