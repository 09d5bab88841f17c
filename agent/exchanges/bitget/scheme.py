"""Bitget v2: `timestamp + METHOD + requestPath + ("?" + query) + body`, signed and base64-encoded.

Reference: docs/exchange-signing.md 2.14; ccxt bitget.sign(). The timestamp
is milliseconds from the agent's clock. HMAC keys: HMAC-SHA256. RSA keys (Bitget's
"user-generated API keys", registered by public key): RSASSA-PKCS1-v1_5 with SHA-256
(`key.sign`) over the same text, base64. That RSA padding is NOT verified against
Bitget (the reference marks it unverified) and ccxt signs HMAC only: it is the
common choice, and the one the token's RSA mechanism (CKM_SHA256_RSA_PKCS) gives.
As ccxt does: query parameters are sorted by name; the URL carries them
percent-encoded (UTF-8, '$' left as is) while the signature covers them raw,
un-encoded (`name=value&...`), so names and values holding a separator, an escape,
a control character, '{' or '[' are refused (encoding.unencoded_query: the signed
text would read as other parameters; and as the prehash joins the query and the
body with nothing between, a '{' or '[' could start a body cut out of it), and a
request carries a query or a body, never both (encoding.query_or_body). The
body is the exact JSON text (a raw body must be a JSON object or array; pairs
become ccxt's compact JSON of strings, and no pairs at all `{}`, which is what
ccxt sends for a POST without parameters). Bitget takes a body on POST only. The
passphrase goes in clear in ACCESS-PASSPHRASE.
ccxt's X-CHANNEL-API-CODE header is decorative and not produced (exchange-signing.md 0.7).
"""

from __future__ import annotations

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import json_body_text, query_or_body, unencoded_query, urlencode
from agent.exchanges.okx.scheme import JSON_CONTENT_TYPE, require_passphrase
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey


class BitgetScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if key.key_type not in ("hmac", "rsa"):
            raise UnsupportedKey(f"bitget signs with HMAC or RSA keys, not {key.key_type}")
        passphrase = require_passphrase(key, "bitget")
        if request.method != "POST" and request.body is not None:
            raise RequestInvalid("Bitget takes a body on POST only; move the parameters into 'query'")
        query = sorted(request.query)  # ccxt's keysort (names are unique)
        # ccxt's URL: its urlencode with '%24' put back to '$' (ccxt issue #21169).
        sent_query = urlencode(query).replace("%24", "$")
        signed_query = unencoded_query(query, "Bitget", body_follows=True)
        body_text = json_body_text(request.body, "Bitget", no_params="{}")  # ccxt's json({}) for no parameters
        query_or_body(request, "Bitget", body=body_text)
        timestamp = str(env.now_ms)
        prehash = f"{timestamp}{request.method}{request.path}{'?' + signed_query if query else ''}{body_text}"
        message = prehash.encode("utf-8")
        raw = key.mac(message, "sha256") if key.key_type == "hmac" else key.sign(message)

        headers = [
            ("ACCESS-KEY", key.api_key),
            ("ACCESS-SIGN", b64(raw)),
            ("ACCESS-TIMESTAMP", timestamp),
            ("ACCESS-PASSPHRASE", passphrase),
        ]
        if request.method == "POST":  # ccxt sends it on every POST
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        path = f"{request.path}?{sent_query}" if query else request.path
        return SignedRequest(method=request.method, path=path, headers=tuple(headers), body=body_text)


SCHEME = BitgetScheme()
