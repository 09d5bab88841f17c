"""Each exchange's side of a signed request: the bytes it verifies, how it parses them, and what a
bot holding the signed request can change without changing those bytes.

The agent's policy decides on the agent's parse of a request. The exchange verifies a signature over
bytes it rebuilds from the HTTP request it receives, and acts on its own parse of that request. A bot
that holds a signed request may send the exchange any HTTP request whose rebuilt bytes are the same:
move the boundary between query and body where they are joined with nothing in between, spell the
query another way where the exchange decodes it before verifying, send another method, path or
Content-Type where those are not signed. Each `Reader` here is written from the exchange's
documentation (docs/security-model.md names the sources and the assumptions) and gives:

  verified(http)   the bytes the exchange verifies for this HTTP request (None: it cannot even
                   rebuild them, so nothing verifies)
  read(http)       what the exchange acts on: a Reading (method and path where the signature binds
                   them, and the parameters), or Refused when the exchange answers with an error
  reshapes(http)   the HTTP requests a bot can make from a signed one; the test keeps those whose
                   verified bytes are unchanged
  unbound(http)    the parts of this request the signature does not cover at all (HTX POST bodies,
                   Coinbase JWT queries and bodies): listed in the security model, closed only by
                   sending the request from the agent

The property (test_signed_bytes.py): for every request the agent signs, every reshape that verifies
reads as the request that was sent, or is refused by the exchange; and the request that was sent reads
as the parameters the policy checked.

Modelling choices, stated once (each is an exchange behaviour we rely on, not something we verified
against a live exchange):
  * Form text (query strings and form bodies) is split on '&'; empty segments are skipped; a segment
    is `name=value` split at its first '='. A segment with no '=' is a parameter the exchange does not
    read, which it refuses (Binance: -1104 "Not all sent parameters were read"; -1102 for an empty
    mandatory one). Names and values are percent-decoded as UTF-8 ('+' is a space).
  * A non-empty body is parsed as JSON where the exchange takes JSON: one object (its members are the
    parameters) or an array (a batch); anything else is refused.
  * Where an exchange decodes the query before it verifies (KuCoin, Bitget, Gate), the names and
    values of its private endpoints are identifiers, numbers, enumerations and symbols: a value that
    decodes to text holding '&' or '=' is refused as invalid.
  * No route holds '{', '[', '"' or '?': a path cannot absorb the start of a JSON body or a query.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from urllib.parse import quote, unquote, unquote_to_bytes

from signing_agent_client.request import SignedRequest

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
METHODS = ("GET", "POST", "PUT", "DELETE")


@dataclass(frozen=True)
class Http:
    """One HTTP request as a bot could send it: the query and the body as raw text."""

    method: str
    path: str
    query: str
    body: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, signed: SignedRequest) -> "Http":
        path, _, query = signed.path.partition("?")
        return cls(signed.method, path, query, signed.body, signed.headers)

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    def with_header(self, name: str, value: str) -> "Http":
        kept = tuple((n, v) for n, v in self.headers if n.lower() != name.lower())
        return replace(self, headers=kept + ((name, value),))


class Refused(str):
    """The exchange answers with an error: the reshaped request does nothing."""


@dataclass(frozen=True)
class Reading:
    method: str | None  # None where the signature does not bind it
    path: str | None
    params: tuple[tuple[str, object], ...]

    def key(self) -> tuple:
        return self.method, self.path, tuple(sorted((n, _canon(v)) for n, v in self.params))


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=False, default=str, ensure_ascii=False)


# -- parsing as the exchanges document it ---------------------------------------------------------


def form_read(text: str, *, decoded_values: bool = False) -> list[tuple[str, str]] | Refused:
    pairs = []
    for segment in text.split("&"):
        if segment == "":
            continue
        name, separator, value = segment.partition("=")
        if not separator:
            return Refused(f"segment {segment[:24]!r} is not name=value")
        if not name:
            return Refused("a parameter with an empty name")
        try:
            name = unquote_to_bytes(name.replace("+", " ")).decode("utf-8")
            value = unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:
            return Refused("not UTF-8")
        if decoded_values and any(c in name + value for c in "&="):
            return Refused("a decoded name or value holds '&' or '='")
        pairs.append((name, value))
    return pairs


def _unique(pairs: list[tuple[str, object]]) -> dict:
    result: dict = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate")
        result[name] = value
    return result


def json_read(text: str) -> list[tuple[str, object]] | Refused:
    if text == "":
        return []
    try:
        value = json.loads(text, parse_float=Decimal, object_pairs_hook=_unique)
    except ValueError:
        return Refused("the body is not JSON (or names a member twice)")
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list):
        return [("[]", value)]
    return Refused("the JSON body is not an object or an array")


def _join(*parts: list | Refused) -> list | Refused:
    out: list = []
    for part in parts:
        if isinstance(part, Refused):
            return part
        out.extend(part)
    # A name sent twice is ambiguous (which one the server reads is not documented), unless both say the
    # same text: then whichever it reads is that value (ccxt sends Gate's PATCH amend fields in the query
    # and the body, and Gate takes it).
    first: dict[str, object] = {}
    for name, value in out:
        if name in first and not (isinstance(value, str) and first[name] == value):
            return Refused("a parameter sent twice")
        first.setdefault(name, value)
    return out


def cuts(text: str) -> Iterator[tuple[str, str]]:
    for k in range(len(text) + 1):
        yield text[:k], text[k:]


def spellings(query: str) -> Iterator[str]:
    """Other spellings of a query that decode to the same text: as sent, fully decoded, and with
    each kind of separator or escape written encoded or raw."""
    decoded = unquote(query)
    yield query
    yield decoded
    yield decoded.replace("&", "%26")
    yield decoded.replace("=", "%3D")
    yield decoded.replace("%", "%25")
    yield quote(decoded, safe="&=")
    yield decoded.replace(" ", "+")


# -- readers ---------------------------------------------------------------------------------------


class Reader:
    exchange = ""
    auth_names: frozenset[str] = frozenset()  # parameters the scheme adds (timestamp, nonce, signature...)

    def verified(self, http: Http) -> bytes | None:
        raise NotImplementedError

    def read(self, http: Http) -> Reading | Refused:
        raise NotImplementedError

    def reshapes(self, http: Http) -> Iterator[Http]:
        yield http

    def unbound(self, http: Http) -> tuple[str, ...]:
        return ()


class ConcatenatedParams(Reader):
    """Binance (spot, USD-M, US, TR) and MEXC spot: `totalParams` = query + form body with no separator,
    the `signature` parameter excluded; neither the method, the path nor the Content-Type is signed."""

    auth_names = frozenset({"timestamp", "recvWindow"})

    @staticmethod
    def _split(http: Http) -> tuple[str, str, str] | None:
        """(query, body, signature segment) with the one `signature=` segment taken out."""
        found = []
        for where, text in (("query", http.query), ("body", http.body)):
            segments = text.split("&")
            for i, segment in enumerate(segments):
                if segment.startswith("signature="):
                    found.append((where, "&".join(segments[:i] + segments[i + 1:]), segment))
        if len(found) != 1:
            return None
        where, rest, segment = found[0]
        return (rest, http.body, segment) if where == "query" else (http.query, rest, segment)

    def verified(self, http: Http) -> bytes | None:
        split = self._split(http)
        return None if split is None else (split[0] + split[1]).encode()

    def read(self, http: Http) -> Reading | Refused:
        split = self._split(http)
        if split is None:
            return Refused("no single signature")
        query, body, _ = split
        if body and http.header("Content-Type").split(";")[0] != FORM:
            return Refused("a body that is not form-encoded")
        params = _join(form_read(query), form_read(body))
        return params if isinstance(params, Refused) else Reading(None, None, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        query, body, signature = self._split(http)
        for method in METHODS:
            for content_type in (FORM, JSON):
                for q, b in cuts(query + body):
                    for in_body in (True, False):
                        q2 = q if in_body else (f"{q}&{signature}" if q else signature)
                        b2 = (f"{b}&{signature}" if b else signature) if in_body else b
                        yield replace(http, method=method, query=q2, body=b2).with_header("Content-Type", content_type)


class MethodFreePayload(Reader):
    """Bybit v5 and MEXC futures: the payload is the query (GET, DELETE) or the JSON body (POST),
    signed after fixed header values; neither the method nor the path is signed."""

    def __init__(self, exchange: str, prefix_headers: tuple[str, ...], body_methods: tuple[str, ...],
                 query_methods: tuple[str, ...]):
        self.exchange, self._headers = exchange, prefix_headers
        self._body_methods, self._query_methods = body_methods, query_methods

    def _payload(self, http: Http) -> str | None:
        if http.method in self._query_methods:
            return http.query
        if http.method in self._body_methods:
            return http.body
        return None

    def verified(self, http: Http) -> bytes | None:
        payload = self._payload(http)
        if payload is None:
            return None
        return ("".join(http.header(h) for h in self._headers) + payload).encode()

    def read(self, http: Http) -> Reading | Refused:
        if http.method in self._query_methods:
            params = form_read(http.query)
        else:
            params = json_read(http.body)
        return params if isinstance(params, Refused) else Reading(None, None, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        payload = self._payload(http)
        for method in self._query_methods:
            yield replace(http, method=method, query=payload, body="")
        for method in self._body_methods:
            yield replace(http, method=method, query="", body=payload)


class JoinedPrehash(Reader):
    """OKX, KuCoin, Bitget (and Coinbase legacy HMAC): timestamp + METHOD + path + ("?" + query) + body,
    nothing between the query and the body. KuCoin and Bitget verify the query decoded."""

    def __init__(self, exchange: str, timestamp_header: str, *, decoded: bool):
        self.exchange, self._timestamp, self._decoded = exchange, timestamp_header, decoded

    def _query_text(self, http: Http) -> str:
        return unquote(http.query) if self._decoded else http.query

    def verified(self, http: Http) -> bytes | None:
        query = self._query_text(http)
        return (http.header(self._timestamp) + http.method + http.path + (f"?{query}" if query else "")
                + http.body).encode()

    def read(self, http: Http) -> Reading | Refused:
        params = _join(form_read(http.query, decoded_values=self._decoded), json_read(http.body))
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        for spelled in (spellings(http.query) if self._decoded else (http.query,)):
            for query, body in cuts(spelled + http.body):
                yield replace(http, query=query, body=body)


class Gate(Reader):
    """METHOD \\n path \\n decoded query \\n hex(SHA-512(body)) \\n seconds."""

    exchange = "gate"

    def verified(self, http: Http) -> bytes | None:
        return "\n".join((http.method, http.path, unquote(http.query), hashlib.sha512(http.body.encode()).hexdigest(),
                          http.header("Timestamp"))).encode()

    def read(self, http: Http) -> Reading | Refused:
        params = _join(form_read(http.query, decoded_values=True), json_read(http.body))
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        for spelled in spellings(http.query):
            yield replace(http, query=spelled)


class Htx(Reader):
    """METHOD \\n host \\n path \\n canonical query: the exchange sorts the received parameters (but
    Signature) by name and encodes their values itself. A POST body is not signed."""

    exchange = "htx"
    auth_names = frozenset({"AccessKeyId", "SignatureMethod", "SignatureVersion", "Timestamp"})

    def __init__(self, host: str):
        self._host = host

    def _query(self, http: Http) -> list[tuple[str, str]] | Refused:
        pairs = form_read(http.query)
        return pairs if isinstance(pairs, Refused) else [(n, v) for n, v in pairs if n != "Signature"]

    def verified(self, http: Http) -> bytes | None:
        pairs = self._query(http)
        if isinstance(pairs, Refused):
            return None
        canonical = "&".join(f"{n}={quote(v, safe='')}" for n, v in sorted(pairs))
        return f"{http.method}\n{self._host}\n{http.path}\n{canonical}".encode()

    def read(self, http: Http) -> Reading | Refused:
        body = json_read(http.body) if http.method == "POST" else []
        params = _join(self._query(http), body)
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        segments = http.query.split("&")
        for query in ("&".join(reversed(segments)), unquote(http.query).replace(" ", "+")):
            yield replace(http, query=query)

    def unbound(self, http: Http) -> tuple[str, ...]:
        return ("body",) if http.method == "POST" else ()


class Kraken(Reader):
    """path || SHA-256(nonce || body): the nonce is read from the body, which is parsed as the
    Content-Type says, and the Content-Type is not signed."""

    exchange = "kraken"
    auth_names = frozenset({"nonce"})

    def _params(self, http: Http) -> list | Refused:
        if http.header("Content-Type") == JSON:
            return json_read(http.body)
        return form_read(http.body)

    def verified(self, http: Http) -> bytes | None:
        params = self._params(http)
        nonce = dict(params).get("nonce") if not isinstance(params, Refused) else None
        if not isinstance(nonce, str):
            return None
        return http.path.encode() + hashlib.sha256((nonce + http.body).encode()).digest()

    def read(self, http: Http) -> Reading | Refused:
        params = self._params(http)
        if isinstance(params, Refused) or "nonce" not in dict(params):
            return Refused("no nonce")
        return Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        for content_type in (FORM, JSON):
            yield http.with_header("Content-Type", content_type)


class Bitfinex(Reader):
    """"/api" + path + nonce + JSON body, nothing in between; nonces must grow."""

    exchange = "bitfinex"
    PREFIX = "/v2/auth/"

    def verified(self, http: Http) -> bytes | None:
        return ("/api" + http.path + http.header("bfx-nonce") + http.body).encode()

    def read(self, http: Http) -> Reading | Refused:
        params = json_read(http.body)
        if isinstance(params, Refused) or (params and params[0][0] == "[]"):
            return Refused("the body is not one JSON object")
        return Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        signed_nonce = int(http.header("bfx-nonce"))
        text = http.path + http.header("bfx-nonce") + http.body
        for path, rest in cuts(text):
            if not path.startswith(self.PREFIX):
                continue
            for nonce, body in cuts(rest):
                # Only a nonce above every one used before is taken: at least the one the agent signed.
                if nonce.isdigit() and int(nonce) >= signed_nonce:
                    yield replace(http, path=path, body=body).with_header("bfx-nonce", nonce)


class Gemini(Reader):
    """The base64 payload header is what is signed; the JSON in it names the path (`request`)."""

    exchange = "gemini"
    auth_names = frozenset({"nonce"})

    def verified(self, http: Http) -> bytes | None:
        return http.header("X-GEMINI-PAYLOAD").encode()

    def read(self, http: Http) -> Reading | Refused:
        try:
            text = base64.b64decode(http.header("X-GEMINI-PAYLOAD"), validate=True).decode()
        except ValueError:
            return Refused("payload is not base64 of UTF-8")
        params = json_read(text)
        if isinstance(params, Refused) or dict(params).get("request") != http.path:
            return Refused("payload's request is not the path")
        return Reading(None, http.path, tuple((n, v) for n, v in params if n != "request"))

    def reshapes(self, http: Http) -> Iterator[Http]:
        for method in ("GET", "POST"):
            yield replace(http, method=method, body="")


class Bitstamp(Reader):
    """"BITSTAMP key" METHOD host path ("?" query) Content-Type nonce timestamp "v2" body, all joined."""

    exchange = "bitstamp"

    def verified(self, http: Http) -> bytes | None:
        query = f"?{http.query}" if http.query else ""
        return (http.header("X-Auth") + http.method + "www.bitstamp.net" + http.path + query
                + http.header("Content-Type") + http.header("X-Auth-Nonce") + http.header("X-Auth-Timestamp")
                + "v2" + http.body).encode()

    def read(self, http: Http) -> Reading | Refused:
        # Every v2 endpoint is /api/v2/.../ ending with '/'; a body is read only as form text.
        if not (http.path.startswith("/api/v2/") and http.path.endswith("/")) or "application" in http.path:
            return Refused("no such endpoint")
        if http.body and http.header("Content-Type") != FORM:
            return Refused("a body without the form Content-Type")
        params = _join(form_read(http.query), form_read(http.body))
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        text = http.path + (f"?{http.query}" if http.query else "") + http.header("Content-Type")
        for path, rest in cuts(text):
            if "?" in path:
                continue
            yield replace(http, path=path, query="").with_header("Content-Type", rest)
            if rest.startswith("?"):
                for query, content_type in cuts(rest[1:]):
                    yield replace(http, path=path, query=query).with_header("Content-Type", content_type)


class Deribit(Reader):
    """ts \\n nonce \\n METHOD \\n path?query \\n body \\n: newlines separate what no field can hold."""

    exchange = "deribit"

    def verified(self, http: Http) -> bytes | None:
        fields = dict(part.split("=", 1) for part in http.header("Authorization").split(" ", 1)[1].split(","))
        uri = http.path + (f"?{http.query}" if http.query else "")
        return f"{fields['ts']}\n{fields['nonce']}\n{http.method}\n{uri}\n{http.body}\n".encode()

    def read(self, http: Http) -> Reading | Refused:
        params = _join(form_read(http.query), json_read(http.body))
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))


class Coinbase(Reader):
    """Legacy HMAC keys: seconds + METHOD + path (+ "?" + query on /v2/ GETs) + body. CDP keys: a JWT
    over `METHOD host path` only."""

    exchange = "coinbase"

    def verified(self, http: Http) -> bytes | None:
        authorization = http.header("Authorization")
        if authorization.startswith("Bearer "):
            token = authorization[len("Bearer "):].split(".")
            claims = json.loads(base64.urlsafe_b64decode(token[1] + "=" * (-len(token[1]) % 4)))
            uri = claims.get("uri") or claims["uris"][0]
            return (uri.encode() if uri == f"{http.method} api.coinbase.com{http.path}" else None)
        signed_query = f"?{http.query}" if http.query and http.method == "GET" and http.path.startswith("/v2/") else ""
        return (http.header("CB-ACCESS-TIMESTAMP") + http.method + http.path + signed_query + http.body).encode()

    def read(self, http: Http) -> Reading | Refused:
        params = _join(form_read(http.query), json_read(http.body))
        return params if isinstance(params, Refused) else Reading(http.method, http.path, tuple(params))

    def reshapes(self, http: Http) -> Iterator[Http]:
        if http.header("Authorization").startswith("Bearer ") or not (http.method == "GET" and http.query):
            yield http
            return
        if http.path.startswith("/v2/"):
            for query, body in cuts(http.query + http.body):
                yield replace(http, query=query, body=body)
        else:
            yield http

    def unbound(self, http: Http) -> tuple[str, ...]:
        if http.header("Authorization").startswith("Bearer "):
            return ("query", "body")
        if http.method == "GET" and not http.path.startswith("/v2/"):
            return ("query",)
        return ()


class Cryptocom(Reader):
    """method + id + api_key + paramString + nonce, paramString joining sorted names and values with
    nothing in between: its alternative readings are other JSON objects with the same paramString, which
    test_cryptocom_paramstring.py generates; here the request as sent is read back."""

    exchange = "cryptocom"

    def verified(self, http: Http) -> bytes | None:
        return http.body.encode()

    def read(self, http: Http) -> Reading | Refused:
        body = json.loads(http.body, parse_float=Decimal)
        return Reading(http.method, http.path, tuple(body["params"].items()))


READERS: dict[str, Reader] = {
    "htx": Htx("api.huobi.pro"),
    "kraken": Kraken(),
    "bitfinex": Bitfinex(),
    "gemini": Gemini(),
    "bitstamp": Bitstamp(),
    "deribit": Deribit(),
    "coinbase": Coinbase(),
    "cryptocom": Cryptocom(),
    "gate": Gate(),
    "okx": JoinedPrehash("okx", "OK-ACCESS-TIMESTAMP", decoded=False),
    "kucoin": JoinedPrehash("kucoin", "KC-API-TIMESTAMP", decoded=True),
    "kucoinfutures": JoinedPrehash("kucoinfutures", "KC-API-TIMESTAMP", decoded=True),
    "bitget": JoinedPrehash("bitget", "ACCESS-TIMESTAMP", decoded=True),
    "bybit": MethodFreePayload("bybit", ("X-BAPI-TIMESTAMP", "X-BAPI-API-KEY", "X-BAPI-RECV-WINDOW"),
                               body_methods=("POST",), query_methods=("GET",)),
}
for _id in ("binance", "binanceusdm", "binanceus", "binancetr"):
    READERS[_id] = ConcatenatedParams()
    READERS[_id].exchange = _id


class Mexc(Reader):
    """MEXC: spot (/api/v3/) is Binance's totalParams; futures (/api/v1/private/) signs ApiKey +
    Request-Time + the query (GET, DELETE) or the JSON body (POST). Neither signs the path."""

    exchange = "mexc"
    auth_names = frozenset({"timestamp", "recvWindow"})
    _spot = ConcatenatedParams()
    _contract = MethodFreePayload("mexc", ("ApiKey", "Request-Time"), body_methods=("POST",),
                                  query_methods=("GET", "DELETE"))

    def _part(self, http: Http) -> Reader:
        return self._contract if http.header("Request-Time") else self._spot

    def verified(self, http: Http) -> bytes | None:
        return self._part(http).verified(http)

    def read(self, http: Http) -> Reading | Refused:
        return self._part(http).read(http)

    def reshapes(self, http: Http) -> Iterator[Http]:
        return self._part(http).reshapes(http)


READERS["mexc"] = Mexc()
