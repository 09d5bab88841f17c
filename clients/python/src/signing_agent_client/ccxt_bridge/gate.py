"""Gate (ccxt: gate): authentication is in the KEY, Timestamp and SIGN headers.

The agent's path is the full `/api/v4/...` path (what Gate signs), so the base
URL is only scheme and host. ccxt's Timestamp header (seconds) is the instant
the agent signs for. The query is decoded here and re-encoded by the scheme
exactly as ccxt encodes it; the JSON body (`{}` for a POST without parameters,
none for GET/DELETE and ccxt's query-only futures POSTs) is passed byte for byte.

ccxt also returns `X-Gate-Size-Decimal: 1` for futures calls (decimal contract
sizes). No signature covers it, but it changes what Gate accepts and returns,
so it must reach the exchange: it is passed on as an extra header.
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held"}

# ccxt headers that no signature covers but that change the request's meaning.
KEPT_HEADERS = ("X-Gate-Size-Decimal",)


def kept_headers(built: dict) -> tuple[tuple[str, str], ...]:
    headers = built.get("headers") or {}
    return tuple((name, headers[name]) for name in KEPT_HEADERS if name in headers)


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "SIGN" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=None if body is None else RawBody(body))
    return Unsigned(
        base_url=base, request=request, timestamp_ms=int(headers["Timestamp"]) * 1000, extra_headers=kept_headers(built)
    )
