"""Binance's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

_SPOT = (
        "GET /api/v3/account", "POST /api/v3/order", "POST /api/v3/order/test", "GET /api/v3/order",
        "DELETE /api/v3/order", "GET /api/v3/openOrders", "DELETE /api/v3/openOrders", "GET /api/v3/allOrders",
        "GET /api/v3/myTrades",
)

BINANCE = Template(
    trading=_SPOT,
    settings=(),
)

BINANCEUSDM = Template(
    trading=(
        "GET /fapi/v2/account", "GET /fapi/v2/balance", "GET /fapi/v2/positionRisk", "POST /fapi/v1/order",
        "GET /fapi/v1/order", "DELETE /fapi/v1/order", "GET /fapi/v1/openOrders", "DELETE /fapi/v1/allOpenOrders",
        "GET /fapi/v1/userTrades",
    ),
    settings=("POST /fapi/v1/leverage", "POST /fapi/v1/marginType", "POST /fapi/v1/positionSide/dual"),
)

BINANCEUS = Template(
    trading=_SPOT,
    settings=(),
)

BINANCETR = Template(
    trading=(
        "GET /open/v1/account/spot", "POST /open/v1/orders", "GET /open/v1/orders", "GET /open/v1/orders/detail",
        "POST /open/v1/orders/cancel", "GET /open/v1/orders/trades",
    ),
    settings=(),
)
