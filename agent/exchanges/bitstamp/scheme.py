"""Bitstamp v2: hex HMAC-SHA256 over a 10-part concatenation, in X-Auth-* headers.

Reference: docs/exchange-signing.md 2.6 (Bitstamp's Python sample; ccxt).
Signed, with no separators: "BITSTAMP " + api_key, METHOD, "www.bitstamp.net",
the path, the query ("" when none), the Content-Type ("" when no body), the
X-Auth-Nonce (a UUID v4 made from the agent's random bytes), X-Auth-Timestamp
(milliseconds), "v2", and the body.

An empty POST is sent with the body `foo=bar`, as ccxt does: Bitstamp answers an
empty POST with API0020 (ccxt issue 6846), and the dummy field is ignored.
A query is refused: ccxt never sends one on a private call, Bitstamp's sample
leaves that slot empty, and the signed text would join it to the Content-Type
with nothing between them. Paths end with '/' (every v2 endpoint does), so the
path cannot borrow the Content-Type's text either. A raw form body must read one
way only (encoding.form_pairs).
"""

from __future__ import annotations

import uuid

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import form_pairs, urlencode
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest

HOST = "www.bitstamp.net"
VERSION = "v2"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
EMPTY_POST_BODY = "foo=bar"


def _body_text(body) -> str:
    if isinstance(body, RawBody):
        form_pairs(body.text, "Bitstamp")  # checked only: sent and signed as given
        return body.text
    return urlencode(body or ())


def uuid4_from(random16: bytes) -> str:
    """A UUID version 4 (RFC 4122 variant) from 16 random bytes."""
    return str(uuid.UUID(bytes=random16, version=4))


class BitstampScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.query:
            raise RequestInvalid(
                "Bitstamp private endpoints take their parameters in the form body: move the query into 'body' "
                "(the signed text joins the query and the Content-Type with nothing between them)"
            )
        if not request.path.endswith("/"):
            raise RequestInvalid("Bitstamp v2 paths end with '/' (for example /api/v2/balance/)")
        body = _body_text(request.body)
        if request.method == "GET" and body:
            raise RequestInvalid("Bitstamp GET requests carry no body; move the parameters into 'query'")
        if request.method == "POST" and not body:
            body = EMPTY_POST_BODY
        query = urlencode(request.query)
        path = f"{request.path}?{query}" if query else request.path
        content_type = FORM_CONTENT_TYPE if body else ""
        x_auth = f"BITSTAMP {key.api_key}"
        nonce = uuid4_from(env.random_bytes(16))
        timestamp = str(env.now_ms)
        message = x_auth + request.method + HOST + path + content_type + nonce + timestamp + VERSION + body
        headers = [
            ("X-Auth", x_auth),
            ("X-Auth-Signature", key.mac(message.encode("utf-8"), "sha256").hex()),
            ("X-Auth-Nonce", nonce),
            ("X-Auth-Timestamp", timestamp),
            ("X-Auth-Version", VERSION),
        ]
        if content_type:
            headers.append(("Content-Type", content_type))
        return SignedRequest(method=request.method, path=path, headers=tuple(headers), body=body)


SCHEME = BitstampScheme()
