"""OKX v5: HMAC-SHA256, base64, over `timestamp + METHOD + requestPath + body`.

Reference: docs/exchange-signing.md 2.2; ccxt okx.sign(). The timestamp
is ISO-8601 UTC with milliseconds (`2023-11-14T22:13:20.000Z`) from the agent's
clock. requestPath is the path with `?query` exactly as sent: names and values
percent-encoded as UTF-8 (only A-Z a-z 0-9 _ . - ~ left as is), as ccxt sends
and signs them. The body is the exact JSON text sent; a raw body must be a JSON
object or array, and parameter pairs are sent as a JSON object of strings in
ccxt's compact form (no spaces, non-ASCII kept as UTF-8, as ccxt with orjson).
The passphrase chosen at key creation goes in clear in OK-ACCESS-PASSPHRASE.
ccxt sends a query on GET only and a body otherwise; GET takes no body. The
prehash joins the query and the body with nothing between them, so a request
carries one or the other (encoding.query_or_body): with both, a bot could move
the head of the body, sent raw, into the end of the query, and a server that
reads the first JSON value of a body would act on a nested object.
"""

from __future__ import annotations

import datetime

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import json_body_text, query_or_body, urlencode
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey

JSON_CONTENT_TYPE = "application/json"
MAX_ISO_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def require_passphrase(key: Credential, exchange: str) -> str:
    if key.passphrase is None:
        raise UnsupportedKey(f"this {exchange} key has no passphrase; import it again with its passphrase")
    return key.passphrase


def iso8601_ms(now_ms: int) -> str:
    """ccxt's iso8601(): YYYY-MM-DDTHH:MM:SS.mmmZ (UTC)."""
    if not 0 <= now_ms <= MAX_ISO_MS:
        raise RequestInvalid("the timestamp must be milliseconds since the epoch, before year 10000")
    seconds, millis = divmod(now_ms, 1000)
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{millis:03d}Z"


class OkxScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if key.key_type != "hmac":
            raise UnsupportedKey(f"okx signs with HMAC keys only, not {key.key_type}")
        passphrase = require_passphrase(key, "okx")
        if request.method == "GET" and request.body is not None:
            raise RequestInvalid("OKX signs GET requests without a body; move the parameters into 'query'")
        query_text = urlencode(request.query)
        request_path = f"{request.path}?{query_text}" if query_text else request.path
        body_text = json_body_text(request.body, "OKX")
        query_or_body(request, "OKX", body=body_text)
        timestamp = iso8601_ms(env.now_ms)
        prehash = f"{timestamp}{request.method}{request_path}{body_text}"
        signature = b64(key.mac(prehash.encode("utf-8"), "sha256"))

        headers = [
            ("OK-ACCESS-KEY", key.api_key),
            ("OK-ACCESS-PASSPHRASE", passphrase),
            ("OK-ACCESS-TIMESTAMP", timestamp),
        ]
        if request.method != "GET":  # ccxt sends it on every non-GET request, with or without a body
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        headers.append(("OK-ACCESS-SIGN", signature))
        return SignedRequest(method=request.method, path=request_path, headers=tuple(headers), body=body_text)


SCHEME = OkxScheme()
