"""Bitget v2: timestamp + METHOD + requestPath + ("?" + query) + body, HMAC-SHA256 or RSA, base64;
a passphrase (2.14). The path is signed.
"""

from __future__ import annotations

from agent.exchanges.bitget import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="bitget", name="Bitget", scheme=scheme.SCHEME, key_types=("hmac", "rsa"), generated=("rsa",),
             passphrase=True, secret_encoding="text", options={}, docs="2.14", ccxt_id="bitget",
             rules=rules.RULES, template=template.BITGET),
)
