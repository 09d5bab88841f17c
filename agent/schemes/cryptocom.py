"""Crypto.com Exchange v1: hex HMAC-SHA256, placed in the JSON body, not in a header.

Reference: shared/docs/exchange-signing.md 2.8 (Crypto.com's Python and JavaScript
samples; ccxt). Signed: method + id + api_key + paramString + nonce, where the
method is the path from "private/" on (POST .../exchange/v1/private/create-order
-> "private/create-order") and paramString is the params' keys sorted ascending,
each followed by its value; a list contributes its elements in order, a dict
element its own sorted paramString, down to depth 3. The body is
{"id", "method", "params", "api_key", "sig", "nonce"}.

The nonce comes from the key's strictly increasing nonce (milliseconds, ccxt's
unit) and doubles as the id, as in ccxt, which sends both as JSON strings.
The params are given as a RawBody with the JSON object (kept byte for byte in the
body) or as string pairs. A JSON null is signed as "null" (the documented rule;
ccxt renders Python's None as "None", exchange-signing.md 2.8). What the samples
render differently by language is refused rather than guessed: booleans (Python
"True", JavaScript "true"), non-integer numbers (str() of a float differs), a
dict outside a list, lists inside lists, and anything but text or integers at
depth 3 and below (the samples fall back to str() there).
"""

from __future__ import annotations

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import ccxt_json, json_object_body
from agent.schemes.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import Exchange

MAX_LEVEL = 3
JSON_CONTENT_TYPE = "application/json"
_ENVELOPE_KEYS = ("sig", "api_key")


class _Decimal(str):
    """A JSON number with a fraction or exponent, kept as text so it can be refused by name."""


def _params(request: UnsignedRequest) -> tuple[dict[str, object], str]:
    """(params, their JSON text for the body)."""
    if isinstance(request.body, RawBody) and request.body.text.strip() == "":
        return {}, "{}"
    params, text = json_object_body(request.body, "Crypto.com", parse_float=_Decimal)
    assert isinstance(params, dict)  # json_object_body without arrays=True: always an object
    return params, text


def param_string(params: dict[str, object], level: int = 0) -> str:
    """Crypto.com's paramString of a params object (the object itself is at LEVEL 0)."""
    out = []
    for name in sorted(params):
        value = params[name]
        out.append(name)
        if isinstance(value, list):
            out.extend(_element(item, level + 1, name) for item in value)
        elif isinstance(value, dict):
            raise RequestInvalid(
                f"param {name[:64]!r} is an object outside a list: Crypto.com's samples sign it differently "
                "(Python str(), JavaScript recursion); send it flattened or as text"
            )
        else:
            out.append(_scalar(value, name))
    return "".join(out)


def _element(item: object, level: int, name: str) -> str:
    if isinstance(item, list):
        raise RequestInvalid(f"param {name[:64]!r} has a list inside a list, which Crypto.com's samples do not sign")
    if isinstance(item, dict):
        if level >= MAX_LEVEL:
            raise RequestInvalid(
                f"param {name[:64]!r} nests objects deeper than Crypto.com signs (depth {MAX_LEVEL})"
            )
        return param_string(item, level)
    return _scalar(item, name)


def _scalar(value: object, name: str) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        raise RequestInvalid(
            f"param {name[:64]!r} is a boolean, which Crypto.com's samples sign differently "
            "(Python True, JavaScript true); send it as a string"
        )
    if isinstance(value, _Decimal):
        raise RequestInvalid(f"param {name[:64]!r} is a decimal number: send it as a string, as ccxt does")
    if isinstance(value, (str, int)):
        return str(value)
    raise RequestInvalid(f"param {name[:64]!r} has a value that cannot be signed")  # pragma: no cover


def _method(path: str) -> str:
    index = path.find("/private/")
    if index < 0 or path.endswith("/private/"):
        raise RequestInvalid(
            "path must end with the private method, e.g. /exchange/v1/private/user-balance "
            "(Crypto.com signs the method name from 'private/' on)"
        )
    return path[index + 1:]


class CryptocomScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if request.method != "POST":
            raise RequestInvalid("Crypto.com private methods are POST requests with a JSON body")
        if request.query:
            raise RequestInvalid("Crypto.com takes private params in the JSON body; move the query into 'body'")
        method = _method(request.path)
        params, params_text = _params(request)
        present = [name for name in _ENVELOPE_KEYS if name in params]
        if present:
            raise RequestInvalid(
                f"remove {present[0]!r}: give only the method's params; "
                "the agent adds id, method, api_key, sig and nonce"
            )
        signed_params = param_string(params)
        nonce = str(key.nonce(env.now_ms))
        message = method + nonce + key.api_key + signed_params + nonce
        sig = key.mac(message.encode("utf-8"), "sha256").hex()
        body = (
            f'{{"id":{ccxt_json(nonce)},"method":{ccxt_json(method)},"params":{params_text},'
            f'"api_key":{ccxt_json(key.api_key)},"sig":{ccxt_json(sig)},"nonce":{ccxt_json(nonce)}}}'
        )
        return SignedRequest(
            method="POST", path=request.path, headers=(("Content-Type", JSON_CONTENT_TYPE),), body=body
        )


SCHEME = CryptocomScheme()

EXCHANGES = (Exchange("cryptocom", SCHEME, ccxt_id="cryptocom", docs="2.8"),)
