"""The request shapes every exchange shares, and their validation.

In:  UnsignedRequest(method, path, query=[(name, value)...], body=None | [(name, value)...] | RawBody(text))
Out: SignedRequest(method, path_with_query, headers=[(name, value)...], body)
Parameter order is kept everywhere: exchanges sign bytes, and bytes have an order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The methods every exchange's API uses, and the default of `validated()`: a scheme refuses any other.
COMMON_METHODS = ("GET", "POST", "PUT", "DELETE")
# Every method some exchange's API uses (Gate amends a spot order with PATCH). Which of them an exchange
# takes is its record's (agent.exchanges.record.Rules.methods); its scheme validates with that.
METHODS = (*COMMON_METHODS, "PATCH")
MAX_PATH_LEN = 2048
MAX_PARAMS = 256
MAX_NAME_LEN = 128
MAX_VALUE_LEN = 8192
MAX_RAW_BODY_LEN = 256 * 1024

Params = tuple[tuple[str, str], ...]


class RequestInvalid(ValueError):
    """The request cannot be signed as given; the message names the field and what to change."""


@dataclass(frozen=True)
class RawBody:
    """Body text that is sent, and signed, byte for byte as given."""

    text: str


Body = Params | RawBody | None


@dataclass(frozen=True)
class UnsignedRequest:
    method: str
    path: str
    query: Params = ()
    body: Body = None
    # Set on the copy validated() returns, so a request checked by the service is not checked again.
    checked: bool = field(default=False, compare=False, repr=False)

    def validated(self, methods: tuple[str, ...] = COMMON_METHODS) -> "UnsignedRequest":
        """Check the shape common to all exchanges, with a method of METHODS (the exchange's: PATCH only
        where it uses it); raise RequestInvalid naming the problem."""
        if self.method not in methods:  # checked every time: a request validated for another exchange's methods
            raise RequestInvalid(f"method {self.method[:16]!r} is not one of {', '.join(methods)}")
        if self.checked:
            return self
        if not self.path.startswith("/") or len(self.path) > MAX_PATH_LEN:
            raise RequestInvalid("path must start with '/' and be at most 2048 characters")
        if any(c in self.path for c in "?#") or not self.path.isprintable() or " " in self.path:
            raise RequestInvalid("path must not contain '?', '#', spaces or control characters; put parameters in query")
        check_params("query", self.query)
        if isinstance(self.body, RawBody):
            if len(self.body.text) > MAX_RAW_BODY_LEN:
                raise RequestInvalid(f"raw body is longer than {MAX_RAW_BODY_LEN} characters")
            if not _utf8(self.body.text):
                raise RequestInvalid("raw body is not valid Unicode")
        elif self.body is not None:
            check_params("body", self.body)
        # Built directly: dataclasses.replace introspects the fields on every call (the signing hot path).
        return UnsignedRequest(self.method, self.path, self.query, self.body, checked=True)


def check_params(where: str, params: Params) -> None:
    """Count, sizes, printable names, valid Unicode, and no name twice."""
    if len(params) > MAX_PARAMS:
        raise RequestInvalid(f"{where} has more than {MAX_PARAMS} parameters")
    seen: set[str] = set()
    for name, value in params:
        if not name or len(name) > MAX_NAME_LEN:
            raise RequestInvalid(f"{where} parameter names must be 1-{MAX_NAME_LEN} characters")
        if len(value) > MAX_VALUE_LEN:
            raise RequestInvalid(f"{where} parameter {name[:MAX_NAME_LEN]!r} is longer than {MAX_VALUE_LEN} characters")
        # isascii() first: a flag of each string, so the usual parameter pays no call to _utf8.
        if not name.isprintable() or not (name.isascii() or _utf8(name)) or not (value.isascii() or _utf8(value)):
            raise RequestInvalid(f"{where} parameter names must be printable, and names and values valid Unicode")
        if name in seen:
            raise RequestInvalid(f"{where} parameter {name!r} appears twice")
        seen.add(name)


def _utf8(text: str) -> bool:
    if text.isascii():  # a flag of the string, no scan: the usual parameter costs no encoding
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...] = field(default=())
    body: str = ""

    def headers_dict(self) -> dict[str, str]:
        return dict(self.headers)

    def as_dict(self) -> dict[str, object]:
        return {"method": self.method, "path": self.path, "headers": self.headers_dict(), "body": self.body}


@dataclass(frozen=True)
class ExchangeAnswer:
    """The exchange's answer to a request the agent sent (Send): never the signature or auth headers."""

    status: int  # the exchange's HTTP status
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client_order_id: str = ""  # the order's client order id ("" when none): the agent's, or the bot's
    reconciled: bool = False  # the order's answer was lost: this is the exchange's answer to a lookup by that id

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        import json

        return json.loads(self.body)
