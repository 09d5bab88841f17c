"""KuCoin's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

# ccxt's load_markets asks for the margin pairs with the key (fetch_markets: cross, then isolated) and
# has no option that turns this off, so without these a ccxt bot stops before its first order. Both are
# reads of the exchange's margin configuration (which pairs, which leverage caps): no balance, no
# order, nothing that moves; no default-deny category covers them.
LOAD_MARKETS = ("GET /api/v3/margin/symbols", "GET /api/v1/isolated/symbols")

KUCOIN = Template(
    trading=(
        "GET /api/v1/accounts", "POST /api/v1/orders", "DELETE /api/v1/orders/*", "GET /api/v1/orders",
        "GET /api/v1/orders/*", "GET /api/v1/fills", *LOAD_MARKETS,
    ),
    settings=(),
)

KUCOINFUTURES = Template(
    trading=(
        "GET /api/v1/account-overview", "GET /api/v1/positions", "POST /api/v1/orders", "DELETE /api/v1/orders/*",
        "GET /api/v1/orders", "GET /api/v1/orders/*", "GET /api/v1/fills", *LOAD_MARKETS,
    ),
    settings=("POST /api/v2/changeCrossUserLeverage", "POST /api/v2/position/changeMarginMode",
              "POST /api/v2/position/switchPositionMode"),
)
