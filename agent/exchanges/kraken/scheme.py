"""Kraken spot REST: HMAC-SHA512 over the path and SHA-256(nonce || POST body).

Reference: docs/exchange-signing.md 2.13; docs.kraken.com "Spot REST
authentication". API-Sign = base64(HMAC-SHA512(key, path || SHA256(nonce ||
body))), the key being the base64-decoded secret (secret_encoding="base64":
the Credential already holds the 64 decoded bytes). The inner SHA-256 uses no
secret and is computed here. Every private endpoint is a POST under
/0/private/ whose body carries the nonce; nothing else is signed, so a query
string is refused.

The nonce comes only from the key (`key.nonce`, floor = the clock in
milliseconds, as ccxt's kraken.nonce()): Kraken rejects a nonce not greater
than the last one for the key, so a caller's `nonce` is refused, and a key must
keep the unit it started with (a later smaller-unit nonce would go backwards).

Bodies as ccxt sends them: form-encoded with `nonce` first (ccxt's
urlencode_nested: '[' and ']' are left as they are); or JSON with `"nonce"`
(a string) first, which ccxt uses for AddOrderBatch, CancelOrderBatch and
orders whose price ends in '%'. Parameter pairs follow ccxt's choice; a raw
body is JSON when it is a JSON object, else form text, and the agent inserts
the nonce in front of it without touching the rest.
Kraken does not sign the Content-Type, which says how it parses the body: form
text must read one way only (encoding.form_pairs), and JSON must hold no '&' or
'=' (read as form, it then has no `nonce` pair, so it verifies as nothing).
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import (
    FORM,
    NONCE_REFUSED,
    ccxt_json,
    check_post_body_endpoint,
    form_pairs,
    json_readable_as_form,
    parse_json_body,
)
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest

PRIVATE_PREFIX = "/0/private/"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
# Endpoints whose parameters are arrays of objects: ccxt sends them as JSON, and pairs cannot express them.
JSON_ONLY_ENDPOINTS = ("AddOrderBatch", "CancelOrderBatch")


def _form(params) -> str:
    """ccxt's urlencode_nested for flat string parameters: quote() keeping '[' and ']'."""
    return "&".join(f"{quote(name, safe='[]')}={quote(value, safe='[]')}" for name, value in params)


def _check_json_body(text: str) -> bool:
    """Check the raw JSON body; True when the object has members."""
    names = list(parse_json_body(text, "Kraken"))  # a raw body starting with '{' is JSON
    if "nonce" in names:
        raise RequestInvalid(NONCE_REFUSED)
    return bool(names)


def _json_with_nonce(text: str, has_members: bool, nonce: str) -> str:
    """`{"nonce":"N"` followed by the members of the JSON object TEXT, kept as written."""
    inner = text.strip()[1:-1]
    return '{"nonce":' + ccxt_json(nonce) + ("," + inner if has_members else "") + "}"


def _check_form_body(text: str) -> None:
    pairs = form_pairs(text, "Kraken", expect=FORM + " or one JSON object")
    if any(name == "nonce" for name, _ in pairs):
        raise RequestInvalid(NONCE_REFUSED)


def _form_with_nonce(text: str, nonce: str) -> str:
    return f"nonce={nonce}&{text}" if text else f"nonce={nonce}"


class KrakenScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        check_post_body_endpoint(request, exchange="Kraken", endpoints="private endpoints",
                                 scope="private spot endpoints", prefix=PRIVATE_PREFIX, signed="the POST body")
        endpoint = request.path[len(PRIVATE_PREFIX):]
        body = request.body

        has_members = False
        if isinstance(body, RawBody):
            is_json = body.text.lstrip().startswith("{")
            if is_json:
                has_members = _check_json_body(body.text)
            elif endpoint in JSON_ONLY_ENDPOINTS:
                raise RequestInvalid(f"Kraken {endpoint} takes a JSON body: send the parameters as one JSON object")
            else:
                _check_form_body(body.text)
        else:
            params = tuple(body or ())
            if any(name == "nonce" for name, _ in params):
                raise RequestInvalid(NONCE_REFUSED)
            if endpoint in JSON_ONLY_ENDPOINTS:
                raise RequestInvalid(
                    f"Kraken {endpoint} takes arrays of orders, which name=value pairs cannot express: "
                    "send the parameters as a raw JSON object body"
                )
            # ccxt sends JSON when the price is a percentage (trigger offsets such as '+5%').
            is_json = dict(params).get("price", "").endswith("%")

        def with_nonce(nonce: str) -> str:
            if isinstance(body, RawBody):
                return _json_with_nonce(body.text, has_members, nonce) if is_json else _form_with_nonce(body.text, nonce)
            if is_json:
                return ccxt_json({"nonce": nonce, **dict(params)})
            return _form((("nonce", nonce),) + params)

        if is_json:
            # Checked before a nonce is taken, so that a refusal spends none: the nonce is digits, so
            # it adds no '&' or '=' and any digits stand for it here.
            json_readable_as_form(with_nonce("0"), "Kraken", "does not sign the Content-Type")
        nonce = str(key.nonce(env.now_ms))
        text = with_nonce(nonce)
        digest = hashlib.sha256((nonce + text).encode("utf-8")).digest()
        signature = b64(key.mac(request.path.encode("utf-8") + digest, "sha512"))
        headers = (
            ("API-Key", key.api_key),
            ("API-Sign", signature),
            ("Content-Type", JSON_CONTENT_TYPE if is_json else FORM_CONTENT_TYPE),
        )
        return SignedRequest(method="POST", path=request.path, headers=headers, body=text)


SCHEME = KrakenScheme()
