"""Kraken (ccxt: kraken): the nonce is the body's first field, the signature a header.

ccxt's body starts with `nonce=N&` (form) or `{"nonce":"N",` (JSON); the rest
is kept byte for byte as a raw body, and the agent puts its own nonce in front.
ccxt's nonce is milliseconds: it is passed on as the instant to sign for.
"""

from __future__ import annotations

import base64
import re

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

# Kraken's secret is base64 of the key: the placeholder must decode (to 64 zero bytes).
PLACEHOLDER = {"apiKey": "agent-held", "secret": base64.b64encode(bytes(64)).decode()}

_FORM = re.compile(r"nonce=(\d+)(?:&(.*))?\Z", re.DOTALL)
_JSON = re.compile(r'\{"nonce":"(\d+)"(?:,(.*))?\}\Z', re.DOTALL)


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "API-Sign" not in headers:
        return None
    base, path, query = split_url(built["url"])
    body = built.get("body") or ""
    if match := _JSON.match(body):
        rest = "{" + (match.group(2) or "") + "}"
    elif match := _FORM.match(body):
        rest = match.group(2) or ""
    else:
        raise ValueError("kraken: ccxt's signed body does not start with its nonce")
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(rest))
    return Unsigned(base_url=base, request=request, timestamp_ms=int(match.group(1)))
