"""Gate's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

GATE = Template(
    trading=(
        "GET /api/v4/spot/accounts", "POST /api/v4/spot/orders", "GET /api/v4/spot/orders", "GET /api/v4/spot/orders/*",
        "PATCH /api/v4/spot/orders/*",
        "DELETE /api/v4/spot/orders/*", "GET /api/v4/spot/open_orders", "GET /api/v4/spot/my_trades",
        "GET /api/v4/futures/*/accounts", "GET /api/v4/futures/*/positions", "POST /api/v4/futures/*/orders",
        "GET /api/v4/futures/*/orders", "DELETE /api/v4/futures/*/orders/*",
    ),
    settings=("POST /api/v4/futures/*/positions/*/leverage", "POST /api/v4/futures/*/dual_mode"),
)
