"""KuCoin (ccxt: kucoin, kucoinfutures): authentication is in the KC-API-* headers.

ccxt puts the query in its URL un-encoded (that is the text KuCoin signs), so it
is split here as text, never percent-decoded: what ccxt would have signed is what
the agent signs, or the agent refuses it. ccxt stamps KC-API-TIMESTAMP; the agent
signs for that instant. The key version and passphrase header come from the
agent's key, not from ccxt (which always sends version 2). ccxt's partner headers
(KC-API-PARTNER*) are not carried over (exchange-signing.md 0.7).
"""

from __future__ import annotations

from signing_agent_client.ccxt_bridge import Unsigned
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held", "password": "agent-held"}


def _raw_pairs(text: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple((name, value) for name, _, value in (part.partition("=") for part in text.split("&")))


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "KC-API-SIGN" not in headers:
        return None
    url, _, query_text = built["url"].partition("?")
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    body = built.get("body")
    request = UnsignedRequest(
        built["method"], "/" + path, query=_raw_pairs(query_text), body=RawBody(body) if body else None
    )
    return Unsigned(base_url=f"{scheme}://{host}", request=request, timestamp_ms=int(headers["KC-API-TIMESTAMP"]))
