"""KuCoin's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

KUCOIN = Template(
    trading=(
        "GET /api/v1/accounts", "POST /api/v1/orders", "DELETE /api/v1/orders/*", "GET /api/v1/orders",
        "GET /api/v1/orders/*", "GET /api/v1/fills",
    ),
    settings=(),
)

KUCOINFUTURES = Template(
    trading=(
        "GET /api/v1/account-overview", "GET /api/v1/positions", "POST /api/v1/orders", "DELETE /api/v1/orders/*",
        "GET /api/v1/orders", "GET /api/v1/orders/*", "GET /api/v1/fills",
    ),
    settings=("POST /api/v2/changeCrossUserLeverage", "POST /api/v2/position/changeMarginMode",
              "POST /api/v2/position/switchPositionMode"),
)
