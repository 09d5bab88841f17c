"""Binance (ccxt: binance, binanceusdm, binanceus): the signature is the last parameter.

ccxt stamps `timestamp` as a parameter; it is kept, so the agent signs for the
instant ccxt chose. The body is passed byte for byte (ccxt's form encoding).
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url, without
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held-" + "0" * 54}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    base, path, query = split_url(built["url"])
    body = built.get("body") or ""
    if not any(name == "signature" for name, _ in query) and "signature=" not in body:
        return None
    if body:
        text, _, _ = body.rpartition("&signature=")
        request = UnsignedRequest(built["method"], path, query=query, body=RawBody(text))
    else:
        request = UnsignedRequest(built["method"], path, query=without(query, "signature"))
    return Unsigned(base_url=base, request=request)
