"""The record of one exchange: everything the agent knows about it, every field required.

An `Exchange` is declared in its family's folder (agent/exchanges/<family>/__init__.py): identity,
keys and scheme, ccxt, and two records of its own: `Rules` (rules.py: what a request is, for the
policy) and `Template` (template.py: the safe starting policy). No field of any of them has a
default: a field left out is a TypeError when the record is built, at import, never an exchange for
which some check silently finds "nothing to check". A field that may legitimately be empty is
given as empty (`param_rules=()`, `not_forbidden=None`), and the values are checked here (types,
and the combinations that would fail open: rules with no symbol parameter or no order reader, an
unbound path without parameter rules or without saying why).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Literal

from agent.rules.facts import OrderFacts
from agent.rules.forbidden import CATEGORIES, Explicit, ParamRule, Reads, UnboundNote
from agent.rules.view import BodyFormat, View
from agent.schemes.context import KEY_TYPES
from signing_agent_client.request import COMMON_METHODS, METHODS
from agent.schemes.spec import PassphraseRule, Scheme, UnsupportedKey

OrderReader = Callable[[View], list[OrderFacts]]
_ID = re.compile(r"[a-z][a-z0-9]*\Z")


class RecordError(TypeError):
    """An exchange record (or the registry) is incomplete or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class Template:
    """The safe starting policy's endpoints (agent.policy_templates)."""

    trading: tuple[str, ...]  # what a trading bot needs ("METHOD /path", '*' for a path parameter)
    settings: tuple[str, ...]  # leverage, margin and position-mode endpoints for the comment; () if none

    def __post_init__(self) -> None:
        if not _tuple_of(self.trading, str) or not self.trading:
            raise RecordError("a template's trading endpoints are a non-empty tuple of 'METHOD /path' strings")
        if not _tuple_of(self.settings, str):
            raise RecordError("a template's settings endpoints are a tuple of 'METHOD /path' strings (or ())")
        for endpoint in self.trading + self.settings:
            method, _, path = endpoint.partition(" ")
            if method not in METHODS or not path.startswith("/"):
                raise RecordError(f"template endpoint {endpoint!r} is not 'METHOD /path'")


@dataclass(frozen=True, kw_only=True)
class Rules:
    """What the shared engines (agent/rules/) read for one exchange (or a family sharing them)."""

    # -- how the exchange reads a request, and what its signature binds ----------------------------
    path_bound: bool  # the signature binds the request path (HTX: False, as a POST body is not signed)
    unbound_note: UnboundNote | None  # why parameters are checked on any path; None where the path is bound
    body_format: BodyFormat  # (path, raw body) -> "form" or "json"
    json_rpc: str | None  # the JSON-RPC root path whose sub-paths name methods (Deribit "/api/v2"); None
    # -- symbols and orders -------------------------------------------------------------------------
    symbol_params: frozenset[str]  # lower-case parameter names that name a symbol, at any depth
    path_symbols: tuple[re.Pattern[str], ...]  # path keys carrying a symbol (group 1); () if none
    read_orders: OrderReader  # the orders a request places or amends, with their sizes
    # -- default deny -------------------------------------------------------------------------------
    reads: Reads  # which requests only read
    explicit: tuple[Explicit, ...]  # default-deny endpoints no keyword finds; () if none
    not_forbidden: re.Pattern[str] | None  # path keys a keyword misnames (KuCoin's withdrawMargin); None
    param_rules: tuple[ParamRule, ...]  # forbidden endpoints' mandatory parameters, on any path
    settings_rules: tuple[ParamRule, ...]  # account-settings parameters, tried after every other rule
    param_methods: frozenset[str] | None  # the methods parameter rules apply to (Bybit: POST); None: all
    # The HTTP methods the exchange's API uses (COMMON_METHODS, and PATCH only where the exchange
    # documents it: Gate's spot amend). The policy refuses any other before reading the request, naming
    # these, and the scheme validates with them, so a method the exchange never serves is never signed.
    methods: tuple[str, ...]
    # Why every signature of this exchange is also a login that mints a session token (Deribit: the
    # header signature verifies as public/auth client_signature), making every request of the
    # `session-token` category as well as its own; None where no signature can be used so.
    signature_is_login: str | None
    # The amends that change an order's limit price and not its size (no order for the size caps): the
    # price band (agent.guardrails) reads their new price as it reads a new order's. Every exchange says,
    # agent.rules.orders.no_price_amends where it has none.
    read_amends: OrderReader

    def __post_init__(self) -> None:
        _check_rules(self)


@dataclass(frozen=True, kw_only=True)
class Exchange:
    # -- identity, keys and scheme ----------------------------------------------------------------
    id: str  # as operators type it: ccxt's id where ccxt has the exchange
    name: str  # as people read it, in refusals ("Binance USD-M")
    scheme: Scheme
    key_types: tuple[str, ...]  # accepted for import; the first is the default
    generated: tuple[str, ...]  # key types the exchange registers by public key (made in the token)
    passphrase: bool  # the exchange's key comes with a passphrase
    secret_encoding: Literal["text", "base64"]  # Kraken's secret is base64 of the key
    options: Mapping[str, tuple[str, ...]]  # per-key options at import: name -> allowed values, default first
    docs: str  # where its scheme is described (exchange-signing.md section)
    # -- ccxt ----------------------------------------------------------------------------------
    # ccxt's class, when it has one (reference tests, and the ccxt bridge: signing_agent_client.ccxt_bridge.BRIDGES
    # names the module that strips ccxt's authentication for it)
    ccxt_id: str | None
    # -- what the policy reads, and its starting point ---------------------------------------------
    rules: Rules
    template: Template

    def __post_init__(self) -> None:
        _check(self)

    # -- keys -------------------------------------------------------------------------------------

    def passphrase_rule(self, options: Mapping[str, str]) -> PassphraseRule | None:
        """How the passphrase is sent: in clear, or (KuCoin key versions 2 and 3) HMAC-signed by the secret."""
        if not self.passphrase:
            return None
        if self.id.startswith("kucoin") and options.get("key_version", "2") != "1":
            return "hmac-sha256-base64"
        return "clear"

    def resolve_options(self, given: Mapping[str, str]) -> dict[str, str]:
        """GIVEN checked against the allowed options, with defaults filled in."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise UnsupportedKey(f"{self.id} keys have no option {unknown[0]!r} (options: {allowed})")
        resolved = {}
        for name, allowed_values in self.options.items():
            value = given.get(name, allowed_values[0])
            if value not in allowed_values:
                raise UnsupportedKey(f"{self.id} option {name} must be one of {', '.join(allowed_values)}")
            resolved[name] = value
        return resolved

    def check_key_type(self, key_type: str, *, generated: bool = False) -> None:
        allowed = self.generated if generated else self.key_types
        if key_type not in allowed:
            how = "generated in the token" if generated else "imported"
            takes = ", ".join(allowed) if allowed else "none"
            raise UnsupportedKey(f"{self.id} does not take {key_type} keys {how} (it takes: {takes})")

    def hmac_key(self, secret: bytes) -> bytes:
        """The HMAC key bytes for SECRET as the exchange shows it (Kraken: base64-decoded)."""
        if self.secret_encoding == "base64":
            try:
                key = base64.b64decode(secret, validate=True)
            except (binascii.Error, ValueError):
                raise UnsupportedKey(f"a {self.id} secret is base64 text; this one does not decode") from None
            if len(key) < 32:  # Kraken's are 64 bytes: a short one is a paste error, not a key
                raise UnsupportedKey(f"a {self.id} secret decodes to {len(key)} bytes; expected 64")
            return key
        return secret


def required_fields(record_class: type = Exchange) -> tuple[str, ...]:
    """The names of a record's fields (Exchange, Rules or Template): every one of them must be given."""
    return tuple(f.name for f in fields(record_class))


def _tuple_of(value: object, kind: type) -> bool:
    return isinstance(value, tuple) and all(isinstance(item, kind) for item in value)


def _check(r: Exchange) -> None:
    def refuse(field: str, must: str) -> None:
        raise RecordError(f"exchange record {r.id!r}: {field} {must}")

    if not isinstance(r.id, str) or not _ID.match(r.id):
        raise RecordError(f"exchange record id {r.id!r} must be lower-case letters and digits")
    if not isinstance(r.name, str) or not r.name.strip():
        refuse("name", "must be the exchange's name as people read it")
    if not callable(getattr(r.scheme, "sign", None)):
        refuse("scheme", "must have a sign(request, key, env) method")
    if not _tuple_of(r.key_types, str) or not r.key_types or not set(r.key_types) <= set(KEY_TYPES):
        refuse("key_types", f"must be a non-empty tuple of {', '.join(KEY_TYPES)}")
    if not _tuple_of(r.generated, str) or not set(r.generated) <= set(r.key_types):
        refuse("generated", "must be a tuple of key types the exchange accepts (or ())")
    if not isinstance(r.passphrase, bool):
        refuse("passphrase", "must be True or False")
    if r.secret_encoding not in ("text", "base64"):
        refuse("secret_encoding", "must be 'text' or 'base64'")
    if not isinstance(r.options, Mapping) or not all(
            isinstance(name, str) and _tuple_of(values, str) and values for name, values in r.options.items()):
        refuse("options", "must map each option name to its allowed values, the default first (or be {})")
    if not isinstance(r.docs, str):
        refuse("docs", "must name the exchange-signing.md section (text)")
    if r.ccxt_id is not None and not isinstance(r.ccxt_id, str):
        refuse("ccxt_id", "must be ccxt's class name or None")
    if not isinstance(r.rules, Rules):
        refuse("rules", "must be a Rules (the family's rules.py)")
    if not isinstance(r.template, Template):
        refuse("template", "must be a Template")


def _check_rules(r: Rules) -> None:
    def refuse(field: str, must: str) -> None:
        raise RecordError(f"exchange rules: {field} {must}")

    if not isinstance(r.path_bound, bool):
        refuse("path_bound", "must be True or False")
    if r.unbound_note is not None and not isinstance(r.unbound_note, UnboundNote):
        refuse("unbound_note", "must be an UnboundNote or None")
    if r.path_bound != (r.unbound_note is None):
        refuse("unbound_note", "must be given exactly when the path is not bound (path_bound=False)")
    if r.signature_is_login is not None and not (isinstance(r.signature_is_login, str) and r.signature_is_login):
        refuse("signature_is_login", "must be the reason (text) or None")
    if not callable(r.body_format):
        refuse("body_format", "must be a function (path, body text) -> 'form' or 'json'")
    if r.json_rpc is not None and not (isinstance(r.json_rpc, str) and r.json_rpc.startswith("/")
                                       and not r.json_rpc.endswith("/")):
        refuse("json_rpc", "must be the JSON-RPC root path (no trailing '/') or None")
    if not isinstance(r.symbol_params, frozenset) or not r.symbol_params or not all(
            isinstance(name, str) and name == name.lower() for name in r.symbol_params):
        refuse("symbol_params", "must be a non-empty frozenset of lower-case names: symbol lists need them")
    if not _tuple_of(r.path_symbols, re.Pattern):
        refuse("path_symbols", "must be a tuple of compiled patterns (or ())")
    if not callable(r.read_orders):
        refuse("read_orders", "must be a function View -> orders: size caps need it")
    if not callable(r.read_amends):
        refuse("read_amends", "must be a function View -> price-only amends (no_price_amends where there are none): "
                              "price bands need it")
    if not isinstance(r.reads, Reads):
        refuse("reads", "must be a Reads")
    if not _tuple_of(r.explicit, Explicit):
        refuse("explicit", "must be a tuple of Explicit (or ())")
    if r.not_forbidden is not None and not isinstance(r.not_forbidden, re.Pattern):
        refuse("not_forbidden", "must be a compiled pattern or None")
    for name in ("param_rules", "settings_rules"):
        rules = getattr(r, name)
        if not _tuple_of(rules, ParamRule):
            refuse(name, "must be a tuple of ParamRule (or ())")
        if any(rule.category not in CATEGORIES for rule in rules):
            refuse(name, "must name categories of agent.rules.CATEGORIES")
    if not r.path_bound and not r.param_rules:
        refuse("param_rules", "must not be empty where the path is not bound: a signature for any path "
                              "reaches the forbidden endpoints")
    if r.param_methods is not None and not (isinstance(r.param_methods, frozenset) and r.param_methods
                                            and r.param_methods <= set(METHODS)):
        refuse("param_methods", "must be a non-empty frozenset of methods, or None (all)")
    if not (_tuple_of(r.methods, str) and r.methods[:len(COMMON_METHODS)] == COMMON_METHODS
            and set(r.methods) <= set(METHODS)):
        refuse("methods", f"must be COMMON_METHODS, then any more of {', '.join(METHODS)} the exchange uses")
    if any(rule.category not in CATEGORIES for rule in r.explicit):
        refuse("explicit", "must name categories of agent.rules.CATEGORIES")
