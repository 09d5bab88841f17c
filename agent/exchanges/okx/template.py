"""OKX's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

OKX = Template(
    trading=(
        "GET /api/v5/account/balance", "GET /api/v5/account/positions", "POST /api/v5/trade/order",
        "POST /api/v5/trade/batch-orders", "POST /api/v5/trade/amend-order", "POST /api/v5/trade/cancel-order",
        "POST /api/v5/trade/cancel-batch-orders", "GET /api/v5/trade/order", "GET /api/v5/trade/orders-pending",
        "GET /api/v5/trade/fills",
    ),
    settings=("POST /api/v5/account/set-leverage", "POST /api/v5/account/set-position-mode"),
)
