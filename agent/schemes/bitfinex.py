"""Bitfinex v2 authenticated REST: HMAC-SHA384 over "/api" + path + nonce + JSON body.

Reference: shared/docs/exchange-signing.md 2.5; docs.bitfinex.com "REST auth".
Every authenticated endpoint is a POST under /v2/auth/ with a JSON object body
("{}" when there are no parameters); the signature, lowercase hex, goes in
`bfx-signature` with `bfx-nonce` and `bfx-apikey`. The URL has no "/api"
(https://api.bitfinex.com/v2/auth/...) but the signed path does. Nothing in a
query string is signed, so a query is refused.

Nonce: only from the key (`key.nonce`), floor = the clock in MILLISECONDS, as
ccxt's bitfinex.nonce(). Bitfinex's own example uses microseconds
(Date.now() * 1000); a key that has ever been used with microsecond nonces
(by another client) would see every millisecond nonce as going backwards
(error 10114 "nonce: small"): a key must never switch units, so give the agent
a fresh key, or one that has only seen millisecond nonces.

Bodies as ccxt sends them: parameter pairs become compact JSON with string
values (ccxt's json()); a raw body must be one JSON object and is signed and
sent byte for byte (for numbers, arrays and nested objects).
"""

from __future__ import annotations

import json

from agent.schemes.context import Credential, Environment
from agent.schemes.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import Exchange

AUTH_PREFIX = "/v2/auth/"
NONCE_REFUSED = "remove 'nonce': the agent issues nonces so they never go backwards"


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
        raise RequestInvalid("Bitfinex takes a JSON object body: send one JSON object ('{}' for no parameters)")
    return [name for name, _ in parsed]


class BitfinexScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.method != "POST":
            raise RequestInvalid("Bitfinex authenticated endpoints take POST only")
        if not request.path.startswith(AUTH_PREFIX) or len(request.path) == len(AUTH_PREFIX):
            raise RequestInvalid(
                f"Bitfinex signs v2 authenticated endpoints only: the path must start with {AUTH_PREFIX} "
                "(public endpoints need no signature)"
            )
        if request.query:
            raise RequestInvalid("Bitfinex signs the JSON body only: move the query parameters into 'body'")
        body = request.body
        if isinstance(body, RawBody):
            names = _json_object_names(body.text)
            text = body.text
        else:
            names = [name for name, _ in body or ()]
            text = _json(dict(body or ()))
        if "nonce" in names:
            raise RequestInvalid(NONCE_REFUSED)

        nonce = str(key.nonce(env.now_ms))
        payload = "/api" + request.path + nonce + text
        signature = key.mac(payload.encode("utf-8"), "sha384").hex()
        headers = (
            ("bfx-nonce", nonce),
            ("bfx-apikey", key.api_key),
            ("bfx-signature", signature),
            ("Content-Type", "application/json"),
        )
        return SignedRequest(method="POST", path=request.path, headers=headers, body=text)


SCHEME = BitfinexScheme()

EXCHANGES = (
    Exchange("bitfinex", SCHEME, ccxt_id="bitfinex", docs="2.5"),
)
