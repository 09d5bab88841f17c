"""Gemini's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

GEMINI = Template(
    trading=(
        "POST /v1/balances", "POST /v1/order/new", "POST /v1/order/cancel", "POST /v1/order/status", "POST /v1/orders",
        "POST /v1/mytrades",
    ),
    settings=(),
)
