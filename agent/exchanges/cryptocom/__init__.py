"""Crypto.com Exchange v1: hex HMAC-SHA256, placed in the JSON body, not in a header (2.8). POST for
everything: reads are the listed read endpoints.
"""

from __future__ import annotations

from agent.exchanges.cryptocom import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="cryptocom", name="Crypto.com", scheme=scheme.SCHEME, key_types=("hmac",), generated=(),
             passphrase=False, secret_encoding="text", options={}, docs="2.8", ccxt_id="cryptocom",
             rules=rules.RULES, template=template.CRYPTOCOM),
)
