"""Binance spot, USD-M futures, Binance US and Binance TR: one scheme, HMAC-SHA256 (or Ed25519, RSA)
over `totalParams` (2.1). The signature covers the parameters, not the path: a signature made for
one endpoint is valid at any other, so the parameter rules refuse the parameters of forbidden
endpoints on any path, and orders are recognised by their parameters. Bodies are form text.

Binance TR signs Binance-style according to third-party clients only: no official page was read and
ccxt has no class for it (so it has no bridge).
"""

from __future__ import annotations

from agent.exchanges.binance import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    # Spot: Ed25519 is what Binance recommends; HMAC keys are "deprecated" in its docs.
    Exchange(id="binance", name="Binance", scheme=scheme.SCHEME, key_types=("hmac", "ed25519", "rsa"),
             generated=("ed25519", "rsa"), passphrase=False, secret_encoding="text", options={}, docs="2.1",
             ccxt_id="binance", rules=rules.RULES, template=template.BINANCE),
    # USD-M futures: one Binance key signs spot and futures alike; RSA is documented for fapi.
    Exchange(id="binanceusdm", name="Binance USD-M", scheme=scheme.SCHEME, key_types=("hmac", "ed25519", "rsa"),
             generated=("ed25519", "rsa"), passphrase=False, secret_encoding="text", options={}, docs="2.1",
             ccxt_id="binanceusdm", rules=rules.RULES, template=template.BINANCEUSDM),
    Exchange(id="binanceus", name="Binance US", scheme=scheme.SCHEME, key_types=("hmac",), generated=(),
             passphrase=False, secret_encoding="text", options={}, docs="2.1", ccxt_id="binanceus",
             rules=rules.RULES, template=template.BINANCEUS),
    Exchange(id="binancetr", name="Binance TR", scheme=scheme.SCHEME, key_types=("hmac",), generated=(),
             passphrase=False, secret_encoding="text", options={}, docs="2.1 (unverified)", ccxt_id=None,
             rules=rules.RULES, template=template.BINANCETR),
)
