"""OKX v5: HMAC-SHA256, base64, over timestamp + METHOD + requestPath + body; a passphrase (2.2).
The path is signed.
"""

from __future__ import annotations

from agent.exchanges.okx import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="okx", name="OKX", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=True,
             secret_encoding="text", options={}, docs="2.2", ccxt_id="okx",
             rules=rules.RULES, template=template.OKX),
)
