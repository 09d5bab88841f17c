"""Gemini REST: HMAC-SHA384 over the base64 of a JSON payload sent in a header.

Reference: shared/docs/exchange-signing.md 2.11; developer.gemini.com
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
import json

from agent.schemes.context import Credential, Environment
from agent.schemes.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import Exchange

NONCE_REFUSED = "remove 'nonce': the agent issues nonces so they never go backwards"
REQUEST_REFUSED = "remove 'request': the agent sets it to the path"


def _json(value) -> str:
    """ccxt's json(): compact, non-ASCII as UTF-8 (orjson's output)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_object_names(text: str) -> list[str]:
    """The top-level names of the JSON object TEXT; RequestInvalid if it is not one, unambiguously."""

    def pairs_hook(pairs):
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise RequestInvalid("raw JSON body has a name twice in one object; send each name once")
        return pairs

    def no_constant(name):
        raise RequestInvalid(f"raw JSON body contains {name}, which is not JSON")

    try:
        parsed = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=no_constant)
    except (ValueError, RecursionError) as error:
        if isinstance(error, RequestInvalid):
            raise
        parsed = None
    if not isinstance(parsed, list) or not text.strip().startswith("{"):
        raise RequestInvalid("Gemini parameters go in a JSON object: send one JSON object as the body ('{}' for none)")
    return [name for name, _ in parsed]


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
        body = request.body
        if isinstance(body, RawBody):
            names = _json_object_names(body.text)
            params_text = body.text
        else:
            names = [name for name, _ in body or ()]
            params_text = _json(dict(body or ()))
        if "nonce" in names:
            raise RequestInvalid(NONCE_REFUSED)
        if "request" in names:
            raise RequestInvalid(REQUEST_REFUSED)

        nonce = str(key.nonce(env.now_ms))
        inner = params_text.strip()[1:-1]
        payload_json = (
            '{"request":' + _json(request.path) + ',"nonce":' + _json(nonce) + ("," + inner if names else "") + "}"
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

EXCHANGES = (
    Exchange("gemini", SCHEME, ccxt_id="gemini", docs="2.11"),
)
