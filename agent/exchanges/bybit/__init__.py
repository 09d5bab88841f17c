"""Bybit v5: HMAC-SHA256 (hex) or RSA-PKCS1v15-SHA256 (base64) in X-BAPI-* headers (2.7). The payload
is signed (the query for a GET, the JSON body for a POST), not the path. RSA keys are
"self-generated", registered with Bybit by their public key; no Ed25519.
"""

from __future__ import annotations

from agent.exchanges.bybit import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="bybit", name="Bybit", scheme=scheme.SCHEME, key_types=("hmac", "rsa"), generated=("rsa",),
             passphrase=False, secret_encoding="text",
             options={"recv_window": (scheme.DEFAULT_RECV_WINDOW, "1000", "2000", "3000", "10000", "20000")},
             docs="2.7", ccxt_id="bybit", rules=rules.RULES, template=template.BYBIT),
)
