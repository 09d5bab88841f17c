"""The request as rules read it: the parameters an exchange will see, found the way it finds them.

Parameters come from the query, then the body: form pairs (Binance, MEXC spot, Bitstamp, Kraken
form bodies), or the members of a JSON object (every other exchange, and Kraken JSON bodies). A JSON
body that is an array (batch endpoints) has no top-level parameters; its elements are read by the
order rules. Deribit's JSON-RPC body also names a method, which is an endpoint of its own, and its
`params` object holds the parameters.

Names are compared case-insensitively everywhere: an exchange that reads `Quantity` the way it reads
`quantity` must not let a second spelling carry a different value past a check. When a name is
present under several spellings its value is AMBIGUOUS, and rules treat it as unreadable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from agent.schemes.encoding import form_pairs, parse_json_body
from signing_agent_client.request import RawBody, UnsignedRequest

if TYPE_CHECKING:
    from agent.exchanges.record import Exchange

# How an exchange reads a raw request body: (path, body text) -> FORM or JSON (each exchange's
# record says, as its `body_format`).
BodyFormat = Callable[[str, str], str]
FORM, JSON = "form", "json"


def form_body(path: str, text: str) -> str:
    """Form-encoded bodies (Binance, Bitstamp)."""
    return FORM


def json_body(path: str, text: str) -> str:
    """JSON bodies (most exchanges)."""
    return JSON


# A plain decimal number in ASCII: what every exchange parses the same way ('1_000', '١', 'NaN',
# '0x10' and 'Infinity' are not; Python's Decimal would take some of them).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SEPARATORS = re.compile(r"[-_]")


class _Ambiguous:
    def __repr__(self) -> str:
        return "AMBIGUOUS"


AMBIGUOUS = _Ambiguous()


def path_key(path: str) -> str:
    """How paths are compared: lower-cased, without a trailing slash (servers that ignore case or a
    trailing slash would otherwise reach a forbidden endpoint under a spelling no rule names)."""
    key = path.lower().rstrip("/")
    return key or "/"


def squash(key: str) -> str:
    """The key without '-' and '_', so that sub-account, sub_account and subAccount all read 'subaccount'."""
    return _SEPARATORS.sub("", key)


@dataclass(frozen=True)
class View:
    exchange: "Exchange"  # the exchange's record (agent.exchanges)
    method: str
    path: str  # as given
    key: str  # path_key(path)
    rpc_methods: tuple[str, ...]  # Deribit JSON-RPC "method" values, lower-cased (e.g. "private/withdraw")
    params: tuple[tuple[str, object], ...]  # query pairs, then form pairs or JSON object members
    body: object  # the parsed JSON body (dict or list), the dict of form/pair parameters, or None

    def fields(self) -> "Fields":
        """The top-level parameters by folded name. Built once per View: the forbidden-parameter rules,
        the duplicate check and the order reader all read it (Fields is never changed once built)."""
        found = self.__dict__.get("_fields")
        if found is None:
            found = Fields(self.params)
            object.__setattr__(self, "_fields", found)  # a cache of a pure function of PARAMS
        return found


def view(exchange: "Exchange", request: UnsignedRequest) -> View:
    """Parse REQUEST as EXCHANGE (a record of agent.exchanges) reads it. RequestInvalid for a body
    the exchange's scheme would refuse to sign as unparseable: JSON that is not one object or array
    (or names a member twice), a form body that is not strict name=value ASCII text."""
    params: list[tuple[str, object]] = list(request.query)
    body = _body(exchange, request)
    rpc_methods: list[str] = []
    if isinstance(body, dict):
        params.extend(body.items())
        if exchange.rules.json_rpc:
            params.extend(_rpc_params(body, rpc_methods))
    elif isinstance(body, list) and exchange.rules.json_rpc:
        for call in body:
            if isinstance(call, dict):
                params.extend(_rpc_params(call, rpc_methods))
    return View(
        exchange=exchange,
        method=request.method.upper(),
        path=request.path,
        key=path_key(request.path),
        rpc_methods=tuple(rpc_methods),
        params=tuple(params),
        body=body,
    )


def _rpc_params(call: dict, methods: list[str]) -> list[tuple[str, object]]:
    method = call.get("method")
    if isinstance(method, str):
        methods.append(method.strip().lower().strip("/"))
    inner = call.get("params")
    return list(inner.items()) if isinstance(inner, dict) else []


def _body(exchange: "Exchange", request: UnsignedRequest) -> object:
    body = request.body
    if body is None:
        return None
    if not isinstance(body, RawBody):
        return dict(body)
    text = body.text
    if text.strip() == "":
        return None
    kind = exchange.rules.body_format(request.path, text)
    if kind == FORM:
        return dict(form_pairs(text, exchange.name))
    if kind != JSON:
        raise ValueError(f"{exchange.id}: body format {kind!r} is neither {FORM!r} nor {JSON!r}")
    # Numbers are kept exact (Decimal), never rounded through a float.
    return parse_json_body(text, exchange.name, arrays=True, parse_float=Decimal)


# -- values ---------------------------------------------------------------------------------


class Fields:
    """Name -> value lookups over (name, value) pairs, case-insensitive."""

    def __init__(self, pairs: Iterable[tuple[str, object]]):
        self._values: dict[str, list[object]] = {}
        for name, value in pairs:
            if isinstance(name, str):
                self._values.setdefault(name.casefold(), []).append(value)

    @classmethod
    def of(cls, value: object) -> "Fields":
        """The members of a JSON object (or of a JSON object written as a string); none otherwise."""
        value = maybe_json(value)
        return cls(value.items() if isinstance(value, dict) else ())

    def names(self):
        """The lower-cased names, in order of first appearance (a set-like view)."""
        return self._values.keys()

    def name_set(self) -> frozenset[str]:
        """The folded names as a set (rules test theirs against it with <=); made at the first ask."""
        found = self.__dict__.get("_name_set")
        if found is None:
            found = self._name_set = frozenset(self._values)
        return found

    def has(self, name: str) -> bool:
        return name.casefold() in self._values

    def get(self, name: str) -> object:
        """The value of NAME; None when absent; AMBIGUOUS when spelled several ways."""
        values = self._values.get(name.casefold())
        if not values:
            return None
        if len(values) == 1:  # the usual case: one spelling, once
            return values[0]
        # The same value twice (ccxt sends Gate's PATCH parameters in the query and the body) is one value.
        return values[0] if all(value == values[0] for value in values[1:]) else AMBIGUOUS

    def all(self, name: str) -> list[object]:
        """Every value of NAME, under every spelling."""
        return list(self._values.get(name.casefold(), ()))

    def text(self, name: str) -> str:
        """The value of NAME as lower-case text, '' when absent or not text (for comparisons)."""
        value = self.get(name)
        return value.strip().lower() if isinstance(value, str) else ""

    def number(self, name: str) -> Decimal | None:
        return decimal(self.get(name))

    def symbol(self, name: str) -> str | None:
        value = self.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip().upper()
        return None


def decimal(value: object) -> Decimal | None:
    """The absolute value of a plain decimal number (text or JSON number); None for anything else."""
    if isinstance(value, bool) or value is None or value is AMBIGUOUS:
        return None
    if isinstance(value, int):
        return abs(Decimal(value))
    if isinstance(value, Decimal):
        return abs(value) if value.is_finite() else None
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.match(text):
            try:
                return abs(Decimal(text))
            except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
                return None
    return None


def maybe_json(value: object) -> object:
    """A parameter whose value is JSON text (Binance's batchOrders, symbols=["A","B"]) as its value;
    any other value as it is. Never raises: text that does not parse stays text."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value, parse_float=Decimal)
        except (ValueError, RecursionError):
            return value
    return value


def members(value: object) -> Iterator[tuple[str, object]]:
    """Every (name, value) member of every object inside VALUE, at any depth, including objects
    written as JSON text inside string values; iterative, so that depth cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = maybe_json(stack.pop())
        if isinstance(item, dict):
            found = [(name, member) for name, member in item.items() if isinstance(name, str)]
            yield from found
            stack.extend(reversed([member for _, member in found]))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def objects(value: object) -> list[dict]:
    """The JSON objects of a list (a batch of orders), in order; the value itself if it is an object."""
    value = maybe_json(value)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in (maybe_json(element) for element in value) if isinstance(item, dict)]
    return []
