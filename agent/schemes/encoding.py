"""Encodings several exchange schemes share: one implementation of each, so that they cannot drift.

Exchanges sign bytes. Where two schemes both send "ccxt's urlencode" or "ccxt's json()", they must
produce the very same bytes, and where two refuse an ambiguous raw body they should refuse it the
same way; a fix made in one copy and not in the others is how signing bugs start. So only helpers
whose behaviour is identical for every caller live here. Look-alikes that differ on purpose stay in
their scheme: Kraken's form encoding keeps '[' and ']' (ccxt's urlencode_nested); KuCoin, Bitget and
Gate sign the query un-encoded; HTX encodes values only; Coinbase and Deribit accept any JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote

from agent.schemes.request import Body, RawBody, RequestInvalid, UnsignedRequest

# For exchanges whose nonce comes from the key's nonce store (Kraken, Bitfinex, Gemini).
NONCE_REFUSED = "remove 'nonce': the agent issues nonces so they never go backwards"
FORM = "form-encoded parameters (name=value&...)"
# A JSON body's top-level value, objects as dicts in the order written.
JsonBody = dict[str, object] | list[object]


def urlencode(params: Iterable[tuple[str, str]]) -> str:
    """ccxt's urlencode of string parameters: `name=value&...`, names and values percent-encoded as
    UTF-8 with only A-Z a-z 0-9 _ . - ~ left as is (space is %20, where urllib.parse.urlencode gives
    '+'). This is the text ccxt sends and signs; any other spelling breaks byte-for-byte equality."""
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)


def join_params(first: str, second: str) -> str:
    """Two encoded parameter strings as one, joined by '&'; an empty one is left out (no stray '&')."""
    return f"{first}&{second}" if first and second else first or second


def ccxt_json(value: object) -> str:
    """ccxt's json(): compact separators, non-ASCII kept as UTF-8 (what ccxt gives with orjson).
    Bodies and payloads built from parameter pairs must be these bytes to equal what ccxt sends."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_json_body(
    text: str,
    exchange: str,
    *,
    arrays: bool = False,
    unique_names: bool = True,
    parse_float: Callable[[str], object] | None = None,
) -> JsonBody:
    """The value of the raw JSON body TEXT, which is sent and signed as given; RequestInvalid naming
    EXCHANGE unless it is one JSON object (or array, with ARRAYS) that every reader parses the same:
    NaN and Infinity are refused (not JSON), and with UNIQUE_NAMES so is a name twice in one object
    (parsers keep the first or the last, so the exchange and a policy could read different values).
    Objects come back as dicts, in the order written; nesting too deep for Python is refused too."""
    shape = "a JSON object or array" if arrays else "one JSON object"

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for name, value in pairs:
            if name in result:
                raise RequestInvalid(
                    f"raw JSON body for {exchange} has the name {name[:64]!r} twice in one object; send each name once"
                )
            result[name] = value
        return result

    def no_constant(name: str) -> object:
        raise RequestInvalid(f"raw body must be valid JSON text, {shape}, for {exchange}: {name} is not JSON")

    try:
        value = json.loads(
            text, object_pairs_hook=unique if unique_names else None, parse_float=parse_float,
            parse_constant=no_constant,
        )
    except (ValueError, RecursionError) as error:  # RecursionError: nested past Python's parser limit
        if isinstance(error, RequestInvalid):
            raise
        raise RequestInvalid(f"raw body must be valid JSON text, {shape}, for {exchange}") from None
    if not isinstance(value, (dict, list) if arrays else dict):
        raise RequestInvalid(f"raw body must be {shape} for {exchange}")
    return value


def json_body_text(body: Body, exchange: str, *, no_params: str = "") -> str:
    """The JSON text to send and sign where a body is optional (OKX, KuCoin, Bitget, Gate, HTX): ""
    for no body or an empty raw body; a raw body as given, once checked to be a JSON object or array
    (a name twice is refused: the exchange and a policy could read different values); pairs as
    ccxt's json() of strings,
    and no pairs at all NO_PARAMS ("{}" where ccxt sends json({}) rather than no body)."""
    if body is None:
        return ""
    if isinstance(body, RawBody):
        if body.text == "":
            return ""
        parse_json_body(body.text, exchange, arrays=True)
        return body.text
    return ccxt_json(dict(body)) if body else no_params


def json_object_body(
    body: Body, exchange: str, *, arrays: bool = False, parse_float: Callable[[str], object] | None = None
) -> tuple[JsonBody, str]:
    """(parameters, JSON text to send and sign) where a JSON body is always sent (Bybit, MEXC futures,
    Bitfinex, Gemini, Crypto.com): a raw body as written, once checked by parse_json_body (one JSON
    object, or an array with ARRAYS; no name twice); pairs, and no body, as ccxt's json() of strings
    ('{}' for none, which is what ccxt sends). The parameters let a scheme refuse names it sets."""
    if isinstance(body, RawBody):
        return parse_json_body(body.text, exchange, arrays=arrays, parse_float=parse_float), body.text
    params: dict[str, object] = dict(body or ())
    return params, ccxt_json(params)


def form_pairs(text: str, exchange: str, *, expect: str = FORM) -> list[tuple[str, str]]:
    """The pairs of a raw form body, parsed only to check them: the text is sent and signed byte for
    byte, never re-encoded, so it must already be percent-encoded ASCII (what the exchange decodes)
    and parse strictly; RequestInvalid naming EXCHANGE and EXPECT (what to send instead) otherwise."""
    if not text:
        return []
    if not text.isascii():
        raise RequestInvalid(f"raw body must be ASCII for {exchange}: percent-encode non-ASCII characters (UTF-8)")
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise RequestInvalid(f"raw body must be {expect} for {exchange}") from None


def check_post_body_endpoint(request: UnsignedRequest, *, exchange: str, endpoints: str, scope: str, prefix: str,
                             signed: str) -> None:
    """A POST to PREFIX<endpoint> with every parameter in the body: for exchanges that sign the body
    and never a query (a query would be sent unsigned). ENDPOINTS, SCOPE and SIGNED word the refusals."""
    if request.method != "POST":
        raise RequestInvalid(f"{exchange} {endpoints} take POST only")
    if not request.path.startswith(prefix) or len(request.path) == len(prefix):
        raise RequestInvalid(
            f"{exchange} signs {scope} only: the path must start with {prefix} (public endpoints need no signature)"
        )
    if request.query:
        raise RequestInvalid(f"{exchange} signs {signed} only: move the query parameters into 'body'")
