"""HTX (Huobi) Signature V2: HMAC-SHA256 or Ed25519, base64, over four lines (2.12). The path is signed,
a POST body is not: the body the policy read is not bound to the signature, so HTX counts as not
path-bound. Ed25519 keys are registered on HTX by public key.
"""

from __future__ import annotations

from agent.exchanges.htx import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="htx", name="HTX", scheme=scheme.SCHEME, key_types=("hmac", "ed25519"), generated=("ed25519",),
             passphrase=False, secret_encoding="text",
             options={"spot_host": scheme.SPOT_HOSTS, "contract_host": scheme.CONTRACT_HOSTS}, docs="2.12",
             ccxt_id="htx", rules=rules.RULES, template=template.HTX),
)
