"""KuCoin (spot, UTA, futures): HMAC-SHA256, base64, over `timestamp + METHOD + endpoint + body`.

Reference: docs/exchange-signing.md 2.3; ccxt kucoin.sign() (kucoinfutures
inherits it). The timestamp is milliseconds from the agent's clock. endpoint is
the path with `?query` UN-encoded (`name=value&...`, as KuCoin's doc asks and
ccxt signs). ccxt also puts that raw query in the URL it returns, relying on the
HTTP library to percent-encode what must be; the agent returns the same URL.
So a name or value holding a separator or an escape (& = % + # ;), a control
character, or a '{' or '[' (which could start a JSON body moved out of
the query) is refused: the server would parse other parameters than were signed.
The prehash joins the query and the body with nothing between them, so a request
carries one or the other (encoding.query_or_body). ccxt's unified-account classic
orders send `?tradeType=` beside a JSON body: those are refused in sign mode. The body is the exact JSON text sent (a raw body
must be a JSON object or array; pairs become ccxt's compact JSON of strings).
KC-API-PASSPHRASE is the credential's passphrase value as stored: clear for key
version 1, base64(HMAC-SHA256(secret, passphrase)) for versions 2 and 3, made
in the token at import. KC-API-KEY-VERSION is the key's `key_version` option
(ccxt always sends '2'). ccxt's KC-API-PARTNER* headers are signed with ccxt's
own partner secret and are not produced (exchange-signing.md 0.7).
"""

from __future__ import annotations

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import json_body_text, query_or_body, unencoded_query
from agent.exchanges.okx.scheme import JSON_CONTENT_TYPE, require_passphrase
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey

KEY_VERSIONS = ("2", "1", "3")  # the first is the default: KuCoin issues version 2 (and 3) keys today


def raw_query(params) -> str:
    """The query as KuCoin signs it (ccxt's rawencode): name=value joined by '&', nothing encoded."""
    return unencoded_query(params, "KuCoin", body_follows=True)


class KucoinScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if key.key_type != "hmac":
            raise UnsupportedKey(f"kucoin signs with HMAC keys only, not {key.key_type}")
        passphrase = require_passphrase(key, "kucoin")
        version = key.option("key_version") or KEY_VERSIONS[0]
        if version not in KEY_VERSIONS:
            raise UnsupportedKey(f"kucoin key_version must be one of {', '.join(KEY_VERSIONS)}")
        if request.method == "GET" and request.body is not None:
            raise RequestInvalid("KuCoin signs GET requests without a body; move the parameters into 'query'")
        query_text = raw_query(request.query)
        endpoint = f"{request.path}?{query_text}" if query_text else request.path
        body_text = json_body_text(request.body, "KuCoin")
        query_or_body(request, "KuCoin", body=body_text)
        timestamp = str(env.now_ms)
        prehash = f"{timestamp}{request.method}{endpoint}{body_text}"
        signature = b64(key.mac(prehash.encode("utf-8"), "sha256"))

        headers = [
            ("KC-API-KEY-VERSION", version),
            ("KC-API-KEY", key.api_key),
            ("KC-API-TIMESTAMP", timestamp),
        ]
        if body_text:  # ccxt sends Content-Type only with a JSON body
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        headers += [("KC-API-PASSPHRASE", passphrase), ("KC-API-SIGN", signature)]
        return SignedRequest(method=request.method, path=endpoint, headers=tuple(headers), body=body_text)


SCHEME = KucoinScheme()
