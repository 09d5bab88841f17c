"""Bitfinex v2 authenticated REST: HMAC-SHA384 over "/api" + path + nonce + JSON body (2.5). POST for
everything: reads are the listed read endpoints.
"""

from __future__ import annotations

from agent.exchanges.bitfinex import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="bitfinex", name="Bitfinex", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=False,
             secret_encoding="text", options={}, docs="2.5", ccxt_id="bitfinex",
             rules=rules.RULES, template=template.BITFINEX),
)
