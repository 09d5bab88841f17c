"""KuCoin (spot, UTA, futures): HMAC-SHA256, base64, over timestamp + METHOD + endpoint + body (2.3).
Spot and futures (api-futures.kucoin.com) take the same keys and scheme; ccxt's kucoinfutures
inherits kucoin.sign(). The passphrase is sent HMAC-signed for key versions 2 and 3.
"""

from __future__ import annotations

from agent.exchanges.kucoin import rules, scheme, template
from agent.exchanges.record import Exchange

EXCHANGES = (
    Exchange(id="kucoin", name="KuCoin", scheme=scheme.SCHEME, key_types=("hmac",), generated=(), passphrase=True,
             secret_encoding="text", options={"key_version": scheme.KEY_VERSIONS}, docs="2.3", ccxt_id="kucoin",
             rules=rules.RULES, template=template.KUCOIN),
    Exchange(id="kucoinfutures", name="KuCoin Futures", scheme=scheme.SCHEME, key_types=("hmac",), generated=(),
             passphrase=True, secret_encoding="text", options={"key_version": scheme.KEY_VERSIONS}, docs="2.3",
             ccxt_id="kucoinfutures", rules=rules.RULES, template=template.KUCOINFUTURES),
)
