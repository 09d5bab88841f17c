"""Bitget (ccxt: bitget): authentication is in the ACCESS-* headers.

ccxt stamps ACCESS-TIMESTAMP; the agent signs for that instant. The query is
percent-decoded from ccxt's URL (the agent sorts and encodes it again as ccxt
does) and the JSON body is passed byte for byte.
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held", "password": "agent-held"}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "ACCESS-SIGN" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(body) if body is not None else None)
    return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["ACCESS-TIMESTAMP"]))
