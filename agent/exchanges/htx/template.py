"""HTX's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

HTX = Template(
    trading=(
        "GET /v1/account/accounts", "GET /v1/account/accounts/*/balance", "POST /v1/order/orders/place",
        "POST /v1/order/orders/*/submitcancel", "GET /v1/order/orders/*", "GET /v1/order/openOrders",
        "GET /v1/order/matchresults",
    ),
    settings=(),
)
