"""Policy: which bot may use which key, and what each key may sign. Pure: parse and decide.

The policy file (TOML, edited by the operator, reloaded by the running agent within a
second of a change; a file that does not parse or validate is rejected whole and the
previous policy stays in force):

    [defaults]                      # for every key unless its table says otherwise
    timestamp_skew_ms = 5000        # caller clocks accepted this close to the agent's
    max_age_days = 365              # keys older than this are refused ...
    warn_age_days = 30              # ... with warnings this many days before

    [bots.mm-1]                     # a bot (its credential is in bots.toml)
    keys = ["binance-main"]         # the keys it may use ("*": every key)
    rate_per_second = 50            # all its requests together

    [keys.binance-main]
    endpoints = ["POST /api/v3/order", "DELETE /api/v3/order", "GET /api/v3/openOrders"]
    symbols = ["BTCUSDT", "ETHUSDT"]        # omit: any symbol
    rate_per_second = 20
    max_order = { BTCUSDT = "0.5" }         # base quantity per order, per symbol ("*": any symbol)
    max_order_quote = { BTCUSDT = "25000" } # quote amount per order
    timestamps = "skew"             # "skew" | "agent" (caller clocks refused) | "any" (test vectors only)
    not_before = 2026-01-01T00:00:00Z
    expires = 2027-01-01T00:00:00Z
    allow = []                      # default-deny categories this key may nevertheless use
    delivery = "send"               # "send" (bots call Send: the agent places the request) | "sign" | "both"
    send_to = "production"          # where Send goes: "production" | "testnet" | "https://host[:port]"

    [keys."*"]                      # optional: the policy of keys without their own table

With `symbols`, every symbol a request names must be listed, and an order whose symbol the rules
cannot read (none sent, spelled twice, not text; an amend by order id) is refused (rule `symbol`,
fail closed), capped or not.

Endpoint patterns are "METHOD /path": METHOD is one of GET POST PUT DELETE or "*"; in
the path, "*" matches within one segment and "**" any number of segments. Patterns are
matched case-sensitively against the canonical path (see `check_shape`), so a request that
changes a path's case or adds a trailing slash is not "the same endpoint"; the default-deny
categories (agent.rules) match case-insensitively, so those variants stay refused there too.

Every refusal is a `Refusal(rule, message, code)`: the rule name goes to the audit and the
alerts, the message to the bot.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from agent.delivery import DEFAULT_DELIVERY, DELIVERIES, PRODUCTION, TESTNET
from agent.limits import BOT_FIELDS, KEY_FIELDS, NO_LIMITS, Limits, limits_of
from agent.rules import facts_of
from agent.rules.facts import RequestFacts
from agent.rules.view import View, path_key, view
from signing_agent_client.request import METHODS, RequestInvalid, UnsignedRequest
from agent.toml_schema import (
    INT,
    NUMBER,
    STR,
    TABLE,
    TEXTS,
    Field,
    Invalid,
    Kind,
    Schema,
    Where,
    did_you_mean,
    table_of,
    toml_key,
)

if TYPE_CHECKING:
    from agent.exchanges.record import Exchange

PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"

TIMESTAMP_MODES = ("skew", "agent", "any")
DEFAULT_SKEW_MS = 5_000
DEFAULT_MAX_AGE_DAYS = 365
DEFAULT_WARN_AGE_DAYS = 30
# A signature stays valid for the exchange's receive window after its timestamp (Binance, MEXC,
# Bybit: up to 60 s). Bounded so that a signature cannot be kept for later use.
DEFAULT_MAX_RECV_WINDOW_MS = 10_000
# Copies of [keys."*"] kept per policy (one per label asked for); past this the memo starts afresh.
DERIVED_KEYS = 4096


class PolicyError(Exception):
    """The policy file is wrong; the message says where and what to fix. The old policy stays."""


@dataclass(frozen=True)
class Refusal(Exception):
    rule: str
    message: str
    code: str = PERMISSION_DENIED

    def __str__(self) -> str:
        return f"refused by rule '{self.rule}': {self.message}"


@dataclass(frozen=True)
class EndpointPattern:
    text: str
    method: str  # a method, or "*"
    regex: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method == method) and self.regex.fullmatch(path) is not None


@dataclass(frozen=True)
class KeyPolicy:
    label: str
    endpoints: tuple[EndpointPattern, ...]
    symbols: frozenset[str] | None
    rate_per_second: float | None
    burst: int | None
    max_order: dict[str, Decimal]
    max_order_quote: dict[str, Decimal]
    timestamps: str
    skew_ms: int
    not_before: datetime | None
    expires: datetime | None
    max_age_days: int
    warn_age_days: int
    allow: frozenset[str]
    max_recv_window_ms: int = DEFAULT_MAX_RECV_WINDOW_MS
    delivery: str = DEFAULT_DELIVERY  # agent.delivery: "send", "sign" or "both"
    send_to: str = PRODUCTION  # "production", "testnet" or an https:// base URL (agent.send.hosts)
    limits: Limits = NO_LIMITS  # budgets and order rates over time (agent.limits; the state: agent.guardrails)
    # The endpoint allow-list compiled once per policy load: per method, one regex of every pattern
    # that method may use (its own and "*"), so a request costs one match, not one per pattern.
    _matchers: dict[str, re.Pattern[str] | None] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matchers", {
            method: _alternation([p.regex for p in self.endpoints if p.method in ("*", method)])
            for method in (*METHODS, "*")})

    def allows(self, method: str, path: str) -> bool:
        """Is METHOD PATH in the endpoint allow-list (some pattern matches it whole)?"""
        matcher = self._matchers.get(method, self._matchers["*"])  # an unknown method: "*" patterns only
        return matcher is not None and matcher.fullmatch(path) is not None


def _alternation(regexes: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One regex that matches a whole string where any of REGEXES would (None: no regex, nothing matches)."""
    return re.compile("|".join(f"(?:{r.pattern})" for r in regexes)) if regexes else None


@dataclass(frozen=True)
class BotPolicy:
    name: str
    keys: frozenset[str]  # labels, or {"*"}
    rate_per_second: float | None
    burst: int | None
    limits: Limits = NO_LIMITS  # every key of the bot together (agent.limits)

    def may_use(self, label: str) -> bool:
        return "*" in self.keys or label in self.keys


@dataclass(frozen=True)
class Policy:
    keys: dict[str, KeyPolicy]
    fallback: KeyPolicy | None  # [keys."*"]
    bots: dict[str, BotPolicy]
    digest: str  # SHA-256 of the file's bytes: which policy decided, in the audit
    warnings: tuple[str, ...] = field(default=())
    # The fallback's copies made so far, by label: built once per policy load, not per request.
    _derived: dict[str, KeyPolicy] = field(default_factory=dict, init=False, compare=False, repr=False)

    def for_key(self, label: str) -> KeyPolicy | None:
        found = self.keys.get(label)
        if found is None and self.fallback is not None:
            # The default table, under this key's own name: rates, warnings and messages are per key.
            found = self._derived.get(label)
            if found is None:
                if len(self._derived) >= DERIVED_KEYS:  # labels are the caller's choice: bounded
                    self._derived.clear()
                found = self._derived[label] = replace(self.fallback, label=label)
        return found

    @classmethod
    def empty(cls) -> "Policy":
        return cls(keys={}, fallback=None, bots={}, digest="0" * 64)


# -- parsing ----------------------------------------------------------------------------


def load_policy(path: Path) -> Policy:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(
            f"policy file {path} does not exist: create it (README, 'Policy guide'; "
            "`signing-agent policy template --exchange ... --key ...` prints a safe start)"
        ) from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    return parse_policy(data, source=str(path))


def parse_policy(data: bytes, *, source: str = "policy") -> Policy:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    where = Where(source, PolicyError)
    top = _FILE.read(raw, where)
    warnings: list[str] = []
    keys: dict[str, KeyPolicy] = {}
    for label, table in top["keys"].items():
        key_where = where.sub("keys", label)
        keys[label] = _key_policy(label, _KEY.read(table, key_where, defaults=top["defaults"]), key_where, warnings)
    bots: dict[str, BotPolicy] = {}
    for name, table in top["bots"].items():
        bot_where = where.sub("bots", name)
        bot = _BOT.read(table, bot_where)
        for label in bot["keys"]:
            if label != "*" and label not in keys and "*" not in keys:
                warnings.append(f"{bot_where} key {label!r} has no [keys.{toml_key(label)}] table (and there is no "
                                "[keys.\"*\"]): every request with it is refused")
        rate, burst = _rate(bot, bot_where)
        bots[name] = BotPolicy(name=name, keys=frozenset(bot["keys"]), rate_per_second=rate, burst=burst,
                               limits=limits_of(bot))
    fallback = keys.pop("*", None)
    return Policy(keys=keys, fallback=fallback, bots=bots, digest=hashlib.sha256(data).hexdigest(),
                  warnings=tuple(warnings))


def _rate(values: dict, where: Where) -> tuple[float | None, int | None]:
    """rate_per_second and burst (default: the rate rounded up), checked together."""
    rate, burst = values["rate_per_second"], values["burst"]
    if burst is not None and rate is None:
        where.fail("needs rate_per_second", "burst")
    if burst is None and rate is not None:
        burst = max(1, math.ceil(rate))
    return rate, burst


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise Invalid("needs a time zone, e.g. 2027-01-01T00:00:00Z")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise Invalid("must be a TOML date or date-time, e.g. 2027-01-01T00:00:00Z")


def _cap(value: Any) -> Decimal | None:
    """A positive order size cap, or None. Strings keep the operator's decimal exactly; TOML floats would not."""
    try:
        parsed = Decimal(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except InvalidOperation:
        return None
    return parsed if parsed is not None and parsed.is_finite() and parsed > 0 else None


def _send_to(value: str) -> str:
    """Where Send goes: a registry name, or an operator's https:// base URL (scheme, host, port only)."""
    if value in (PRODUCTION, TESTNET):
        return value
    from agent.send.hosts import BaseUrlError, parse_base_url

    try:
        return parse_base_url(value)
    except BaseUrlError as exc:
        raise Invalid(f"must be \"{PRODUCTION}\", \"{TESTNET}\" or an https:// base URL: {exc}") from None


def _categories(names: list[str]) -> frozenset[str]:
    from agent.rules import CATEGORIES  # the default-deny categories the rules know

    unknown = sorted(set(names) - set(CATEGORIES))
    if unknown:
        raise Invalid(f"has unknown categories {unknown}{did_you_mean(unknown[0], CATEGORIES)}; "
                      f"known: {sorted(CATEGORIES)}")
    return frozenset(names)


def compile_endpoint(text: str) -> EndpointPattern:
    """An endpoint pattern ("METHOD /path", see the module docstring); Invalid if it is not one."""
    method, sep, path = text.partition(" ")
    if not sep or not path.startswith("/") or (method != "*" and method not in METHODS):
        raise Invalid(f"has {text!r}: each endpoint must be 'METHOD /path' with METHOD in {', '.join(METHODS)} or '*'")
    parts: list[str] = []
    i = 0
    while i < len(path):
        if path.startswith("**", i):
            parts.append(".*")
            i += 2
        elif path[i] == "*":
            parts.append("[^/]*")
            i += 1
        else:
            parts.append(re.escape(path[i]))
            i += 1
    return EndpointPattern(text=text, method=method, regex=re.compile("".join(parts)))


_AMOUNTS = table_of(Kind('a positive decimal string, e.g. "0.5"', lambda v: _cap(v) is not None),
                    expect='a table of SYMBOL = "amount"')
_RATE = Field("rate_per_second", NUMBER, check=lambda r: 0 < r <= 1_000_000, convert=float,
              expect="a number above 0 (requests per second), at most 1000000")
_BURST = Field("burst", INT, low=1, high=1_000_000)
# Settings a key takes from [defaults] when its own table does not have them.
_DEFAULTABLE = (
    Field("timestamps", STR, default="skew", choices=TIMESTAMP_MODES),
    Field("timestamp_skew_ms", INT, default=DEFAULT_SKEW_MS, low=0, high=60_000),
    Field("max_age_days", INT, default=DEFAULT_MAX_AGE_DAYS, low=1, high=3650),
    Field("warn_age_days", INT, default=DEFAULT_WARN_AGE_DAYS, low=0, high=3650),
    Field("max_recv_window_ms", INT, default=DEFAULT_MAX_RECV_WINDOW_MS, low=0, high=60_000),
    Field("delivery", STR, default=DEFAULT_DELIVERY, choices=DELIVERIES),
    Field("send_to", STR, default=PRODUCTION, convert=lambda v: _send_to(v)),
    _RATE, _BURST,
)
_KEY = Schema(
    Field("endpoints", TEXTS, required="the allow-list; [] refuses everything",
          convert=lambda v: tuple(compile_endpoint(e) for e in v)),
    Field("symbols", TEXTS, convert=lambda v: frozenset(s.upper() for s in v)),  # absent: any symbol
    Field("max_order", _AMOUNTS, convert=lambda v: {s.upper(): _cap(a) for s, a in v.items()}),
    Field("max_order_quote", _AMOUNTS, convert=lambda v: {s.upper(): _cap(a) for s, a in v.items()}),
    Field("not_before", convert=_when),
    Field("expires", convert=_when),
    Field("allow", TEXTS, default=frozenset(), convert=_categories),
    *KEY_FIELDS,
    *_DEFAULTABLE,
)
_BOT = Schema(Field("keys", TEXTS, default=[]), _RATE, _BURST, *BOT_FIELDS)
_FILE = Schema(Field("defaults", schema=Schema(*_DEFAULTABLE)), Field("bots", TABLE, default={}),
               Field("keys", TABLE, default={}))


def _key_policy(label: str, v: dict, where: Where, warnings: list[str]) -> KeyPolicy:
    rate, burst = _rate(v, where)
    if v["timestamps"] == "any":
        warnings.append(f"{where} timestamps = \"any\" accepts any caller clock: for replaying test vectors only")
    if v["not_before"] and v["expires"] and v["expires"] <= v["not_before"]:
        where.fail("must be after not_before", "expires")
    if v["allow"]:
        warnings.append(f"{where} allows default-deny categories {sorted(v['allow'])} "
                        "(fund-moving or account-changing)")
    return KeyPolicy(
        label=label, endpoints=v["endpoints"], symbols=v["symbols"], rate_per_second=rate, burst=burst,
        max_order=v["max_order"] or {}, max_order_quote=v["max_order_quote"] or {},
        timestamps=v["timestamps"], skew_ms=v["timestamp_skew_ms"], not_before=v["not_before"], expires=v["expires"],
        max_age_days=v["max_age_days"], warn_age_days=v["warn_age_days"], allow=v["allow"],
        max_recv_window_ms=v["max_recv_window_ms"], delivery=v["delivery"], send_to=v["send_to"], limits=limits_of(v),
    )


# -- decisions (pure) -------------------------------------------------------------------

# RFC 3986 segment characters, minus ';' (Tomcat and Spring read "..;" as ".."); and no segment may
# start with '.', so no spelling of a dot segment passes.
_SEGMENT = re.compile(r"[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*\Z")


def check_method(exchange: Exchange, request: UnsignedRequest) -> None:
    """Refuse a method the exchange's API does not use (its record's Rules.methods): PATCH is signed only
    where the exchange documents an endpoint taking it, so a signature is never made for a method the
    exchange's server would route elsewhere or that no rule here was written for."""
    if request.method not in exchange.rules.methods:
        takes = ", ".join(exchange.rules.methods)
        raise RequestInvalid(f"method {request.method} is not a method {exchange.name}'s API uses (it takes {takes}): "
                             "send the method the exchange documents for this endpoint")


def check_shape(request: UnsignedRequest) -> None:
    """Refuse a path that could make the exchange see another endpoint than the policy saw.

    The path must be canonical: no empty ('//'), '.' or '..' segments, no percent-encoding
    or characters outside RFC 3986 segment characters (a server may decode or normalise
    them into a forbidden endpoint). A trailing slash is kept (some exchanges need it) but is
    part of the endpoint.
    """
    path = request.path  # sizes, printable text and duplicates within one part: request.validated()
    if path in _CANONICAL:
        return
    body_segments = path[1:-1] if path.endswith("/") and len(path) > 1 else path[1:]
    if path != "/":
        for segment in body_segments.split("/"):
            if segment in ("", ".", ".."):
                raise Refusal("path", f"path {path[:80]!r} is not canonical (empty, '.' or '..' segment)")
            if not _SEGMENT.match(segment):
                raise Refusal("path", f"path {path[:80]!r} has characters outside plain path segments, or a "
                                      "segment starting with '.' (percent-encoding, ';', backslashes... are refused)")
    if len(_CANONICAL) >= CANONICAL_PATHS:  # paths are the caller's choice: bounded
        _CANONICAL.clear()
    _CANONICAL.add(path)


# Paths check_shape found canonical (a pure answer about the path alone): a bot's few endpoints are
# checked once, not per request.
_CANONICAL: set[str] = set()
CANONICAL_PATHS = 4096


def check_names(params: Iterable[tuple[str, object]], query_pairs: int) -> None:
    """Parameter names (query, form and raw bodies alike) must be unique, case-insensitively: where a name
    is given twice the exchange reads one and the policy might read the other. The one repeat allowed is
    a name once in the query (the first QUERY_PAIRS of PARAMS) and once in the body, spelled alike, with
    the same text value (ccxt sends Gate's PATCH amend parameters in both): whichever part the exchange
    reads, it is the value the policy read. Twice in one part stays refused: some servers join repeated
    query or form values ("0.01,0.01"), which is not what the policy read."""
    seen: dict[str, tuple[int, str, object]] = {}
    for index, (name, value) in enumerate(params):
        folded = name.casefold()
        first = seen.get(folded)
        if first is None:
            seen[folded] = (index, name, value)
        elif not (first[0] < query_pairs <= index and first[1] == name and isinstance(value, str)
                  and first[2] == value):
            raise Refusal("duplicate-parameter", f"parameter {name[:40]!r} appears more than once "
                                                 "(twice in the query or the body, in another letter case, or "
                                                 "with another value): send it once")


def check_endpoint(policy: KeyPolicy, method: str, path: str) -> None:
    if not policy.allows(method, path):
        raise Refusal("endpoint", f"{method} {path[:120]} is not in key {policy.label!r}'s endpoint allow-list")


def check_symbols(policy: KeyPolicy, symbols: Iterable[str], orders: Iterable[Any] = ()) -> None:
    """Every symbol the request names must be in the key's symbol list, and every order (ORDERS) must
    have a readable symbol: on a key with a symbol list, an order whose symbol the rules cannot read
    is refused (fail closed). `check_orders` checks that too, so a caller that passes only the
    symbols here still refuses such an order."""
    if policy.symbols is None:
        return
    for symbol in symbols:
        if symbol.upper() not in policy.symbols:
            raise Refusal("symbol", f"symbol {symbol[:40]!r} is not in key {policy.label!r}'s symbol allow-list")
    _check_order_symbols(policy, orders)


_SYMBOL_HINT = ("symbol, instId, pair, product_id, instrument_name, currency_pair or contract, as the exchange "
                "names it")


def _check_order_symbols(policy: KeyPolicy, orders: Iterable[Any]) -> None:
    if policy.symbols is None:
        return
    for order in orders:
        if not order.symbol:
            raise Refusal("symbol", f"an order without a readable symbol: key {policy.label!r} trades only the "
                                    f"symbols of its allow-list, so send the order's symbol once, as text, in "
                                    f"the order ({_SYMBOL_HINT}); an amend by order id that cannot name its "
                                    "symbol: cancel and place a new order")


def check_orders(policy: KeyPolicy, orders: Iterable[Any]) -> None:
    """Order symbols and size caps. Refused: on a key with a symbol list, an order whose symbol cannot
    be read (rule `symbol`); an order above a cap; an order on a capped key whose symbol or capped
    size cannot be read; an order sized in the unit its symbol is not capped in (a base cap alone
    must not let a quote-sized order of any size through)."""
    orders = list(orders)
    _check_order_symbols(policy, orders)
    if not policy.max_order and not policy.max_order_quote:
        return
    for order in orders:
        if not order.symbol:
            raise Refusal("order-size", f"an order without a readable symbol; key {policy.label!r} caps order sizes")
        symbol = order.symbol.upper()
        base_cap = policy.max_order.get(symbol, policy.max_order.get("*"))
        quote_cap = policy.max_order_quote.get(symbol, policy.max_order_quote.get("*"))
        if base_cap is None and quote_cap is None:
            continue
        for cap, amount, what in ((base_cap, order.quantity, "quantity"), (quote_cap, order.quote_quantity,
                                                                           "quote amount")):
            if cap is not None and amount is not None and amount > cap:
                raise Refusal("order-size", f"order {what} {amount} on {symbol} exceeds key "
                                            f"{policy.label!r}'s cap of {cap}")
        readable = (base_cap is not None and order.quantity is not None) or (
            quote_cap is not None and order.quote_quantity is not None)
        if not readable:
            unit = "quantity" if base_cap is not None else "quote amount"
            raise Refusal("order-size", f"order on {symbol} has no readable {unit}, the unit key "
                                        f"{policy.label!r} caps it in (max_order / max_order_quote)")


_TIMESTAMP_PARAMS = ("timestamp",)
_RECV_WINDOW_PARAMS = ("recvwindow", "recv_window")


def caller_timestamps(params: Iterable[tuple[str, object]]) -> list[int]:
    """Caller-supplied timestamps among PARAMS (query, form and raw-body members), in milliseconds."""
    out = []
    for name, value in params:
        if name.casefold() in _TIMESTAMP_PARAMS:
            if not (isinstance(value, str) and value.isascii() and value.isdigit()) or len(value) > 19:
                raise Refusal("clock", f"parameter {name!r} must be digits (milliseconds since the epoch)")
            stamp = int(value)
            out.append(stamp * 1000 if stamp < 100_000_000_000 else stamp)  # seconds or milliseconds
    return out


def check_recv_window(policy: KeyPolicy, params: Iterable[tuple[str, object]]) -> None:
    """A receive window (how long the exchange accepts the signature) of at most max_recv_window_ms."""
    if policy.timestamps == "any":
        return
    for name, value in params:
        if name.casefold() in _RECV_WINDOW_PARAMS:
            text = value if isinstance(value, str) else str(value)
            try:
                window = float(text)
            except ValueError:
                window = float("inf")
            if not window <= policy.max_recv_window_ms:
                raise Refusal("clock", f"{name} {text[:20]!r} is above key {policy.label!r}'s max_recv_window_ms "
                                       f"({policy.max_recv_window_ms}): a signature must not stay valid for long")


def check_clock(policy: KeyPolicy, stamps: Iterable[int], now_ms: int) -> None:
    """Caller clocks: refused ("agent"), within the skew ("skew"), or anything ("any")."""
    if policy.timestamps == "any":
        return
    for stamp in stamps:
        if policy.timestamps == "agent":
            raise Refusal("clock", f"key {policy.label!r} takes the agent's clock only: send no timestamp")
        if abs(stamp - now_ms) > policy.skew_ms:
            direction = "ahead of" if stamp > now_ms else "behind"
            raise Refusal("clock", f"timestamp is {abs(stamp - now_ms) / 1000:.1f} s {direction} the agent's "
                                   f"clock; at most {policy.skew_ms / 1000:g} s are accepted (send 0 to use the "
                                   "agent's clock)")


@functools.lru_cache(maxsize=4096)
def _created_at(created_iso: str) -> datetime | None:
    """A key's creation date (UTC when it names no zone), None when unreadable; parsed once per key
    (a key's date never changes: the cache is a pure function's)."""
    try:
        created = datetime.fromisoformat(created_iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo is not None else created.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class AgeVerdict:
    warning: str | None  # a key close to its maximum age: alert, but sign


_DATES_QUIET = AgeVerdict(warning=None)


def check_key_dates(policy: KeyPolicy, created_iso: str, now: datetime) -> AgeVerdict:
    if policy.not_before is not None and now < policy.not_before:
        raise Refusal("not-before", f"key {policy.label!r} may not be used before {policy.not_before:%Y-%m-%dT%H:%M:%SZ}")
    if policy.expires is not None and now >= policy.expires:
        raise Refusal("expired", f"key {policy.label!r} expired on {policy.expires:%Y-%m-%dT%H:%M:%SZ}: rotate it")
    created = _created_at(created_iso)
    if created is None:
        raise Refusal("key-age", f"key {policy.label!r} has no readable creation date; re-import it")
    age = now - created
    limit = timedelta(days=policy.max_age_days)
    if age > limit:
        raise Refusal("key-age", f"key {policy.label!r} is {age.days} days old, over its maximum of "
                                 f"{policy.max_age_days} days: rotate it (new key on the exchange, import, revoke)")
    if age > limit - timedelta(days=policy.warn_age_days):
        days_left = (limit - age).days
        return AgeVerdict(warning=f"key {policy.label!r} reaches its maximum age in {days_left} days: rotate it")
    return AgeVerdict(warning=None)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@functools.lru_cache(maxsize=4096)
def _quiet_dates(not_before: datetime | None, expires: datetime | None, max_age_days: int, warn_age_days: int,
                 created_iso: str) -> tuple[float, float] | None:
    """The instants (ms since the epoch) between which `check_key_dates` neither refuses nor warns for
    a key of these dates, worked out once per key and policy rather than per request; a millisecond
    short at each end, so that the float seconds it is given cannot land on the other side. None
    when the creation date is unreadable (every instant refuses)."""
    created = _created_at(created_iso)
    if created is None:
        return None
    limit = timedelta(days=max_age_days)
    ends = [created + limit, created + limit - timedelta(days=warn_age_days)]  # over age; in the warning
    if expires is not None:
        ends.append(expires)
    first = math.ceil((not_before - _EPOCH) / _MS) + 1 if not_before is not None else -math.inf
    return first, math.floor((min(ends) - _EPOCH) / _MS) - 1


# -- the rules, together (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the rules found about one request for one key: a REFUSAL, or signable.

    REFUSAL is the named Refusal, or RequestInvalid for a body the exchange's scheme could not
    parse (INVALID_ARGUMENT, as before the rules were gathered here). AGE_WARNING is set (a key close to its maximum age: alert, but sign) whenever the key dates
    passed, even if a later rule refused; the guard alerts on it either way.
    """

    refusal: Refusal | RequestInvalid | None
    age_warning: str | None
    view: View | None  # the request as the exchange reads it (None when refused before it was read)
    facts: RequestFacts | None

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.facts.symbols if self.facts is not None else ()


def evaluate(
    key_policy: KeyPolicy, exchange: "Exchange", request: UnsignedRequest, *, created: str, timestamp_ms: int,
    now_ms: int,
) -> Verdict:
    """Every rule about REQUEST (already `validated()`) for KEY_POLICY: a pure function of the key's
    policy, its exchange record and creation date, the request, the caller's stamp and the agent's clock.

    The request is parsed once, here, into the View every rule reads (agent.rules.view), after the
    checks that need no parsing, so that the order of refusals is the same whatever the body holds.
    Raises nothing: refusals are returned, with the age warning found before them. No state: rates, the age-warning throttle and symbol history are the guard's.
    """
    quiet = _quiet_dates(key_policy.not_before, key_policy.expires, key_policy.max_age_days,
                         key_policy.warn_age_days, created)
    if quiet is not None and quiet[0] <= now_ms <= quiet[1]:
        verdict = _DATES_QUIET  # well inside the key's dates: what check_key_dates would find
    else:
        try:
            verdict = check_key_dates(key_policy, created, datetime.fromtimestamp(now_ms / 1000, timezone.utc))
        except Refusal as refusal:
            return Verdict(refusal=refusal, age_warning=None, view=None, facts=None)
    read: View | None = None
    facts: RequestFacts | None = None
    try:
        check_method(exchange, request)
        check_shape(request)
        read = view(exchange, request)  # query, form and raw-body members, as the exchange reads them
        params = read.params
        if len(read.fields().names()) != len(params):  # a folded name twice: check_names decides and names it
            check_names(params, len(request.query))
        facts = facts_of(read)
        refused = [(category, why) for category, why in facts.violations if category not in key_policy.allow]
        if refused:  # every category the request falls in must be allowed, not only the first
            (category, why), others = refused[0], [c for c, _ in refused[1:]]
            raise Refusal(f"forbidden:{category}", why + (f" (also {', '.join(others)})" if others else ""))
        check_endpoint(key_policy, request.method, request.path)
        if facts.orders and not exchange.rules.path_bound and not (
                request.method in ("POST", "PUT") and "order" in path_key(request.path)):
            # The signature does not bind the path: order parameters signed for any other endpoint
            # would place that order on the order endpoint, whatever the allow-list says.
            raise Refusal("endpoint", f"order parameters on {request.method} {request.path[:120]}: {exchange.id} "
                                      "does not sign the path, so orders are signed only for its order endpoints")
        check_symbols(key_policy, facts.symbols)
        check_orders(key_policy, facts.orders)
        # The folded names answer whether the request carries a stamp or a window at all (most carry
        # neither: the agent stamps them), so the usual request does not fold every name twice more.
        named = read.fields().name_set()
        stamps = caller_timestamps(params) if not named.isdisjoint(_TIMESTAMP_PARAMS) else []
        if timestamp_ms:
            stamps.append(timestamp_ms)
        check_clock(key_policy, stamps, now_ms)
        if not named.isdisjoint(_RECV_WINDOW_PARAMS):
            check_recv_window(key_policy, params)
    except (Refusal, RequestInvalid) as refusal:
        return Verdict(refusal=refusal, age_warning=verdict.warning, view=read, facts=facts)
    return Verdict(refusal=None, age_warning=verdict.warning, view=read, facts=facts)
