"""Bitget's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

BITGET = Template(
    trading=(
        "GET /api/v2/spot/account/assets", "POST /api/v2/spot/trade/place-order",
        "POST /api/v2/spot/trade/cancel-order", "GET /api/v2/spot/trade/orderInfo",
        "GET /api/v2/spot/trade/unfilled-orders", "GET /api/v2/spot/trade/fills",
        "GET /api/v2/mix/account/accounts", "GET /api/v2/mix/position/all-position",
        "POST /api/v2/mix/order/place-order", "POST /api/v2/mix/order/cancel-order",
        "GET /api/v2/mix/order/detail", "GET /api/v2/mix/order/orders-pending",
    ),
    settings=("POST /api/v2/mix/account/set-leverage", "POST /api/v2/mix/account/set-margin-mode",
              "POST /api/v2/mix/account/set-position-mode"),
)
