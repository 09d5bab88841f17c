"""Crypto.com's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

CRYPTOCOM = Template(
    trading=(
        "POST /v1/private/user-balance", "POST /v1/private/create-order", "POST /v1/private/cancel-order",
        "POST /v1/private/get-order-detail", "POST /v1/private/get-open-orders", "POST /v1/private/get-trades",
    ),
    settings=(),
)
