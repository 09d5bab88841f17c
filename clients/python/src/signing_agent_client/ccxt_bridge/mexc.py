"""MEXC (ccxt: mexc): spot (signature parameter) and futures (Signature header).

Spot and broker (https://api.mexc.com/api/v3/...): the `signature` parameter
ccxt appended is removed; ccxt's `timestamp` and `recvWindow` stay in the
query, so the agent signs for the instant ccxt chose. Futures
(https://api.mexc.com/api/v1/private/...): the ApiKey, Request-Time and
Signature headers are removed and Request-Time is the instant signed for.
The agent's MEXC scheme then picks spot or futures from the path prefix.
ccxt's `source` header (broker id) is decorative and dropped (exchange-signing.md 0.7).
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url, without
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held-placeholder"}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    base, path, query = split_url(built["url"])
    body = built.get("body")
    method = built["method"]
    if "Signature" in headers:  # futures (and ccxt's retired spot2, which the scheme refuses by path)
        request = UnsignedRequest(method, path, query=query, body=RawBody(body) if body else None)
        return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["Request-Time"]))
    if any(name == "signature" for name, _ in query):
        request = UnsignedRequest(
            method, path, query=without(query, "signature"), body=RawBody(body) if body else None
        )
        return Unsigned(base_url=base, request=request)
    return None
