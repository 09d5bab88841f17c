"""MEXC spot v3 and futures (contract): HMAC-SHA256, lowercase hex; which scheme, by path prefix.

Reference: docs/exchange-signing.md 2.15; mexcdevelop/apidocs (spot_v3_en, contract_v1_en);
ccxt mexc.sign(). ccxt has one class, "mexc", and picks the scheme by API section, which fixes the
URL: spot and broker go to https://api.mexc.com/api/v3/..., private contract calls to
https://api.mexc.com/api/v1/private/... The agent sees only the path, so it dispatches on it:
  /api/v3/          spot, Binance-style: totalParams = query string + form body, as sent; `timestamp`
                    and `recvWindow` (5000, MEXC's and ccxt's default) appended last when absent, as
                    ccxt does; `signature` appended last; header X-MEXC-APIKEY.
  /api/v1/private/  contract: accessKey + Request-Time(ms) + paramString, where paramString is the
                    query sorted by name (GET, DELETE) or the JSON body (POST); headers ApiKey,
                    Request-Time, Signature.
Neither scheme signs the path; the contract scheme does not sign the method either, so its POST
JSON must not hold '&' or '=' (it could be sent as a GET query). A raw spot body must read one way
only (encoding.form_pairs): a cut of query + body inside a parameter then leaves a segment with no
'=', which is no parameter.
Any other prefix is refused: /api/v1/contract/ is public, /open/api/v2/ is the retired spot v2.
Broker endpoints (/api/v3/broker/) send, in ccxt, a JSON body that the signature does not cover:
the agent refuses to sign a request whose body would go unsigned.
"""

from __future__ import annotations

from agent.schemes.context import Credential, Environment
from agent.schemes.encoding import (
    form_pairs,
    join_params,
    json_object_body,
    json_readable_as_form,
    query_or_body,
    urlencode,
)
from signing_agent_client.request import RawBody, RequestInvalid, SignedRequest, UnsignedRequest, check_params
from agent.schemes.spec import UnsupportedKey

SPOT_PREFIX = "/api/v3/"
BROKER_PREFIX = "/api/v3/broker/"
CONTRACT_PREFIX = "/api/v1/private/"
SPOT_API_KEY_HEADER = "X-MEXC-APIKEY"
DEFAULT_RECV_WINDOW = "5000"
JSON_CONTENT_TYPE = "application/json"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _digits(value: str | None) -> bool:
    return value is None or (value.isascii() and value.isdigit())


class MexcScheme:
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
        request = request.validated()
        if key.key_type != "hmac":
            raise UnsupportedKey(f"mexc signs with HMAC keys only, not {key.key_type}")
        if request.path.startswith(CONTRACT_PREFIX):
            return _sign_contract(request, key, env)
        if request.path.startswith(SPOT_PREFIX):
            return _sign_spot(request, key, env)
        raise RequestInvalid(
            "MEXC paths must start with /api/v3/ (spot) or /api/v1/private/ (futures); "
            "/api/v1/contract/ is public and /open/api/v2/ is retired"
        )


# -- spot v3 -------------------------------------------------------------------------


def _form_pairs(text: str) -> list[tuple[str, str]]:
    """A raw spot body, sent and signed as given, must be exactly what the agent would encode from its
    pairs: the futures scheme signs ApiKey + Request-Time + JSON with the same secret and HMAC, so a
    raw spot body spelling `<api key><time>{"symbol":...}` would sign a futures order."""
    if text.lstrip().startswith(("{", "[")):
        raise RequestInvalid(
            "MEXC spot signs query + form body; send the parameters in 'query' (as ccxt does), not JSON"
        )
    pairs = form_pairs(text, "MEXC spot")
    if urlencode(pairs) != text:
        raise RequestInvalid(
            "raw body for MEXC spot must be percent-encoded exactly as the agent encodes pairs (only "
            "A-Z a-z 0-9 _ . - ~ left as is): MEXC futures signs with the same key, and other text could "
            "spell one of its requests; send the parameters as pairs, or in 'query' (as ccxt does)"
        )
    return pairs


def _sign_spot(request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
    body = request.body
    has_body = bool(body.text) if isinstance(body, RawBody) else bool(body)
    if request.method == "GET" and body is not None:
        raise RequestInvalid("MEXC reads GET parameters from the query only; move the body into 'query'")
    if has_body and request.path.startswith(BROKER_PREFIX):
        raise RequestInvalid(
            "MEXC broker endpoints do not sign the request body; send every parameter in 'query' so that it is signed"
        )
    body_pairs = _form_pairs(body.text) if isinstance(body, RawBody) else list(body or ())
    query_or_body(request, "MEXC spot", body="&".join(f"{n}={v}" for n, v in body_pairs))
    pairs = tuple(request.query) + tuple(body_pairs)
    if any(name == "signature" for name, _ in pairs):
        raise RequestInvalid("remove 'signature': the agent computes it")
    check_params("query and body together", pairs)  # MEXC signs both as one parameter list
    given = dict(pairs)
    if not _digits(given.get("timestamp")):
        raise RequestInvalid("'timestamp' must be milliseconds since the epoch (digits only)")
    if not _digits(given.get("recvWindow")):
        raise RequestInvalid("'recvWindow' must be milliseconds (digits only; MEXC allows at most 60000)")
    stamp = []
    if "timestamp" not in given:
        stamp.append(("timestamp", str(env.now_ms)))
    if "recvWindow" not in given:
        stamp.append(("recvWindow", DEFAULT_RECV_WINDOW))

    if has_body:
        query_text = urlencode(request.query)
        body_text = join_params(body.text if isinstance(body, RawBody) else urlencode(body), urlencode(stamp))
    else:
        query_text = join_params(urlencode(request.query), urlencode(stamp))
        body_text = ""
    signature = "signature=" + key.mac((query_text + body_text).encode("ascii"), "sha256").hex()
    if has_body:
        body_text = join_params(body_text, signature)
    else:
        query_text = join_params(query_text, signature)

    headers = [(SPOT_API_KEY_HEADER, key.api_key)]
    if has_body:
        headers.append(("Content-Type", FORM_CONTENT_TYPE))
    elif request.method != "GET":  # ccxt sends it on POST, PUT and DELETE, without a body
        headers.append(("Content-Type", JSON_CONTENT_TYPE))
    path = f"{request.path}?{query_text}" if query_text else request.path
    return SignedRequest(request.method, path, tuple(headers), body_text)


# -- futures (contract) ----------------------------------------------------------------


def _sign_contract(request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest:
    if request.method in ("GET", "DELETE"):
        if request.body is not None:
            raise RequestInvalid(
                f"MEXC futures signs {request.method} parameters from the query only; move the body into 'query'"
            )
        # Sorted by name: MEXC signs "the parameters in dictionary order"; sent in that order too (as ccxt).
        param_string = urlencode(sorted(request.query))
        body_text = ""
    elif request.method == "POST":
        if request.query:
            raise RequestInvalid("MEXC futures signs the POST body only; move the query parameters into the JSON body")
        _, param_string = json_object_body(request.body, "MEXC futures", arrays=True)
        json_readable_as_form(param_string, "MEXC futures", "does not sign the method or the path")
        body_text = param_string
    else:
        raise RequestInvalid(f"MEXC futures endpoints are GET, POST or DELETE, not {request.method}")

    timestamp = str(env.now_ms)
    signature = key.mac(f"{key.api_key}{timestamp}{param_string}".encode("utf-8"), "sha256").hex()
    headers = (
        ("ApiKey", key.api_key),
        ("Request-Time", timestamp),
        ("Content-Type", JSON_CONTENT_TYPE),
        ("Signature", signature),
    )
    path = f"{request.path}?{param_string}" if request.method != "POST" and param_string else request.path
    return SignedRequest(request.method, path, headers, body_text)


SCHEME = MexcScheme()
