"""Deribit's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

DERIBIT = Template(
    trading=(
        "GET /api/v2/private/get_account_summary", "GET /api/v2/private/get_positions", "GET /api/v2/private/buy",
        "GET /api/v2/private/sell", "GET /api/v2/private/edit", "GET /api/v2/private/cancel",
        "GET /api/v2/private/get_open_orders_by_currency", "GET /api/v2/private/get_user_trades_by_currency",
    ),
    settings=(),
)
