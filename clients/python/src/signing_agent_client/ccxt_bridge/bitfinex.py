"""Bitfinex (ccxt: bitfinex): nonce and signature are headers; the JSON body is kept byte for byte.

ccxt's nonce is milliseconds (bfx-nonce): it is passed on as the instant to sign for.
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held-" + "0" * 37}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "bfx-signature" not in headers:
        return None
    base, path, query = split_url(built["url"])
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(built.get("body") or ""))
    return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["bfx-nonce"]))
