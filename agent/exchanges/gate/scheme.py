"""Gate v4: HMAC-SHA512, hex, over five lines; KEY, Timestamp and SIGN headers.

Reference: docs/exchange-signing.md 2.10; Gate's APIv4 "Authentication";
ccxt gate.sign(). The signed text is

    METHOD \\n path (/api/v4/...) \\n query \\n hex(SHA-512(body)) \\n seconds

The agent's path is the full path sent, `/api/v4/...`, which is also the path
signed: nothing is added behind the caller's (or the policy's) back. The query
is sent percent-encoded as UTF-8 (all but A-Z a-z 0-9 _ . - ~, as ccxt) and
signed *decoded*: Gate's own SDKs sign `unquote(encoded query)` (Python
`unquote_plus(urlencode(q))`, Go `url.QueryUnescape(RawQuery)`), and ccxt
signs `rawencode`, the same text. So non-ASCII values are signed as UTF-8 text,
as Gate's SDKs do, not refused; separators and escapes inside names and values
are (a value `buy&currency_pair=ETH_USDT` would sign as two parameters). The SHA-512 of the body (of "" when there is
none) is computed here: it involves no secret. Bodies are JSON, sent as given;
parameter pairs become a JSON object of strings in ccxt's compact form
(non-ASCII kept as UTF-8, as ccxt with orjson); `()` is `{}`, None no body.
"""

from __future__ import annotations

import hashlib

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import json_body_text, unencoded_query, urlencode
from agent.exchanges.gate.rules import RULES
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest

PATH_PREFIX = "/api/v4/"
JSON_CONTENT_TYPE = "application/json"


def _encoded_query(query: tuple[tuple[str, str], ...]) -> str:
    """The query as sent: ccxt's urlencode (UTF-8 percent-encoding, only A-Z a-z 0-9 _ . - ~ kept)."""
    text = urlencode(query)
    # ccxt (issue 25570): Gate wants literal commas in `currencies=` lists; ccxt then
    # un-escapes every %2C of the query. Both forms decode to the same signed text.
    if "currencies=" in text and "%2C" in text:
        text = text.replace("%2C", ",")
    return text


def _signed_query(query: tuple[tuple[str, str], ...]) -> str:
    """The query as signed: the sent query percent-decoded, i.e. the names and values as given. A
    name or value holding '&', '=', '%', '+', '#', ';' or a control character is refused:
    Gate decodes before it verifies, so the decoded text would parse as other parameters."""
    return unencoded_query(query, "Gate", body_follows=False)


class GateScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated(RULES.methods)  # PATCH: Gate's spot amend
        if not request.path.startswith(PATH_PREFIX):
            raise RequestInvalid(
                f"Gate paths are the full path sent and signed, starting with {PATH_PREFIX} "
                "(for example /api/v4/spot/orders)"
            )
        if not request.path.isascii():
            raise RequestInvalid("Gate paths are ASCII; percent-encode path parameters")
        if request.method == "GET" and request.body is not None:
            raise RequestInvalid("Gate GET requests take no body; move the parameters into 'query'")
        body_text = json_body_text(request.body, "Gate", no_params="{}")
        timestamp = str(env.now_ms // 1000)
        payload = "\n".join((
            request.method,
            request.path,
            _signed_query(request.query),
            hashlib.sha512(body_text.encode("utf-8")).hexdigest(),
            timestamp,
        ))
        signature = key.mac(payload.encode("utf-8"), "sha512").hex()
        headers = (
            ("KEY", key.api_key),
            ("Timestamp", timestamp),
            ("SIGN", signature),
            # ccxt sends it on every private request, GET included.
            ("Content-Type", JSON_CONTENT_TYPE),
        )
        sent_query = _encoded_query(request.query)
        path = f"{request.path}?{sent_query}" if sent_query else request.path
        return SignedRequest(method=request.method, path=path, headers=headers, body=body_text)


SCHEME = GateScheme()
