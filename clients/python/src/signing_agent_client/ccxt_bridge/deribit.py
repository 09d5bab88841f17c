"""Deribit (ccxt: deribit): authentication is the `deri-hmac-sha256` Authorization header.

ccxt sends private calls as GET with the params in the query; its `ts=` is the
instant the agent signs for, and the agent supplies its own nonce.
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held"}
_SCHEME = "deri-hmac-sha256 "


def unsign(exchange, built: dict, api) -> Unsigned | None:
    authorization = (built.get("headers") or {}).get("Authorization", "")
    if not authorization.startswith(_SCHEME):
        return None
    fields = dict(part.partition("=")[::2] for part in authorization[len(_SCHEME):].split(","))
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(body) if body else None)
    return Unsigned(base_url=base, request=request, timestamp_ms=int(fields["ts"]))
