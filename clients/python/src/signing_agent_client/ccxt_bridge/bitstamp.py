"""Bitstamp (ccxt: bitstamp): authentication is in the X-Auth-* headers.

ccxt stamps X-Auth-Timestamp (milliseconds); the agent signs for that instant
with a UUID nonce of its own. The form body is passed byte for byte (including
ccxt's dummy `foo=bar` on an empty private POST).
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held"}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "X-Auth-Signature" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(body) if body else None)
    return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["X-Auth-Timestamp"]))
