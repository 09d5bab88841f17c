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
import re
from itertools import chain
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote_to_bytes

from signing_agent_client.request import Body, RawBody, RequestInvalid, UnsignedRequest, check_params

# For exchanges whose nonce comes from the key's nonce store (Kraken, Bitfinex, Gemini).
NONCE_REFUSED = "remove 'nonce': the agent issues nonces so they never go backwards"
FORM = "form-encoded parameters (name=value&...)"
# A JSON body's top-level value, objects as dicts in the order written.
JsonBody = dict[str, object] | list[object]


def urlencode(params: Iterable[tuple[str, str]]) -> str:
    """ccxt's urlencode of string parameters: `name=value&...`, names and values percent-encoded as
    UTF-8 with only A-Z a-z 0-9 _ . - ~ left as is (space is %20, where urllib.parse.urlencode gives
    '+'). This is the text ccxt sends and signs; any other spelling breaks byte-for-byte equality."""
    params = params if isinstance(params, (tuple, list)) else tuple(params)
    # Text made of unreserved characters only is its own encoding, and so is a concatenation of such
    # texts: one match over every name and value, instead of one each, for the usual order.
    if _UNRESERVED.fullmatch("".join(chain.from_iterable(params))):
        return "&".join([f"{name}={value}" for name, value in params])
    return "&".join([f"{_quoted(name)}={_quoted(value)}" for name, value in params])


# The characters quote(text, safe='') leaves as they are: text made of them only is its own encoding.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(text: str) -> str:
    """quote(TEXT, safe=''), without quote's encode-and-scan for the usual parameter that needs none
    (one regex match instead: the signing hot path encodes every name and value)."""
    return text if _UNRESERVED.fullmatch(text) else quote(text, safe="")


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


# -- signed text that the exchange parses back ---------------------------------------------------
#
# The policy reads the agent's parse of a request; the exchange verifies a signature over bytes and
# parses those bytes its own way. Wherever a character is a separator or an escape in the text the
# exchange verifies, it may stand only in that role: otherwise one string of signed bytes reads as two
# different requests (docs/security-model.md, "Signed bytes"). The helpers below refuse such text,
# naming the character, so what the exchange reads is what the policy checked.

# Form text (name=value&...): '&' and '=' separate, '%' escapes, '+' is a space; ';' separates for some
# parsers and '#' ends a URL. In a raw form body each may appear only in its role.
_FORM_RESERVED = frozenset("+;#")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Exchanges that sign the query un-encoded (KuCoin, Bitget, Gate) decode what they receive before they
# verify it, so any spelling of these verifies the same: no name or value may hold one.
_UNENCODED_RESERVED = frozenset("&=%+#;")
# Where the prehash continues with the JSON body with nothing in between (KuCoin, Bitget), a query
# holding '{' or '[' could start a body that a bot moves there.
_JSON_OPENERS = frozenset("{[")


def _describe(char: str) -> str:
    names = {"&": "'&' (separates parameters)", "=": "'=' (separates a name from its value)",
             "%": "'%' (starts an escape)", "+": "'+' (reads as a space)", ";": "';' (a separator to some parsers)",
             "#": "'#' (ends a URL)", "{": "'{' (could start a JSON body)", "[": "'[' (could start a JSON body)"}
    return names.get(char, f"{char!r} (a space or control character)")


def form_pairs(text: str, exchange: str, *, expect: str = FORM) -> list[tuple[str, str]]:
    """The pairs of a raw form body, which is sent and signed byte for byte, never re-encoded: so it
    must read one way only. ASCII; '&'-separated segments, none empty, each `name=value` with exactly
    one raw '=' and a non-empty name; '%' only as %XX of UTF-8; no raw '+', ';', '#', space or control
    character; no name twice (request.check_params: sizes and counts too). Otherwise RequestInvalid naming EXCHANGE, the character and EXPECT (what to send)."""
    if not text:
        return []
    if not text.isascii():
        raise RequestInvalid(f"raw body must be ASCII for {exchange}: percent-encode non-ASCII characters (UTF-8)")
    pairs = []
    for segment in text.split("&"):
        name, separator, value = segment.partition("=")
        if not separator or not name:
            shown = f"segment {segment[:32]!r}" if segment else "an empty segment ('&&', or '&' at either end)"
            raise RequestInvalid(f"raw body must be {expect} for {exchange}: {shown} is not name=value")
        bad = next((c for c in segment if c in _FORM_RESERVED or not "!" <= c <= "~"), None)
        if bad is None and "=" in value:
            bad = "="
        if bad is not None:
            raise RequestInvalid(
                f"raw body for {exchange}: parameter {name[:32]!r} holds a raw {_describe(bad)}; {exchange} "
                f"parses the bytes it verifies, so percent-encode it ({quote(bad, safe='')})"
            )
        if _BAD_ESCAPE.search(segment):
            raise RequestInvalid(f"raw body for {exchange}: parameter {name[:32]!r} has a '%' that is not %XX")
        try:
            pairs.append((unquote_to_bytes(name).decode("utf-8"), unquote_to_bytes(value).decode("utf-8")))
        except UnicodeDecodeError:
            raise RequestInvalid(f"raw body for {exchange}: parameter {name[:32]!r} is not UTF-8 once decoded") from None
    # Parsers keep the first or the last of a name given twice: the policy and the exchange could read
    # different values (the policy's own check is case-insensitive, this one holds without a policy).
    check_params("body", tuple(pairs))
    return pairs


def unencoded_query(params: Iterable[tuple[str, str]], exchange: str, *, body_follows: bool) -> str:
    """`name=value&...` with nothing encoded, for exchanges that sign the query decoded (KuCoin,
    Bitget, Gate): RequestInvalid for a name or value holding a separator, an escape or a control
    character (a space is text: form parsers agree on it), and with BODY_FOLLOWS (the prehash joins the query and the body) a '{' or '['."""
    reserved = _UNENCODED_RESERVED | (_JSON_OPENERS if body_follows else frozenset())
    for name, value in params:
        bad = next((c for c in name + value if c in reserved or not c.isprintable()), None)
        if bad is not None:
            raise RequestInvalid(
                f"query parameter {name[:32]!r} holds {_describe(bad)}: {exchange} signs the query un-encoded, "
                "so the signed text could be read as other parameters; send names and values without it"
            )
    text = "&".join(f"{name}={value}" for name, value in params)
    if body_follows and text.endswith(" "):
        raise RequestInvalid(
            f"the query ends with a space: {exchange} signs the query and the body joined, and JSON may "
            "start with spaces, so the space could be read as the start of the body; remove it"
        )
    return text


def query_or_body(request: UnsignedRequest, exchange: str, *, body: str) -> None:
    """Refuse a request carrying both a query and a BODY (its text) where the exchange signs them joined
    with nothing in between: a bot could move the boundary. Binance, MEXC spot (form bodies): the
    query's last pair and the body's first run together. OKX, KuCoin, Bitget (JSON bodies): the head
    of the body, moved into the end of the query, leaves a nested object that a lenient JSON reader
    (one that stops after the first value) takes for the whole body."""
    if request.query and body:
        raise RequestInvalid(
            f"{exchange} signs the query and the body with nothing between them, so a request may carry "
            "one or the other: put every parameter in the body (POST, PUT) or the query (GET, DELETE)"
        )


def json_readable_as_form(text: str, exchange: str, why: str) -> None:
    """Refuse JSON text holding '&' or '=' where the exchange could read the same signed bytes as form
    text (WHY: it does not sign the method or the Content-Type): with neither, no form reading of the
    text has a name=value pair, so it cannot pass for parameters."""
    bad = next((c for c in "&=" if c in text), None)
    if bad is not None:
        raise RequestInvalid(
            f"raw JSON body for {exchange} holds {_describe(bad)}: {exchange} {why}, so these bytes could "
            "also be read as form parameters; send the value without it"
        )


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
