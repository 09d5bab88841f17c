"""Coinbase Advanced Trade (and Coinbase App v2): a fresh JWT per request, or legacy HMAC (2.4). CDP
keys are made by Coinbase and their private key handed out: imported, never generated. ES256 secret:
SEC1 PEM. Ed25519 secret: base64 of seed||public (88 characters). hmac: legacy keys.
"""

from __future__ import annotations

from agent.exchanges.coinbase import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="coinbase", name="Coinbase", scheme=scheme.SCHEME, key_types=("ec-p256", "ed25519", "hmac"),
             generated=(), passphrase=False, secret_encoding="text", options={}, docs="2.4", ccxt_id="coinbase",
             rules=rules.RULES, template=template.COINBASE),
)
