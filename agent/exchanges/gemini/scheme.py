"""Gemini REST: HMAC-SHA384 over the base64 of a JSON payload sent in a header.

Reference: docs/exchange-signing.md 2.11; developer.gemini.com
"Private API invocation". The payload is a JSON object {"request": path,
"nonce": ..., parameters...}; its base64 is both X-GEMINI-PAYLOAD and the HMAC
input (hex in X-GEMINI-SIGNATURE). The server hashes the base64 as sent, so
any JSON spelling works as long as what is signed is what is sent.

Built as ccxt 4.5 builds it: compact JSON (ccxt's json()), "request" then
"nonce" first, the nonce as a decimal STRING (as in Gemini's own Python
example), then the parameters. Parameters come as the body (pairs: string
values; or a raw JSON object, kept as written, for numbers and arrays such as
"options": ["maker-or-cancel"]). A query string is refused: Gemini reads only
the payload. Like ccxt, a POST also carries the parameters' JSON as its body
(Gemini ignores it; its docs send none); a GET carries no body.

Nonce: only from the key (`key.nonce`), floor = the clock in milliseconds (ccxt's
default). Create the Gemini key WITHOUT "Uses a time based nonce": such keys
want seconds within 30 s of Gemini's clock, which a strictly increasing nonce
cannot promise (sustained load runs it ahead, and after a power loss the agent's
nonce store jumps forward by design). ccxt's options["nonce"] = "seconds" is
therefore not followed: the agent signs with milliseconds.
"""

from __future__ import annotations

import base64

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import NONCE_REFUSED, ccxt_json, json_object_body
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest

REQUEST_REFUSED = "remove 'request': the agent sets it to the path"


def sign_payload(key: Credential, payload_json: str) -> tuple[str, str]:
    """(X-GEMINI-PAYLOAD, X-GEMINI-SIGNATURE) for the payload JSON text, exactly as given."""
    payload = base64.b64encode(payload_json.encode("utf-8")).decode("ascii")
    return payload, key.mac(payload.encode("ascii"), "sha384").hex()


class GeminiScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.method not in ("GET", "POST"):
            raise RequestInvalid("Gemini private endpoints take POST (a few take GET)")
        if request.query:
            raise RequestInvalid("Gemini reads parameters from the signed payload only: move the query into 'body'")
        params, params_text = json_object_body(request.body, "Gemini")
        if "nonce" in params:
            raise RequestInvalid(NONCE_REFUSED)
        if "request" in params:
            raise RequestInvalid(REQUEST_REFUSED)

        nonce = str(key.nonce(env.now_ms))
        inner = params_text.strip()[1:-1]
        payload_json = (
            '{"request":' + ccxt_json(request.path) + ',"nonce":' + ccxt_json(nonce)
            + ("," + inner if params else "") + "}"
        )
        payload, signature = sign_payload(key, payload_json)
        headers = (
            ("Content-Type", "text/plain"),
            ("X-GEMINI-APIKEY", key.api_key),
            ("X-GEMINI-PAYLOAD", payload),
            ("X-GEMINI-SIGNATURE", signature),
        )
        return SignedRequest(
            method=request.method, path=request.path, headers=headers,
            body=params_text if request.method == "POST" else "",
        )


SCHEME = GeminiScheme()
