"""Bitfinex v2 authenticated REST: HMAC-SHA384 over "/api" + path + nonce + JSON body.

Reference: docs/exchange-signing.md 2.5; docs.bitfinex.com "REST auth".
Every authenticated endpoint is a POST under /v2/auth/ with a JSON object body
("{}" when there are no parameters); the signature, lowercase hex, goes in
`bfx-signature` with `bfx-nonce` and `bfx-apikey`. The URL has no "/api"
(https://api.bitfinex.com/v2/auth/...) but the signed path does. Nothing in a
query string is signed, so a query is refused.

The path and the nonce are joined with nothing between them: a path ending in a
digit is refused (its digits could move into the nonce, which only has to grow).
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

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import NONCE_REFUSED, check_post_body_endpoint, json_object_body
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest

AUTH_PREFIX = "/v2/auth/"


class BitfinexScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        check_post_body_endpoint(request, exchange="Bitfinex", endpoints="authenticated endpoints",
                                 scope="v2 authenticated endpoints", prefix=AUTH_PREFIX, signed="the JSON body")
        if request.path[-1].isdigit():
            raise RequestInvalid(
                "Bitfinex signs the path and the nonce with nothing between them, so a path ending in a digit "
                "could lend it to the nonce and read as another path: leave the trailing symbol or id out of the "
                "path (use the endpoint without it and filter the answer)"
            )
        params, text = json_object_body(request.body, "Bitfinex")
        if "nonce" in params:
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
