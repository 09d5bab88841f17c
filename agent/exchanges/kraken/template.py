"""Kraken's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

KRAKEN = Template(
    trading=(
        "POST /0/private/Balance", "POST /0/private/AddOrder", "POST /0/private/EditOrder",
        "POST /0/private/CancelOrder", "POST /0/private/OpenOrders", "POST /0/private/ClosedOrders",
        "POST /0/private/QueryOrders", "POST /0/private/TradesHistory",
    ),
    settings=(),
)
