"""Coinbase's safe starting policy (agent.policy_templates): trading endpoints, and settings ones for futures."""

from agent.exchanges.record import Template

COINBASE = Template(
    trading=(
        "GET /api/v3/brokerage/accounts", "POST /api/v3/brokerage/orders", "POST /api/v3/brokerage/orders/edit",
        "POST /api/v3/brokerage/orders/batch_cancel", "GET /api/v3/brokerage/orders/historical/batch",
        "GET /api/v3/brokerage/orders/historical/fills", "GET /api/v3/brokerage/orders/historical/*",
        # ccxt's load_markets reads the account's fee tier here (no option turns it off): volume and fee
        # rates only, nothing that moves; no default-deny category covers it.
        "GET /api/v3/brokerage/transaction_summary",
    ),
    settings=(),
)
