"""Crypto.com's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

# The Exchange API v1 lives under /exchange/v1/ (https://api.crypto.com/exchange/v1/private/...): that is the
# path ccxt sends and the agent signs, so the allow-list names it whole.
CRYPTOCOM = Template(
    trading=(
        "POST /exchange/v1/private/user-balance", "POST /exchange/v1/private/create-order",
        "POST /exchange/v1/private/cancel-order", "POST /exchange/v1/private/get-order-detail",
        "POST /exchange/v1/private/get-open-orders", "POST /exchange/v1/private/get-trades",
    ),
    settings=(),
)
