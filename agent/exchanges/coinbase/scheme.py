"""Coinbase Advanced Trade (and Coinbase App v2): a fresh JWT per request, or legacy HMAC.

Reference: docs/exchange-signing.md 2.4. CDP keys (ec-p256, ed25519) send
`Authorization: Bearer <JWT>`: base64url(header) "." base64url(payload) is signed
by the key (ES256: ECDSA P-256 over SHA-256, raw r||s; EdDSA: pure Ed25519) and
the signature is appended base64url-encoded. The JWT covers the method, host and
path only (never the query or the body). The nonce is 16 random bytes in hex.

The claims are ccxt's (coinbase.py create_auth_token), so the ccxt bridge sends
what ccxt sends; Coinbase's own SDK (coinbase-advanced-py jwt_generator) differs:
it sends `iss:"cdp"`, a single `uri`, no `aud` or `iat`, and a 64-hex nonce for
both algorithms, where ccxt sends for ES256 `iss:"coinbase-cloud"`,
`aud:["retail_rest_api_proxy"]`, `uri`, and for EdDSA `iss:"cdp"`,
`aud:["cdp_service"]`, `uris:[...]`, both with `iat`. ccxt's variant is what
ccxt users run against Coinbase today; neither was tested live here.

Legacy HMAC keys: hex HMAC-SHA256 of ts_seconds + METHOD + path + body, in the
CB-ACCESS-* headers; for a GET on /v2/ the `?query` is signed too, on /api/v3/ it
is not (as ccxt does; Coinbase's legacy-key pages were not checked for this).

Parameters of POST/PUT/DELETE travel in the JSON body (as ccxt sends them), so a
query there is refused: the JWT would not cover it and ccxt never sends one.
"""

from __future__ import annotations

import json

from agent.schemes.context import Credential, Environment, b64url
from agent.schemes.encoding import ccxt_json, urlencode
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey

HOST = "api.coinbase.com"
JSON_CONTENT_TYPE = "application/json"
JWT_LIFETIME_S = 120
NONCE_BYTES = 16  # ccxt: random_bytes(16), hex
# alg -> (iss, aud, name of the uri claim), as ccxt 4.5 sends them.
_CLAIMS = {
    "ES256": ("coinbase-cloud", "retail_rest_api_proxy", "uri"),
    "EdDSA": ("cdp", "cdp_service", "uris"),
}
_ALG = {"ec-p256": "ES256", "ed25519": "EdDSA"}


def _body_text(request: UnsignedRequest) -> str:
    body = request.body
    if isinstance(body, RawBody):
        if body.text == "":
            return ""
        try:
            json.loads(body.text)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's parser limit
            raise RequestInvalid("raw body must be JSON for Coinbase (the API reads application/json)") from None
        return body.text
    if not body:
        return ""
    return ccxt_json(dict(body))


class CoinbaseScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.method == "GET":
            if request.body is not None and request.body != RawBody(""):
                raise RequestInvalid("Coinbase reads GET parameters from the query only; move the body into 'query'")
            body = ""
        else:
            if request.query:
                raise RequestInvalid(
                    f"Coinbase takes {request.method} parameters in the JSON body; move the query into 'body'"
                )
            body = _body_text(request)
        query = urlencode(request.query)
        path = f"{request.path}?{query}" if query else request.path
        seconds = env.now_ms // 1000

        if key.key_type == "hmac":
            if request.method == "GET":
                signed_extra = f"?{query}" if query and request.path.startswith("/v2/") else ""
            else:
                signed_extra = body
            timestamp = str(seconds)
            payload = timestamp + request.method + request.path + signed_extra
            headers = (
                ("CB-ACCESS-KEY", key.api_key),
                ("CB-ACCESS-SIGN", key.mac(payload.encode("utf-8"), "sha256").hex()),
                ("CB-ACCESS-TIMESTAMP", timestamp),
                ("Content-Type", JSON_CONTENT_TYPE),
            )
        elif key.key_type in _ALG:
            token = _jwt(key, _ALG[key.key_type], f"{request.method} {HOST}{request.path}", seconds, env)
            headers = (("Authorization", f"Bearer {token}"), ("Content-Type", JSON_CONTENT_TYPE))
        else:
            raise UnsupportedKey(f"coinbase does not take {key.key_type} keys (it takes: ec-p256, ed25519, hmac)")
        return SignedRequest(method=request.method, path=path, headers=headers, body=body)


def _jwt(key: Credential, alg: str, uri: str, seconds: int, env: Environment) -> str:
    iss, aud, uri_claim = _CLAIMS[alg]
    header = {"alg": alg, "typ": "JWT", "kid": key.api_key, "nonce": env.random_bytes(NONCE_BYTES).hex()}
    claims = {
        "aud": [aud],
        "iss": iss,
        "nbf": seconds,
        "exp": seconds + JWT_LIFETIME_S,
        "sub": key.api_key,
        "iat": seconds,
        uri_claim: uri if uri_claim == "uri" else [uri],
    }
    signing_input = b64url(ccxt_json(header).encode("utf-8")) + "." + b64url(ccxt_json(claims).encode("utf-8"))
    return signing_input + "." + b64url(key.sign(signing_input.encode("ascii")))


SCHEME = CoinbaseScheme()
