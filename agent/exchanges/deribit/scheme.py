"""Deribit: per-request HMAC header auth (`deri-hmac-sha256`).

Reference: docs/exchange-signing.md 2.9. Signed: Timestamp(ms) "\\n" Nonce
"\\n" METHOD "\\n" URI(path?query) "\\n" Body "\\n"; lowercase hex HMAC-SHA256 under
the client secret, sent as `Authorization: deri-hmac-sha256
id=<client id>,ts=<ms>,sig=<hex>,nonce=<nonce>`.

Deribit only wants the nonce to be a fresh string; ccxt uses the millisecond
clock. The agent takes the key's strictly increasing nonce with the clock as its
floor: it equals ccxt's value whenever ccxt's does not repeat, and never repeats.
ccxt sends private calls as GET with the params in the query; a POST with a
JSON-RPC body is signed with that body (Content-Type application/json).

Asymmetric Deribit keys (Ed25519, RSA) work only with the token flow
(`public/auth`, grant_type=client_signature), which returns a bearer access token:
that token would be a secret outside the HSM, so it is out of scope; only HMAC
keys are taken.
"""

from __future__ import annotations

import json

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import urlencode
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest

JSON_CONTENT_TYPE = "application/json"


def _body_text(request: UnsignedRequest) -> str:
    body = request.body
    if body is None or body == RawBody(""):
        return ""
    if request.method == "GET":
        raise RequestInvalid("Deribit reads GET parameters from the query only; move the body into 'query'")
    if not isinstance(body, RawBody):
        raise RequestInvalid("a Deribit request body is JSON-RPC text: give it as a raw body, or use GET with a query")
    try:
        json.loads(body.text)
    except (ValueError, RecursionError):  # RecursionError: nested past Python's parser limit
        raise RequestInvalid("raw body must be JSON (a JSON-RPC request) for Deribit") from None
    return body.text


class DeribitScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        body = _body_text(request)
        query = urlencode(request.query)
        uri = f"{request.path}?{query}" if query else request.path
        timestamp = str(env.now_ms)
        nonce = str(key.nonce(env.now_ms))
        message = f"{timestamp}\n{nonce}\n{request.method}\n{uri}\n{body}\n"
        signature = key.mac(message.encode("utf-8"), "sha256").hex()
        headers = [("Authorization", f"deri-hmac-sha256 id={key.api_key},ts={timestamp},sig={signature},nonce={nonce}")]
        if body:
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        return SignedRequest(method=request.method, path=uri, headers=tuple(headers), body=body)


SCHEME = DeribitScheme()
