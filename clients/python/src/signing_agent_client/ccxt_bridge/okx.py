"""OKX (ccxt: okx): authentication is in the OK-ACCESS-* headers.

ccxt stamps OK-ACCESS-TIMESTAMP (ISO-8601, milliseconds); the agent signs for
that instant. The query and the JSON body are passed as ccxt built them (for
trade/order, ccxt's broker clOrdId and tag are already in the body).
"""

from __future__ import annotations

import calendar
import datetime

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held", "password": "agent-held"}


def timestamp_ms(iso: str) -> int:
    """OK-ACCESS-TIMESTAMP ('2023-11-14T22:13:20.123Z') as milliseconds since the epoch."""
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(t.timetuple()) * 1000 + t.microsecond // 1000


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "OK-ACCESS-SIGN" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(body) if body else None)
    return Unsigned(base_url=base, request=request, timestamp_ms=timestamp_ms(headers["OK-ACCESS-TIMESTAMP"]))
