"""Kraken spot REST: HMAC-SHA512 over the path and SHA-256(nonce || POST body); the secret is base64
(2.13). POST for everything; form bodies, or JSON.
"""

from __future__ import annotations

from agent.exchanges.kraken import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="kraken", name="Kraken", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="base64", options={}, docs="2.13", ccxt_id="kraken",
             rules=rules.RULES, template=template.KRAKEN),
)
