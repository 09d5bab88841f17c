"""Coinbase (ccxt: coinbase): legacy CB-ACCESS-* headers or a JWT, by the agent's key type.

One ccxt id covers CDP keys (JWT: ES256 or EdDSA) and legacy HMAC keys; ccxt
chooses by the shape of its apiKey and secret. The placeholders here take ccxt's
legacy HMAC path, whose request differs from the JWT path only in the
authentication headers (URL, JSON body and Content-Type are built the same way),
and whose CB-ACCESS-TIMESTAMP gives the second ccxt stamped. The agent then
authenticates with whatever key type it holds, so the bridge need not know it.
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

# Not 88 characters, no trailing '=', no PEM, no 'organizations/': ccxt's legacy HMAC path.
PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held-placeholder"}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "CB-ACCESS-SIGN" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(body) if body else None)
    return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["CB-ACCESS-TIMESTAMP"]) * 1000)
