"""HTX (Huobi) Signature V2: HMAC-SHA256 or Ed25519, base64, over four lines.

Reference: docs/exchange-signing.md 2.12; HTX spot docs "Authentication";
HTX's Python SDK (api_signature.py, api_signature_ED25519.py); ccxt htx.sign()
(HMAC only). The signed text is

    METHOD \\n host \\n path \\n canonical query

The canonical query holds AccessKeyId, SignatureMethod (HmacSHA256 or Ed25519),
SignatureVersion=2, Timestamp (UTC YYYY-MM-DDThh:mm:ss; rounded to the nearest
second as ccxt does) and, on GET, every request parameter; names sorted by
ASCII, values percent-encoded as UTF-8 (upper-case hex, space as %20). It is
sent as the query itself, followed by `&Signature=` (base64, percent-encoded).

POST parameters travel in the JSON body, which HTX does NOT sign: a signature
obtained for one body is valid with any other body for the same path within
the timestamp's validity, so policy must inspect the body (threat-model.md).

The host is signed but is not part of UnsignedRequest. HTX serves spot on
api.huobi.pro and derivatives on api.hbdm.com, and one key works on both, so a
single per-key host cannot be right. The host *family* is derived from the
path, as ccxt does (its spot/contract split, checked endpoint by endpoint in
the tests), and per-key options choose the host within each family (defaults:
ccxt's). A path of no known family (including /market/, public on both) is
refused rather than signed for a guessed host.

Parameter names must be unreserved characters (A-Z a-z 0-9 - _ . ~): HTX's are,
and for such names sorting before or after encoding gives the same order.
"""

from __future__ import annotations

import datetime
import re
from urllib.parse import quote

from agent.schemes.context import Credential, Environment, b64
from agent.schemes.encoding import json_body_text
from signing_agent_client.request import RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import UnsupportedKey
from signing_agent_client.ccxt_bridge.htx import AUTH_PARAMS, CONTRACT_HOSTS, SPOT_HOSTS, family

# The hosts, the path families and the authentication parameters are shared with the ccxt bridge
# (signing_agent_client.ccxt_bridge.htx, which checks ccxt's host): defined there, once.
_FAMILY_HOSTS = {"spot": ("spot_host", SPOT_HOSTS), "contract": ("contract_host", CONTRACT_HOSTS)}
SIGNATURE_METHODS = {"hmac": "HmacSHA256", "ed25519": "Ed25519"}
_NAME = re.compile(r"[A-Za-z0-9_.~-]+\Z")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"  # ccxt's header on GET
JSON_CONTENT_TYPE = "application/json"


def host_for(path: str, key: Credential) -> str:
    option, allowed = _FAMILY_HOSTS[family(path)]
    host = key.option(option) or allowed[0]
    if host not in allowed:
        raise UnsupportedKey(f"htx option {option} must be one of {', '.join(allowed)}")
    return host


def timestamp(now_ms: int) -> str:
    """ccxt's ymdhms(now_ms, 'T'): seconds rounded half to even (Python round), UTC."""
    seconds, rest = divmod(now_ms, 1000)
    if rest > 500 or (rest == 500 and seconds % 2 == 1):
        seconds += 1
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def canonical_query(params) -> str:
    """Names sorted by ASCII (unreserved names: before or after encoding is the same), values encoded."""
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in sorted(params, key=lambda p: p[0]))


def signed_text(method: str, host: str, path: str, canonical: str) -> bytes:
    return f"{method}\n{host}\n{path}\n{canonical}".encode("utf-8")


class HtxScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        method_name = SIGNATURE_METHODS.get(key.key_type)
        if method_name is None:
            raise UnsupportedKey(f"htx does not take {key.key_type} keys (it takes: hmac, ed25519)")
        if request.method not in ("GET", "POST"):
            raise RequestInvalid("HTX private endpoints are GET or POST")
        if not request.path.isascii():
            raise RequestInvalid("HTX paths are ASCII; percent-encode path parameters")
        if request.method == "GET" and request.body is not None:
            raise RequestInvalid("HTX GET requests take no body; move the parameters into 'query'")
        if request.method == "POST" and request.query:
            raise RequestInvalid("HTX POST parameters go in the JSON body, not the query")
        for name, _ in request.query:
            if name in AUTH_PARAMS:
                raise RequestInvalid(f"remove {name!r}: the agent sets the authentication parameters")
            if not _NAME.match(name):
                raise RequestInvalid("HTX parameter names must be letters, digits, '-', '_', '.' or '~'")
        host = host_for(request.path, key)
        body_text = json_body_text(request.body, "HTX", no_params="{}") if request.method == "POST" else ""

        params = [
            ("AccessKeyId", key.api_key),
            ("SignatureMethod", method_name),
            ("SignatureVersion", "2"),
            ("Timestamp", timestamp(env.now_ms)),
            *request.query,
        ]
        canonical = canonical_query(params)
        payload = signed_text(request.method, host, request.path, canonical)
        if key.key_type == "hmac":
            signature = b64(key.mac(payload, "sha256"))
        else:
            signature = b64(key.sign(payload))

        content_type = JSON_CONTENT_TYPE if request.method == "POST" else FORM_CONTENT_TYPE
        return SignedRequest(
            method=request.method,
            path=f"{request.path}?{canonical}&Signature={quote(signature, safe='')}",
            headers=(("Content-Type", content_type),),
            body=body_text,
        )


SCHEME = HtxScheme()
