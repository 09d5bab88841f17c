"""Gate v4: HMAC-SHA512, hex, over five lines; KEY, Timestamp and SIGN headers (2.10). Gate issues HMAC
keys only (no self-generated key type found, exchange-signing.md 1).
"""

from __future__ import annotations

from agent.exchanges.gate import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="gate", name="Gate", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.10", ccxt_id="gate",
             rules=rules.RULES, template=template.GATE),
)
