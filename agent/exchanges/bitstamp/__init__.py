"""Bitstamp v2: hex HMAC-SHA256 over a 10-part concatenation, in X-Auth-* headers (2.6); form bodies,
the pair in some paths.
"""

from __future__ import annotations

from agent.exchanges.bitstamp import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="bitstamp", name="Bitstamp", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.6", ccxt_id="bitstamp",
             rules=rules.RULES, template=template.BITSTAMP),
)
