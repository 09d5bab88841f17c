"""MEXC spot v3 and futures (contract): HMAC-SHA256, lowercase hex; which scheme, by path prefix (2.15).
Spot (/api/v3/) is Binance-like with form bodies, futures (/api/v1/private/) take JSON. Neither
signs the path.
"""

from __future__ import annotations

from agent.exchanges.mexc import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="mexc", name="MEXC", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.15", ccxt_id="mexc",
             rules=rules.RULES, template=template.MEXC),
)
