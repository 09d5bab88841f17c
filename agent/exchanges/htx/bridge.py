"""HTX (ccxt: htx): authentication is in the query (AccessKeyId ... Signature).

ccxt's authentication parameters are stripped; its Timestamp (UTC seconds) is
the instant the agent signs for. The other GET parameters stay (the scheme
sorts them again, as ccxt did); the POST body is passed byte for byte.

The signed host is the scheme's choice for the path's family and the key's
spot_host / contract_host options (defaults: ccxt's hostnames). ccxt's host is
checked against the hosts the scheme allows for that family, so a ccxt object
pointed at an unknown host (testnet, a proxy) fails here, not at HTX. If the
bot sets ccxt's hostnames to an allowed non-default host, the key must be
imported with the matching option.
"""

from __future__ import annotations

import calendar
import datetime
from urllib.parse import urlsplit

from agent.ccxt_bridge import Unsigned, split_url, without
from agent.schemes import RawBody, UnsignedRequest
from agent.exchanges.htx.scheme import AUTH_PARAMS, CONTRACT_HOSTS, SPOT_HOSTS, family

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held"}


def timestamp_ms(text: str) -> int:
    """HTX's Timestamp ('2023-11-14T22:13:20', UTC) as milliseconds since the epoch."""
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t.timetuple()) * 1000


def unsign(exchange, built: dict, api) -> Unsigned | None:
    base, path, query = split_url(built["url"])
    fields = dict(query)
    if "Signature" not in fields:
        return None
    host = urlsplit(built["url"]).hostname or ""
    allowed = SPOT_HOSTS if family(path) == "spot" else CONTRACT_HOSTS
    if host not in allowed:
        raise ValueError(f"htx: ccxt sends {path} to {host}, which the agent does not sign for ({', '.join(allowed)})")
    body = built.get("body")
    request = UnsignedRequest(
        built["method"], path, query=without(query, *AUTH_PARAMS), body=None if body is None else RawBody(body)
    )
    return Unsigned(base_url=base, request=request, timestamp_ms=timestamp_ms(fields["Timestamp"]))
