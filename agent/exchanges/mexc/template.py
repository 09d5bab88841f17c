"""MEXC's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

MEXC = Template(
    trading=(
        "GET /api/v3/account", "POST /api/v3/order", "GET /api/v3/order", "DELETE /api/v3/order",
        "GET /api/v3/openOrders", "GET /api/v3/myTrades",
        "GET /api/v1/private/account/assets", "GET /api/v1/private/position/open_positions",
        "POST /api/v1/private/order/submit", "POST /api/v1/private/order/cancel",
        "GET /api/v1/private/order/list/open_orders/*",
    ),
    settings=("POST /api/v1/private/position/change_leverage", "POST /api/v1/private/position/change_position_mode"),
)
