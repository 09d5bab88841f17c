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

from signing_agent_client.ccxt_bridge import Unsigned, split_url, without
from signing_agent_client.request import RawBody, RequestInvalid, UnsignedRequest

# Shared with the agent's HTX scheme (agent/exchanges/htx/scheme.py imports them from here).
# Allowed hosts per family; the first is the default (ccxt 4.5.90's urls['hostnames']).
SPOT_HOSTS = ("api.huobi.pro", "api-aws.huobi.pro")
CONTRACT_HOSTS = ("api.hbdm.vn", "api.hbdm.com")  # HTX docs: .com, and .vn "preferred by aws customers"
# Path prefix -> family; the first match wins (so the longer, more specific prefixes come first).
_FAMILIES = (
    ("/v5/account/universal_transfer", "spot"),  # ccxt: spot host (third-party clients disagree)
    ("/v5/", "contract"),
    ("/v2/linear-swap-ex/", "contract"),
    ("/v2/swap-ex/", "contract"),
    ("/v2/market/", "contract"),
    ("/v1/", "spot"),
    ("/v2/", "spot"),
    ("/api/", "contract"),
    ("/swap-api/", "contract"),
    ("/linear-swap-api/", "contract"),
    ("/swap-ex/", "contract"),
    ("/linear-swap-ex/", "contract"),
    ("/index/", "contract"),
    ("/heartbeat/", "contract"),
)

AUTH_PARAMS = ("AccessKeyId", "SignatureMethod", "SignatureVersion", "Timestamp", "Signature")


def family(path: str) -> str:
    """'spot' or 'contract': which HTX API host serves PATH."""
    for prefix, name in _FAMILIES:
        if path.startswith(prefix):
            return name
    raise RequestInvalid(
        "HTX path belongs to no known API host (spot: /v1/, /v2/; derivatives: /api/, /swap-api/, "
        "/linear-swap-api/, /v5/...); /market/ data is public and needs no signature"
    )


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
