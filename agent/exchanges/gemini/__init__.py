"""Gemini REST: HMAC-SHA384 over the base64 of a JSON payload sent in a header (2.11).
"""

from __future__ import annotations

from agent.exchanges.gemini import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="gemini", name="Gemini", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.11", ccxt_id="gemini",
             rules=rules.RULES, template=template.GEMINI),
)
