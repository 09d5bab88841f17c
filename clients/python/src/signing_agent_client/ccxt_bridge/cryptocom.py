"""Crypto.com (ccxt: cryptocom): the signature is in the JSON body envelope.

The envelope ccxt built with placeholders is opened and only its `params` are
passed on (as the JSON text ccxt wrote, byte for byte); the agent rebuilds id,
method, api_key, sig and nonce, taking the nonce from the key with ccxt's
millisecond nonce as its floor.
"""

from __future__ import annotations

import json

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

PLACEHOLDER = {"apiKey": "agent-held", "secret": "agent-held"}
_PARAMS_AT = '"params":'
_PARAMS_END = ',"api_key":'


def unsign(exchange, built: dict, api) -> Unsigned | None:
    body = built.get("body")
    if not body:
        return None
    envelope = json.loads(body)
    if not isinstance(envelope, dict) or "sig" not in envelope:
        return None
    # ccxt writes {"id","method","params","api_key","sig","nonce"} in this order: cut the params text out.
    start = body.index(_PARAMS_AT) + len(_PARAMS_AT)
    end = body.rindex(_PARAMS_END)
    params_text = body[start:end]
    if json.loads(params_text) != envelope["params"]:  # pragma: no cover (ccxt changed its envelope)
        raise ValueError("cryptocom: ccxt's request body has an unexpected shape")
    base, path, query = split_url(built["url"])
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody(params_text))
    return Unsigned(base_url=base, request=request, timestamp_ms=int(envelope["nonce"]))
