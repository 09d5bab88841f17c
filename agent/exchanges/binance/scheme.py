"""Binance spot, USD-M futures and Binance US: HMAC-SHA256 over `totalParams`.

Reference: docs/exchange-signing.md 2.1; Binance's rest-api.md "SIGNED
endpoint security". totalParams is the query string concatenated, with no
separator, with the form body, exactly as sent. The signature (lowercase hex)
is appended last as `signature=`: to the body when there is one, else to the
query. Parameter names and values are percent-encoded as UTF-8 before signing
(required for non-ASCII since 2026-01-15; identical to ccxt's `urlencode`,
which leaves only A-Z a-z 0-9 _ . - ~ unencoded).

When neither part carries `timestamp`, the agent's clock supplies it as the
first parameter of the part that carries the signature (where ccxt puts it).
A parameter named apiKey is refused: Binance's WebSocket API signs its parameters
sorted by name with apiKey among them, so `apiKey=K&timestamp=T` signed here would
also be a `session.logon`, after which orders on that socket need no signature.
A raw body is taken as already form-encoded and is kept byte for byte, so it must
read one way only (encoding.form_pairs: no raw '=' in a value, '+', ';', '#'...).
Since the query and the body are joined with no separator, a request carries one
or the other: with both, a bot could move the boundary so that the query's last
pair and the body's first run together into other parameters. Binance's own
spot example 3 (mixed query and body) is therefore refused as a request; its
signature is still checked against the published text in the tests.
"""

from __future__ import annotations

from urllib.parse import quote

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import form_pairs, join_params, query_or_body, urlencode
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest, check_params

API_KEY_HEADER = "X-MBX-APIKEY"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class BinanceScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        body = request.body
        if request.method == "GET" and body is not None:
            raise RequestInvalid("Binance reads GET parameters from the query only; move the body into 'query'")
        body_pairs = form_pairs(body.text, "Binance") if isinstance(body, RawBody) else body or ()
        if request.query and body_pairs:  # refused: the boundary between them is not signed
            query_or_body(request, "Binance", body="&".join(f"{n}={v}" for n, v in body_pairs))
        pairs = tuple(request.query) + tuple(body_pairs)
        if any(name == "signature" for name, _ in pairs):
            raise RequestInvalid("remove 'signature': the agent computes it")
        if any(name.casefold() == "apikey" for name, _ in pairs):
            # The WebSocket API signs its parameters sorted by name, apiKey among them: a signed
            # `apiKey=...&timestamp=...` would be a session.logon, after which orders need no signature.
            raise RequestInvalid("remove 'apiKey': the API key goes in the X-MBX-APIKEY header, and a signed "
                                 "apiKey parameter would also log a WebSocket session in")
        # Binance signs query and body as one parameter list: the limits apply to the whole. A checked
        # request (validated()) whose whole is one of its parts, checked already, is not checked twice.
        if not (request.checked and not isinstance(body, RawBody) and (not request.query or not body_pairs)):
            check_params("query and body together", pairs)
        timestamp = dict(pairs).get("timestamp")
        if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit()):
            raise RequestInvalid("'timestamp' must be milliseconds since the epoch (digits only)")
        stamp: tuple[tuple[str, str], ...] = () if timestamp is not None else (("timestamp", str(env.now_ms)),)

        has_body = body is not None and (not isinstance(body, RawBody) or body.text != "")
        if has_body:
            query_text = urlencode(request.query)
            body_text = join_params(urlencode(stamp), _body_text(body))
        else:
            query_text = urlencode(stamp + request.query)
            body_text = ""
        signature = "signature=" + _signature(key, (query_text + body_text).encode("ascii"))
        if has_body:
            body_text = join_params(body_text, signature)
        else:
            query_text = join_params(query_text, signature)

        headers = [(API_KEY_HEADER, key.api_key)]
        if has_body:
            headers.append(("Content-Type", FORM_CONTENT_TYPE))
        path = f"{request.path}?{query_text}" if query_text else request.path
        return SignedRequest(method=request.method, path=path, headers=tuple(headers), body=body_text)


def _signature(key: Credential, payload: bytes) -> str:
    """HMAC keys: lowercase hex. Ed25519 and RSA keys: base64, percent-encoded as a parameter value."""
    if key.key_type == "hmac":
        return key.mac(payload, "sha256").hex()
    return quote(b64(key.sign(payload)), safe="")


def _body_text(body) -> str:
    return body.text if isinstance(body, RawBody) else urlencode(body)


SCHEME = BinanceScheme()
