"""Bybit (ccxt: bybit): authentication is in the X-BAPI-* headers (v5).

ccxt stamps X-BAPI-TIMESTAMP; the agent signs for that instant. The POST JSON
body is passed byte for byte. The GET query is taken back from ccxt's URL:
ccxt writes it unencoded (rawencode), so it is split on '&' and '=' and
percent-decoded without turning '+' into a space (a '+' ccxt wrote is a '+');
the scheme sends it percent-encoded, which gives ccxt's bytes for values of
A-Z a-z 0-9 _ . - ~ and for values ccxt passes already encoded (cursors).
X-BAPI-RECV-WINDOW comes from the key's recv_window option, not from ccxt's
options['recvWindow'] (the same 5000 ms unless either is changed). ccxt's
`Referer` header (brokerId) is decorative and dropped (exchange-signing.md 0.7).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held-placeholder"}


def query_pairs(query: str) -> tuple[tuple[str, str], ...]:
    """NAME=VALUE&... as ccxt's rawencode wrote it, percent-decoded ('+' stays '+')."""
    pairs = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return tuple(pairs)


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    api_name = api[0] if isinstance(api, (list, tuple)) else api
    if "X-BAPI-SIGN" not in headers:
        if api_name == "private":
            raise ValueError(
                "ccxt signed this Bybit request with a retired v2/v3 scheme; the agent signs v5 endpoints only"
            )
        return None
    base, path, _ = split_url(built["url"])
    method = built["method"]
    if method == "POST":
        request = UnsignedRequest(method, path, body=RawBody(built.get("body") or "{}"))
    else:
        request = UnsignedRequest(method, path, query=query_pairs(urlsplit(built["url"]).query))
    return Unsigned(base_url=base, request=request, timestamp_ms=int(headers["X-BAPI-TIMESTAMP"]))
