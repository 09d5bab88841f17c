"""Gemini (ccxt: gemini): everything is in the base64 JSON payload header.

ccxt's payload is `{"request":"<path>","nonce":"N",<parameters>}`; the
parameters are kept byte for byte as a raw JSON object body, and the agent
builds its own payload around them. ccxt's nonce is milliseconds, or seconds
when its options["nonce"] is "seconds"; it is passed on as milliseconds, and
the agent always signs with a millisecond nonce (see agent/exchanges/gemini/scheme.py).
"""

from __future__ import annotations

import base64
import json
import re

from signing_agent_client.ccxt_bridge import Unsigned, split_url
from signing_agent_client.request import RawBody, UnsignedRequest

# ccxt refuses Gemini master keys: its apiKey must contain "account".
PLACEHOLDER = {"apiKey": "account-agent-held", "secret": "agent-held-" + "0" * 37}


def unsign(exchange, built: dict, api) -> Unsigned | None:
    headers = built.get("headers") or {}
    if "X-GEMINI-SIGNATURE" not in headers:
        return None
    base, path, query = split_url(built["url"])
    payload = base64.b64decode(headers["X-GEMINI-PAYLOAD"]).decode("utf-8")
    prefix = '{"request":' + json.dumps(path, separators=(",", ":"), ensure_ascii=False) + ',"nonce":"'
    match = re.compile(r'(\d+)"(?:,(.*))?\}\Z', re.DOTALL).match(payload, len(prefix))
    if not payload.startswith(prefix) or match is None:
        raise ValueError("gemini: ccxt's payload does not start with its request and nonce")
    nonce = int(match.group(1))
    seconds = exchange.safe_string(exchange.options, "nonce", "milliseconds") != "milliseconds"
    request = UnsignedRequest(built["method"], path, query=query, body=RawBody("{" + (match.group(2) or "") + "}"))
    return Unsigned(base_url=base, request=request, timestamp_ms=nonce * 1000 if seconds else nonce)
