"""Bybit's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

BYBIT = Template(
    trading=(
        "GET /v5/account/wallet-balance", "GET /v5/position/list", "POST /v5/order/create", "POST /v5/order/amend",
        "POST /v5/order/cancel", "GET /v5/order/realtime", "GET /v5/order/history", "GET /v5/execution/list",
    ),
    settings=("POST /v5/position/set-leverage", "POST /v5/account/set-margin-mode", "POST /v5/position/switch-mode"),
)
