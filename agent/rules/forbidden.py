"""Default-deny rules: the endpoints no trading key should reach, and the parameters that betray them.

Categories (the value of RequestFacts.forbidden), in the order they are tried:

  api-key-management  creating, changing, listing or deleting API keys, and minting other credentials
                      (Bitfinex's auth tokens). Reads are refused too: Deribit's list_api_keys returns
                      the keys' secrets.
  session-token       Kraken's GetWebSocketsToken: a token with which the WebSocket API places orders
                      without the agent (and its policy) for 15 minutes. ccxt.pro's Kraken watchers
                      need it: a key policy may allow this category alone.
  sub-account         creating and managing sub-accounts, their keys and their transfers; broker APIs,
                      which exist to manage sub-accounts.
  withdrawal          withdrawals of any kind (crypto, fiat, lightning, internal "push" to another user,
                      sending from a Coinbase wallet) and withdrawal-address (address book) management.
  payment             Binance Pay, gift cards, P2P/C2C, fiat purchases with a payment method, bank
                      accounts.
  loan                crypto loans, fixed and flexible.
  margin-borrow       margin borrowing and repayment. Borrowing is how an attacker multiplies what a
                      victim's balance can buy at an inflated price; repaying moves collateral. An order
                      that borrows by itself (Binance sideEffectType, KuCoin autoBorrow) is an order and
                      is left to the order policy.
  earn                staking, savings, lending, dual investment, launchpools, leveraged-token
                      subscriptions: products that take funds out of the trading balance.
  convert             convert / dust / quote-and-accept swaps, OTC desks, wrapping. A convert is a trade,
                      but one made outside the order endpoints: it names assets, not symbols, and its
                      size is in a quote, so symbol allow-lists and size caps cannot see it. Refused.
  block-trade         RFQ, block trades, clearing: trades arranged with a chosen counterparty, which is
                      exactly how stolen keys were used to sell to their owners at inflated prices.
  transfer            transfers of any kind: between accounts, wallets, products, users, futures and
                      spot, margin and spot; position moves; sweeps.
  account-settings    security settings (IP restrictions and allow-lists, everywhere) and, on the
                      exchanges that do not sign the path (Binance, Bybit, MEXC), the account and
                      position settings a trading key reaches by parameters alone: leverage, margin
                      type (isolated/cross) and margin mode, position mode (hedge/one-way),
                      multi-assets margin, risk limit, auto-add-margin, a position's margin (Bybit,
                      MEXC: reducing it raises the position's effective leverage), spot-margin switches
                      and maximum leverage, fee-payment switches (BNB burn, MX deduct), Bybit's account
                      upgrade. An attacker with a bot's token would raise leverage, then trade: size
                      caps bound each order, not the margin behind a position. A key whose bot sets
                      leverage itself (ccxt set_leverage, set_margin_mode, set_position_mode) may allow
                      this category (agent/policy_templates.py says how). Path-bound exchanges (OKX,
                      Gate, Bitget, KuCoin, Deribit...) and HTX (which signs the path) are not touched:
                      there the endpoint allow-list binds, so their leverage endpoints are refused
                      unless listed. Binance's positionMargin (add/reduce margin) stays `transfer`: its
                      parameters fall under the `amount` rule below, which guards other endpoints too.
  ambiguous-endpoint  a Deribit JSON-RPC body naming another method than its path: which one the
                      exchange runs is unknown, and an endpoint allow-list sees only the path.

Reads. Path rules refuse requests that can change state. Reading withdrawal or transfer history,
sub-account lists or earn products moves nothing, so a read of a forbidden family is allowed (except
api-key-management and session-token, see above). What a read is depends on the exchange: a GET where GET only reads;
Deribit (whose GET requests write) only `get_*` methods; Kraken, Bitfinex, Gemini, Bitstamp and
Crypto.com (POST for everything) only the read endpoints listed here; HTX contract POSTs all count
as writes. Anything not known to be a read is treated as a write.

Matching. Paths are compared lower-cased without a trailing slash. Keywords are matched on words
(camelCase, '-', '_' and '/' split words: "sub" in create-sub-api) and on the path with '-' and '_'
removed (withdraw in WithdrawCancel, transfer in subTransfer, subaccount in sub_account); explicit
per-exchange patterns (a record's `explicit`) cover endpoints whose names carry no keyword (Gate /api/v4/push, OKX
move-positions, HTX /v1/margin/orders, Coinbase /v2/accounts/{id}/transactions...).

Parameters. Binance, Bybit and MEXC do not sign the path, and HTX does not sign POST bodies: a
signature obtained for an allowed endpoint can be sent to a forbidden one with the same parameters
(threat-model.md). So for those exchanges every request whose parameter names (query, form, JSON
top level, compared case-insensitively) include the mandatory parameters of a forbidden endpoint is
refused, whatever its path. The sets are the mandatory parameters (an attacker cannot leave one out
and still reach the endpoint) of the endpoints ccxt calls for withdraw() and transfer() and of the
documented families, chosen so that no order, cancel or query of ccxt's trading methods carries
them. Bybit's GET payload is the query string and its POST payload a JSON object: a GET signature
cannot be replayed as a POST, so its parameter rules apply to POST only. The withdrawal rule
{address, amount} applies to every exchange (no order carries an address). The account-settings
rules (an exchange's `settings_rules`) are tried after every fund-moving rule, so a request carrying
both kinds is refused as the fund-moving one. Where the path and the parameters are of different forbidden
families, the earlier category of CATEGORIES is reported (with both reasons): a key that allows
account-settings must not get a withdrawal's parameters signed by sending them to the leverage path.

Per exchange, the data these engines read is its record's (agent/exchanges/<family>/rules.py, gathered
in agent.exchanges): explicit patterns, keyword exemptions, read endpoints, parameter and settings
rules, the methods those apply to and why (its `unbound_note`).

What parameter rules cannot see (the honest residual of an unbound path): a parameter set that is
also a legitimate request's. A request carrying only timestamp/recvWindow (Binance GET
/api/v3/account) is valid at every endpoint that takes no other parameter (Binance POST
/sapi/v1/account/enableFastWithdrawSwitch); {symbol} alone is Binance's isolated-margin account switch
(POST/DELETE /sapi/v1/margin/isolated/account); MEXC's {positionMode} is carried by hedged futures
orders and is all change_position_mode takes; MEXC futures orders in isolated margin carry leverage
themselves (the order sets it); Bybit's set-collateral-switch-batch nests its settings in `request`,
the list a batch order uses. Path rules still name these endpoints; only signing nothing but
allow-listed paths (send mode) closes the replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.rules.view import View, squash

if TYPE_CHECKING:
    from agent.exchanges.record import Exchange

# -- categories and keywords ------------------------------------------------------------------------

CATEGORIES = (
    "api-key-management", "session-token", "sub-account", "withdrawal", "payment", "loan", "margin-borrow", "earn", "convert",
    "block-trade", "transfer", "account-settings", "ambiguous-endpoint",
)
# Categories whose reads are allowed.
READ_ALLOWED = frozenset(CATEGORIES) - {"api-key-management", "session-token"}

# Substrings of the squashed path (lower-case, '-' and '_' removed).
_SUBSTRINGS: dict[str, tuple[str, ...]] = {
    "api-key-management": ("apikey",),
    "sub-account": ("subaccount", "subacct", "subuser", "submember", "subapi", "subuid"),
    "withdrawal": ("withdraw", "addressbook", "approvedaddresses"),
    "earn": ("staking", "simpleearn", "savings", "launchpool", "dualinvest", "redempt", "lending", "bswap",
             "levertoken"),
    "loan": ("loan",),
    "margin-borrow": ("borrow", "repay"),
    "convert": ("convert", "covert", "dust", "smallbalance", "smallassets"),
    "payment": ("giftcard", "payments/", "c2c", "p2p", "addbank"),
    "block-trade": ("blocktrade", "block/order", "/rfq/", "/clearing/"),
    "transfer": ("transfer", "movefunds", "movepositions", "sweep"),
    "account-settings": ("whitelist", "iprestriction", "iplist"),
}
# Whole words of the path (split on '/', '-', '_', '.', ':' and camelCase).
_WORDS: dict[str, tuple[str, ...]] = {
    "sub-account": ("sub", "broker"),
    "earn": ("earn", "stake", "unstake", "subscribe", "subscription", "subscriptions", "unsubscribe", "redeem",
             "purchase", "mint", "finance", "blvt", "etp", "dci", "accumulator"),
    "loan": ("lend", "lends", "pledge", "mortgage"),
    "convert": ("otc", "wrap"),
    "payment": ("pay", "fiat", "gift", "bank"),
    "transfer": ("allocate", "collection"),
}
# A "sub" word followed by one of these is not a sub-account (OKX signal bots' sub-orders).
_SUB_EXCEPTIONS = frozenset({"order", "orders"})

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class Explicit:
    category: str
    pattern: re.Pattern[str]  # matched (fullmatch) against the lower-case path key
    what: str  # completes "path P ..." in the why
    any_method: bool = False  # a write even when sent as a GET (ccxt lists Bybit's del-submember as GET)


def explicit(category: str, pattern: str, what: str, any_method: bool = False) -> Explicit:
    """An endpoint of CATEGORY whose name carries no keyword (or a misleading one); PATTERN matches
    the path key (lower-case, no trailing slash; [^/]+ stands for a path parameter)."""
    return Explicit(category, re.compile(pattern), what, any_method)


# -- reads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reads:
    """Which requests of an exchange only read (anything else is treated as a write)."""

    get: bool  # a GET only reads (False where GET requests write: Deribit)
    paths: re.Pattern[str] | None  # read endpoints whatever the method (path keys, fullmatch); None


def is_read(v: View) -> bool:
    """Whether the request can only read (see the module docstring); False when unsure."""
    root = v.exchange.rules.json_rpc
    if root is not None:
        # The path names a method unless it is the JSON-RPC root (Deribit /api/v2), where the body names it.
        names = ([_rpc_name(root, v.key)] if v.key.startswith(root + "/") else []) + list(v.rpc_methods)
        return all(name.rsplit("/", 1)[-1].startswith("get_") for name in names)
    if v.method == "GET" and v.exchange.rules.reads.get:
        return True
    pattern = v.exchange.rules.reads.paths
    return bool(pattern and pattern.fullmatch(v.key))


def _rpc_name(root: str, key: str) -> str:
    return key.removeprefix(root + "/")


# -- path rules ---------------------------------------------------------------------------------


def words(path: str) -> list[str]:
    """The path's words in order: split on non-alphanumerics and on camelCase, lower-cased."""
    return [part.lower() for piece in _WORD_SPLIT.split(path) if piece for part in _CAMEL.split(piece) if part]


def _word_set(path: str) -> set[str]:
    """The words, plus each separator-delimited piece whole (so 'subaccount' is found in 'SubAccount'
    and in 'SUBACCOUNT' alike)."""
    return set(words(path)) | {piece.lower() for piece in _WORD_SPLIT.split(path) if piece}


# path_verdict's answers, by (the exchange's rules, path, key): the same path costs the keyword
# search once, not per request. The rules object is kept in the value and compared by identity, so an
# id() reused after a record was dropped is never taken for another's. Paths are the caller's choice:
# bounded, started afresh when full.
_PATH_VERDICTS: dict[tuple[int, str, str], tuple[object, tuple[str, str, bool] | None]] = {}
PATH_VERDICTS_SIZE = 4096


def path_verdict(exchange: "Exchange", path: str, key: str) -> tuple[str, str, bool] | None:
    """(category, what the path is, whether even a read is refused) when the path is of a forbidden
    family. A pure function of the exchange's rules and the path: remembered (see _PATH_VERDICTS)."""
    rules = exchange.rules
    slot = (id(rules), path, key)
    known = _PATH_VERDICTS.get(slot)
    if known is not None and known[0] is rules:
        return known[1]
    verdict = _path_verdict(exchange, path, key)
    if len(_PATH_VERDICTS) >= PATH_VERDICTS_SIZE:
        _PATH_VERDICTS.clear()
    _PATH_VERDICTS[slot] = (rules, verdict)
    return verdict


def _path_verdict(exchange: "Exchange", path: str, key: str) -> tuple[str, str, bool] | None:
    exempt = exchange.rules.not_forbidden
    if exempt is not None and exempt.fullmatch(key):
        return None
    squashed = squash(key)
    found_words = words(path)
    word_set = _word_set(path)
    for category in CATEGORIES:
        for rule in exchange.rules.explicit:
            if rule.category == category and rule.pattern.fullmatch(key):
                return category, rule.what, rule.any_method
        for keyword in _SUBSTRINGS.get(category, ()):
            if keyword in squashed:
                return category, f"is {_ARTICLE[category]} endpoint ({keyword!r} in the path)", False
        for word in _WORDS.get(category, ()):
            if word in word_set and not (word == "sub" and _sub_order(found_words)):
                return category, f"is {_ARTICLE[category]} endpoint (the word {word!r} in the path)", False
        if category == "api-key-management" and _api_word(path):
            return category, "is an API-key management endpoint ('api' in the endpoint name)", False
    return None


_ARTICLE = {
    "api-key-management": "an API-key management",
    "session-token": "a session-token",
    "sub-account": "a sub-account",
    "withdrawal": "a withdrawal",
    "earn": "an earn (staking, savings, lending)",
    "loan": "a loan",
    "margin-borrow": "a margin borrow/repay",
    "convert": "a convert",
    "payment": "a payment",
    "block-trade": "a block-trade",
    "transfer": "a transfer",
    "account-settings": "an account-settings",
}


def _sub_order(found: list[str]) -> bool:
    """Every 'sub' word is followed by 'order(s)' (OKX signal bots' sub-order endpoints)."""
    positions = [i for i, word in enumerate(found) if word == "sub"]
    return all(i + 1 < len(found) and found[i + 1] in _SUB_EXCEPTIONS for i in positions)


_KEY_VERBS = frozenset({
    "create", "update", "delete", "del", "modify", "edit", "remove", "reset", "enable", "disable", "change",
    "generation", "modification", "deletion", "freeze", "unfreeze",
})


def _api_word(path: str) -> bool:
    """'api' as a word of the last path segment next to a verb (Bybit update-api, Bitget
    create-sub-api, HTX api-key-generation): '/api/', '/swap-api/' prefixes are not endpoints."""
    parts = set(words(path.rstrip("/").rsplit("/", 1)[-1]))
    return "api" in parts and bool(parts & _KEY_VERBS)


def _rpc_key(root: str, method: str) -> str:
    return root + "/" + method


# -- parameter rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRule:
    category: str
    names: frozenset[str]  # lower-case; all present -> forbidden
    endpoint: str  # "those of ..."


def param_rule(category: str, names: str, endpoint: str) -> ParamRule:
    """CATEGORY for a request whose parameters include all of NAMES (space-separated, any case)."""
    return ParamRule(category, frozenset(names.lower().split()), endpoint)


@dataclass(frozen=True)
class UnboundNote:
    """Why an exchange's parameters are checked whatever the path, for the refusal's reader."""

    text: str  # "{name} signs only the payload, so the path is not bound": {name} is the exchange's name
    methods: frozenset[str] | None  # the methods it is true of (HTX: POST, whose body is unsigned); None: all


_WITHDRAW_ANYWHERE = param_rule("withdrawal", "address amount", "a withdrawal (no order carries an address)")


def _unbound_note(exchange: "Exchange", method: str) -> str:
    note = exchange.rules.unbound_note
    if note is None or (note.methods is not None and method not in note.methods):
        return ""
    return f" ({note.text.format(name=exchange.name)})"


def param_verdict(v: View) -> tuple[str, str] | None:
    """(category, why) of the first forbidden parameter set among the request's top-level names. The
    rules go from the specific to the general (`asset amount` is a transfer, `asset` alone a dust
    convert), so the first that matches names the endpoint those parameters are for."""
    methods = v.exchange.rules.param_methods
    if methods is not None and v.method not in methods:
        return None
    present = v.fields().name_set()  # the folded top-level names
    if not present:
        return None
    for rule in v.exchange.rules.param_rules + (_WITHDRAW_ANYWHERE,) + v.exchange.rules.settings_rules:
        if rule.names <= present:
            names = ", ".join(sorted(name for name, _ in v.params if name.casefold() in rule.names))
            return rule.category, f"parameters {names} are those of {rule.endpoint}{_unbound_note(v.exchange, v.method)}"
    return None


def violations(v: View) -> tuple[tuple[str, str], ...]:
    """Every default-deny category the request falls in, (category, why), in CATEGORIES order: by its
    path (or Deribit JSON-RPC method), by a Deribit method that differs from the path, and by its
    parameters (param_verdict); then `session-token` where every signature is also a login
    (Rules.signature_is_login). A key must allow each of them: one that allows `transfer` must not get leverage
    parameters signed by sending them to a transfer path (on an exchange that does not sign the path,
    they would then be valid at the leverage endpoint)."""
    read = is_read(v)
    found: dict[str, str] = {}
    targets = [(v.path, v.key, f"path {v.path}")]
    root = v.exchange.rules.json_rpc
    if root is not None:
        targets += [(_rpc_key(root, m), _rpc_key(root, m), f"JSON-RPC method {m}") for m in v.rpc_methods]
    for path, key, label in targets:
        hit = path_verdict(v.exchange, path, key)
        if hit is not None and not (read and hit[0] in READ_ALLOWED and not hit[2]):
            found.setdefault(hit[0], f"{label} {hit[1]}")
    if root is not None and v.key.startswith(root + "/"):
        named = _rpc_name(root, v.key)
        other = next((m for m in v.rpc_methods if m != named), None)
        if other is not None:
            found.setdefault("ambiguous-endpoint", (
                f"JSON-RPC method {other} differs from the path {v.path}: {v.exchange.name} may run either, "
                "and the endpoint allow-list sees only the path"
            ))
    by_params = param_verdict(v)
    if by_params is not None:
        found.setdefault(*by_params)
    own = tuple(sorted(found.items(), key=lambda item: CATEGORIES.index(item[0])))
    login = v.exchange.rules.signature_is_login
    if login is not None and "session-token" not in found:  # after the request's own categories
        own += (("session-token", login),)
    return own
