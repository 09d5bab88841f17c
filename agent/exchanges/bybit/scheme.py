"""Bybit v5: HMAC-SHA256 (lowercase hex) or RSA-PKCS1v15-SHA256 (base64) in X-BAPI-* headers.

Reference: docs/exchange-signing.md 2.7; bybit-exchange/docs docs/v5/guide.mdx; ccxt
bybit.sign() (v5 branch). Signed text: timestamp + api_key + recv_window + payload, where the
payload is the query string exactly as sent (GET) or the raw JSON body (POST). v5 private
endpoints are GET or POST only; a POST query and a GET body would go unsigned, so they are refused.
The query is percent-encoded as UTF-8 (all but A-Z a-z 0-9 _ . - ~) and that text is signed: the
same bytes as ccxt for such values. ccxt sends the query unencoded (rawencode), which makes values
with '&', '=', '#' or spaces ambiguous; Bybit verifies the query as received (sieblyio/bybit-api
encodes values before signing for that reason since v3.3.0), so signing the encoded text is safe.
The method is not signed either: a POST's JSON payload could be sent as a GET
query, so JSON holding '&' or '=' is refused (encoding.json_readable_as_form).
recv_window is a per-key option (default 5000 ms, Bybit's and ccxt's default): a policy of whoever
imports the key, since a shorter window narrows replay. RSA keys also send X-BAPI-SIGN-TYPE: 2,
as Bybit's official RSA sample (api-usage-examples V5_demo/api_demo/Encryption_RSA.py) does;
ccxt does not. Its HMAC sample sends the same "2", so the header selects nothing by key type
and cannot hurt; it is left out for HMAC keys so that those requests stay identical to ccxt's.
"""

from __future__ import annotations


from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import json_object_body, json_readable_as_form, urlencode
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey

PATH_PREFIX = "/v5/"
DEFAULT_RECV_WINDOW = "5000"
JSON_CONTENT_TYPE = "application/json"


class BybitScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if key.key_type not in ("hmac", "rsa"):
            raise UnsupportedKey(f"bybit signs with hmac or rsa keys, not {key.key_type}")
        if not request.path.startswith(PATH_PREFIX):
            raise RequestInvalid(
                "Bybit paths must start with /v5/: the retired v2/v3 endpoints sign differently"
            )
        if request.method == "GET":
            if request.body is not None:
                raise RequestInvalid("Bybit signs GET parameters from the query only; move the body into 'query'")
            payload = urlencode(request.query)
            body_text = ""
        elif request.method == "POST":
            if request.query:
                raise RequestInvalid("Bybit signs the POST body only; move the query parameters into the JSON body")
            _, payload = json_object_body(request.body, "Bybit")
            json_readable_as_form(payload, "Bybit", "does not sign the method or the path")
            body_text = payload
        else:
            raise RequestInvalid(f"Bybit v5 private endpoints are GET or POST, not {request.method}")

        recv_window = key.option("recv_window") or DEFAULT_RECV_WINDOW
        timestamp = str(env.now_ms)
        message = f"{timestamp}{key.api_key}{recv_window}{payload}".encode("utf-8")
        if key.key_type == "hmac":
            signature = key.mac(message, "sha256").hex()
        else:
            signature = b64(key.sign(message))

        # ccxt's order; Content-Type on every v5 request, GET included (as ccxt and Bybit's samples).
        headers = [
            ("Content-Type", JSON_CONTENT_TYPE),
            ("X-BAPI-API-KEY", key.api_key),
            ("X-BAPI-TIMESTAMP", timestamp),
            ("X-BAPI-RECV-WINDOW", recv_window),
            ("X-BAPI-SIGN", signature),
        ]
        if key.key_type == "rsa":
            headers.append(("X-BAPI-SIGN-TYPE", "2"))
        path = f"{request.path}?{payload}" if request.method == "GET" and payload else request.path
        return SignedRequest(method=request.method, path=path, headers=tuple(headers), body=body_text)


SCHEME = BybitScheme()
