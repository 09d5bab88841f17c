"""Deribit: per-request HMAC header auth (deri-hmac-sha256, 2.9). JSON-RPC: the path (under /api/v2) or
the body names the method; GET requests write, so only get_* methods are reads.
"""

from __future__ import annotations

from agent.exchanges.deribit import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="deribit", name="Deribit", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.9", ccxt_id="deribit",
             rules=rules.RULES, template=template.DERIBIT),
)
