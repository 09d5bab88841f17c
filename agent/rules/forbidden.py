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
per-exchange patterns cover endpoints whose names carry no keyword (Gate /api/v4/push, OKX
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
rules (_SETTINGS_RULES) are tried after every fund-moving rule, so a request carrying both kinds is
refused as the fund-moving one. Where the path and the parameters are of different forbidden
families, the earlier category of CATEGORIES is reported (with both reasons): a key that allows
account-settings must not get a withdrawal's parameters signed by sending them to the leverage path.

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

from agent.rules.view import View, display_name, squash

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


def _explicit(category: str, pattern: str, what: str, any_method: bool = False) -> Explicit:
    return Explicit(category, re.compile(pattern), what, any_method)


# Endpoints whose names carry no keyword, or carry a misleading one; per exchange. Patterns match
# the path key: lower-case, no trailing slash; [^/]+ stands for a path parameter.
_EXPLICIT: dict[str, tuple[Explicit, ...]] = {
    "okx": (
        _explicit("transfer", r"/api/v5/account/move-positions", "moves positions to another account"),
        _explicit("withdrawal", r"/api/v5/tradingbot/grid/withdraw-income", "moves a bot's profit out of it"),
    ),
    "kucoin": (_explicit("sub-account", r"/api/v1/broker/nd/account", "creates a broker sub-account"),),
    "kucoinfutures": (_explicit("sub-account", r"/api/v1/broker/nd/account", "creates a broker sub-account"),),
    "kraken": (
        _explicit("session-token", r"/0/private/getwebsocketstoken",
                  "mints a WebSocket token that places orders without the agent"),
        _explicit("sub-account", r"/0/private/createsubaccount", "creates a sub-account"),
    ),
    "bitfinex": (
        _explicit("api-key-management", r"/v2/auth/w/token", "mints an auth token that trades without the agent"),
        _explicit("earn", r"/v2/auth/w/funding/.*", "manages funding (lending) offers"),
        _explicit("withdrawal", r"/v2/auth/w/ext/wallets/withdrawals/.*", "requests a withdrawal"),
    ),
    "gemini": (
        _explicit("sub-account", r"/v1/account/create", "creates a sub-account"),
        _explicit("api-key-management", r"/v1/oauth/.*", "manages OAuth credentials"),
        _explicit("block-trade", r"/v1/clearing/.*", "settles trades with a chosen counterparty"),
        _explicit("convert", r"/v1/instant/.*", "buys or sells at a quoted price outside the order book"),
    ),
    "bybit": (
        _explicit("api-key-management", r"/v5/user/(update|delete|create)-api", "manages this account's API keys"),
        _explicit("convert", r"/v5/asset/exchange/.*", "converts between coins"),
        _explicit("sub-account", r"/v5/user/(create-sub-member|frozen-sub-member|del-submember)",
                  "creates, freezes or deletes sub-members", any_method=True),
    ),
    "coinbase": (
        _explicit("withdrawal", r"/v2/accounts/[^/]+/transactions(/.*)?",
                  "sends, requests or completes a money transfer from a wallet"),
        _explicit("payment", r"/v2/accounts/[^/]+/(buys|sells|deposits)(/.*)?",
                  "buys, sells or deposits through a payment method"),
        _explicit("transfer", r"/api/v3/brokerage/intx/(allocate|multi_asset_collateral)",
                  "moves funds into or out of a perpetuals portfolio"),
    ),
    "bitstamp": (
        _explicit("withdrawal", r"/api/v2/crypto-transactions/deposits/[^/]+/reject",
                  "sends a deposit back to an address"),
        _explicit("api-key-management", r"/api/v2/revoke_all_api_keys", "revokes API keys"),
    ),
    "deribit": (
        _explicit("block-trade", r"/api/v2/private/(approve|execute|verify|reject|simulate|invalidate)_block_trade\w*",
                  "arranges a block trade with a chosen counterparty"),
        _explicit("transfer", r"/api/v2/private/move_positions", "moves positions to another account"),
    ),
    "gate": (
        _explicit("withdrawal", r"/api/v4/withdrawals/push", "sends funds to another Gate user"),
        _explicit("withdrawal", r"/api/v4/push", "sends funds to another Gate user"),
    ),
    "htx": (
        _explicit("margin-borrow", r"/v1/(cross-)?margin/orders", "applies for a margin loan"),
        _explicit("convert", r"/v1/stable-coin/exchange", "exchanges stable coins"),
    ),
}
# Account and position settings on the exchanges that do not sign the path (see account-settings).
_BYBIT_POSITION = r"/(?:v5|(?:contract|unified)/v3/private(?:/copytrading)?)/position/"
_BINANCE_SETTINGS = (
    _explicit("account-settings", r"/(?:fapi|dapi)/v1/leverage|/papi/v1/(?:um|cm)/leverage",
              "sets a symbol's leverage"),
    _explicit("account-settings", r"/(?:fapi|dapi)/v1/margintype", "switches a symbol between isolated and cross margin"),
    _explicit("account-settings", r"/(?:fapi|dapi)/v1/positionside/dual|/papi/v1/(?:um|cm)/positionside/dual",
              "switches between hedge and one-way position mode"),
    _explicit("account-settings", r"/fapi/v1/multiassetsmargin", "switches multi-assets margin mode"),
    _explicit("account-settings", r"/sapi/v1/margin/max-leverage", "sets the margin account's maximum leverage"),
    _explicit("account-settings", r"/sapi/v1/margin/isolated/account", "enables or disables an isolated margin account"),
    _explicit("account-settings", r"/sapi/v1/portfolio/delta-mode", "switches portfolio-margin delta mode"),
    _explicit("account-settings", r"/fapi/v1/feeburn|/papi/v1/um/feeburn|/sapi/v1/bnbburn",
              "switches paying fees and margin interest in BNB"),
)
for _binance in ("binance", "binanceusdm", "binanceus", "binancetr"):
    _EXPLICIT[_binance] = (
        _explicit("block-trade", r"/eapi/v1/block/.*", "arranges a block trade with a chosen counterparty"),
        *_BINANCE_SETTINGS,
    )
_EXPLICIT["bybit"] += (
    _explicit("account-settings", _BYBIT_POSITION + r"set-leverage", "sets a symbol's leverage"),
    _explicit("account-settings", _BYBIT_POSITION + r"switch-isolated",
              "switches a symbol between isolated and cross margin (and sets its leverage)"),
    _explicit("account-settings", _BYBIT_POSITION + r"switch-mode", "switches between hedge and one-way position mode"),
    _explicit("account-settings", _BYBIT_POSITION + r"set-risk-limit", "sets a position's risk limit"),
    _explicit("account-settings", _BYBIT_POSITION + r"set-auto-add-margin", "switches auto-add-margin"),
    _explicit("account-settings", r"/v5/position/add-margin",
              "adds or removes a position's margin (removing raises its effective leverage)"),
    _explicit("account-settings", r"/v5/account/set-margin-mode|/(?:contract|unified)/v3/private/account/setmarginmode",
              "switches the account's margin mode (isolated, cross, portfolio)"),
    _explicit("account-settings", r"/v5/account/set-hedging-mode", "switches spot hedging"),
    _explicit("account-settings", r"/v5/account/set-collateral-switch(?:-batch)?", "switches coins as collateral"),
    _explicit("account-settings", r"/v5/account/set-delta-mode", "switches delta-neutral mode"),
    _explicit("account-settings", r"/v5/account/set-limit-px-action", "sets what happens to orders beyond price limits"),
    _explicit("account-settings", r"/v5/account/upgrade-to-uta", "upgrades the account to a unified trading account"),
    _explicit("account-settings", r"/v5/spot-margin-trade/(?:switch-mode|set-leverage)",
              "switches spot margin trading or sets its leverage"),
    _explicit("account-settings", r"/v5/spot-cross-margin-trade/switch", "switches spot margin trading"),
)
_EXPLICIT["mexc"] = (
    _explicit("account-settings", r"/api/v1/private/position/change_leverage",
              "sets a position's leverage (and its margin type)"),
    _explicit("account-settings", r"/api/v1/private/position/change_position_mode",
              "switches between hedge and one-way position mode"),
    _explicit("account-settings", r"/api/v1/private/position/change_auto_add_im", "switches auto-add-margin"),
    _explicit("account-settings", r"/api/v1/private/position/change_margin",
              "adds or removes a position's margin (removing raises its effective leverage)"),
    _explicit("account-settings", r"/api/v1/private/account/change_risk_level", "sets a position's risk limit"),
    _explicit("account-settings", r"/api/v3/mxdeduct/enable", "switches paying fees in MX"),
)

# Paths where a keyword misleads: the endpoint moves margin between a position and its own account
# (ccxt's reduceMargin), which is position management, not a withdrawal.
_KUCOIN_POSITION_MARGIN = re.compile(
    r"/api/v1/margin/withdrawmargin|/api/v1/copy-trade/futures/position/margin/withdraw-margin"
)
_NOT_FORBIDDEN: dict[str, re.Pattern[str]] = {"kucoin": _KUCOIN_POSITION_MARGIN, "kucoinfutures": _KUCOIN_POSITION_MARGIN}

# -- reads ---------------------------------------------------------------------------------------

_GET_READS = frozenset({
    "binance", "binanceusdm", "binanceus", "binancetr", "okx", "kucoin", "kucoinfutures", "bitget", "bybit",
    "mexc", "coinbase", "gate", "htx", "gemini", "bitstamp",
})
# Read endpoints of exchanges that POST everything (path keys, fullmatch).
_POST_READS: dict[str, re.Pattern[str]] = {
    "kraken": re.compile(
        r"/0/private/(withdrawmethods|withdrawaddresses|withdrawinfo|withdrawstatus|depositmethods"
        r"|depositaddresses|depositstatus|earn/(allocatestatus|deallocatestatus|strategies|allocations))"
    ),
    "bitfinex": re.compile(r"/v2/auth/(r|calc)/.*"),
    "gemini": re.compile(
        r"/v[12]/transfers|/v[12]/withdraw/[^/]+(/[^/]+)?/feeestimate|/v1/approvedaddresses/account/[^/]+"
        r"|/v1/payments/methods|/v1/staking/(rewards|history)|/v1/balances/(staking|earn)"
        r"|/v1/earn/(interest|history)|/v1/account/list|/v1/clearing/(status|list|trades|broker/list)"
    ),
    "bitstamp": re.compile(
        r"/api/v2/(withdrawal-requests|withdrawal/status|fees/withdrawal(/[^/]+)?|earn/subscriptions)"
    ),
    "cryptocom": re.compile(
        r"/(exchange/v1|v1|v2)/private/(\w+/)?(get-[\w-]+|user-balance(-history)?|fiat-withdraw-history"
        r"|fiat-deposit-history|fiat-deposit-info|fiat-transaction-quota|fiat-transaction-limit"
        r"|fiat-get-bank-accounts)"
    ),
}


def is_read(v: View) -> bool:
    """Whether the request can only read (see the module docstring); False when unsure."""
    if v.exchange == "deribit":
        # The path names a method unless it is the JSON-RPC root (/api/v2), where the body names it.
        names = ([_deribit_name(v.key)] if v.key.startswith("/api/v2/") else []) + list(v.rpc_methods)
        return all(name.rsplit("/", 1)[-1].startswith("get_") for name in names)
    if v.method == "GET" and v.exchange in _GET_READS:
        return True
    pattern = _POST_READS.get(v.exchange)
    return bool(pattern and pattern.fullmatch(v.key))


def _deribit_name(key: str) -> str:
    return key.removeprefix("/api/v2/")


# -- path rules ---------------------------------------------------------------------------------


def words(path: str) -> list[str]:
    """The path's words in order: split on non-alphanumerics and on camelCase, lower-cased."""
    return [part.lower() for piece in _WORD_SPLIT.split(path) if piece for part in _CAMEL.split(piece) if part]


def _word_set(path: str) -> set[str]:
    """The words, plus each separator-delimited piece whole (so 'subaccount' is found in 'SubAccount'
    and in 'SUBACCOUNT' alike)."""
    return set(words(path)) | {piece.lower() for piece in _WORD_SPLIT.split(path) if piece}


def path_verdict(exchange_id: str, path: str, key: str) -> tuple[str, str, bool] | None:
    """(category, what the path is, whether even a read is refused) when the path is of a forbidden
    family."""
    exempt = _NOT_FORBIDDEN.get(exchange_id)
    if exempt is not None and exempt.fullmatch(key):
        return None
    squashed = squash(key)
    found_words = words(path)
    word_set = _word_set(path)
    for category in CATEGORIES:
        for rule in _EXPLICIT.get(exchange_id, ()):
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


def _rpc_key(method: str) -> str:
    return "/api/v2/" + method


# -- parameter rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamRule:
    category: str
    names: frozenset[str]  # lower-case; all present -> forbidden
    endpoint: str  # "those of ..."


def _rule(category: str, names: str, endpoint: str) -> ParamRule:
    return ParamRule(category, frozenset(names.lower().split()), endpoint)


_WITHDRAW_ANYWHERE = _rule("withdrawal", "address amount", "a withdrawal (no order carries an address)")

_BINANCE_RULES = (
    _rule("withdrawal", "coin address amount", "Binance's withdrawal endpoint (/sapi/v1/capital/withdraw/apply)"),
    _rule("sub-account", "toEmail asset amount", "Binance's sub-account transfers (/sapi/v1/sub-account/...)"),
    _rule("sub-account", "fromEmail asset amount", "Binance's sub-account transfers (/sapi/v1/sub-account/...)"),
    _rule("sub-account", "email", "Binance's sub-account management endpoints (/sapi/v1/sub-account/...)"),
    _rule("sub-account", "subAccountString", "Binance's virtual sub-account creation"),
    _rule("sub-account", "subAccountApiKey", "Binance's sub-account API-key endpoints"),
    _rule("sub-account", "subAccountId", "Binance's broker sub-account endpoints"),
    _rule("earn", "productId amount", "Binance's simple-earn, savings and staking subscriptions"),
    _rule("earn", "projectId amount", "Binance's locked simple-earn subscriptions"),
    _rule("earn", "tokenName", "Binance's leveraged-token (BLVT) subscriptions"),
    _rule("earn", "poolId", "Binance's liquidity-pool (bswap) endpoints"),
    _rule("loan", "loanCoin", "Binance's crypto-loan endpoints (/sapi/v1/loan/...)"),
    _rule("loan", "collateralCoin", "Binance's crypto-loan endpoints (/sapi/v1/loan/...)"),
    _rule("convert", "fromAsset toAsset", "Binance's convert quote endpoint (/sapi/v1/convert/getQuote)"),
    _rule("convert", "quoteId", "Binance's convert accept endpoint (/sapi/v1/convert/acceptQuote)"),
    _rule("convert", "baseAsset quoteAsset", "Binance's convert limit and swap endpoints"),
    _rule("convert", "fromCoin toCoin", "Binance US's OTC quote endpoint (/sapi/v1/otc/quotes)"),
    _rule("payment", "token amount", "Binance's gift-card endpoint (/sapi/v1/giftcard/createCode)"),
    _rule("payment", "baseToken faceToken", "Binance's gift-card endpoint (/sapi/v1/giftcard/buyCode)"),
    _rule("block-trade", "blockOrderMatchingKey", "Binance's block-trade execution (/eapi/v1/block/order/execute)"),
    _rule("block-trade", "liquidity legs", "Binance's options block-trade creation (/eapi/v1/block/order/create)"),
    _rule("transfer", "asset amount",
          "Binance's transfer, borrow and repay endpoints (/sapi/v1/asset/transfer, /sapi/v1/futures/transfer, "
          "/sapi/v1/margin/loan...)"),
    # No Binance trading endpoint takes `amount` (orders use quantity / quoteOrderQty); the fund-moving
    # ones that send it with no other telling name do (ETH staking, portfolio-margin transfers,
    # isolated position margin), and `depositAmount` (dual investment) or `asset` alone (dust).
    _rule("transfer", "amount", "Binance's fund-moving endpoints (staking, portfolio-margin transfer, position "
                                "margin...): no trading endpoint takes 'amount'"),
    _rule("earn", "depositAmount", "Binance's dual-investment subscription"),
    _rule("convert", "asset", "Binance's dust transfer (/sapi/v1/asset/dust): no trading endpoint takes 'asset'"),
)

_PARAM_RULES: dict[str, tuple[ParamRule, ...]] = {
    "binance": _BINANCE_RULES,
    "binanceusdm": _BINANCE_RULES,
    "binanceus": _BINANCE_RULES,
    "binancetr": _BINANCE_RULES,
    "bybit": (
        _rule("withdrawal", "coin address amount", "Bybit's withdrawal endpoint (/v5/asset/withdraw/create)"),
        _rule("sub-account", "fromMemberId", "Bybit's universal transfer (/v5/asset/transfer/universal-transfer)"),
        _rule("sub-account", "toMemberId", "Bybit's universal transfer (/v5/asset/transfer/universal-transfer)"),
        _rule("sub-account", "subuid", "Bybit's sub-member and sub-API endpoints (/v5/user/...)"),
        _rule("sub-account", "subMemberIds", "Bybit's sub-member transfer settings"),
        _rule("sub-account", "memberType", "Bybit's sub-member creation (/v5/user/create-sub-member)"),
        _rule("api-key-management", "permissions", "Bybit's API-key endpoints (/v5/user/update-api...)"),
        _rule("api-key-management", "apikey", "Bybit's API-key deletion (/v5/user/delete-sub-api)"),
        _rule("transfer", "fromAccountType toAccountType",
              "Bybit's transfers (/v5/asset/transfer/inter-transfer, universal-transfer)"),
        _rule("transfer", "transferId", "Bybit's transfers (/v5/asset/transfer/inter-transfer)"),
        _rule("transfer", "fromUid toUid", "Bybit's position move (/v5/position/move-positions)"),
        _rule("loan", "loanCurrency", "Bybit's crypto-loan endpoints (/v5/crypto-loan/...)"),
        _rule("convert", "fromCoin toCoin", "Bybit's convert quote (/v5/asset/exchange/quote-apply)"),
        _rule("convert", "quoteTxId", "Bybit's convert execution (/v5/asset/exchange/convert-execute)"),
        _rule("earn", "ltCoin", "Bybit's leveraged-token purchase and redemption"),
        _rule("earn", "productId", "Bybit's earn orders (/v5/earn/place-order)"),
        _rule("margin-borrow", "coin qty", "Bybit's spot-margin borrow (/v5/spot-cross-margin-trade/loan)"),
        _rule("transfer", "coin amount", "Bybit's borrow, repay, lending and earn endpoints (/v5/account/borrow...)"),
    ),
    "mexc": (
        _rule("withdrawal", "coin address amount", "MEXC's withdrawal endpoint (/api/v3/capital/withdraw)"),
        _rule("sub-account", "subAccount", "MEXC's sub-account endpoints (/api/v3/sub-account/...)"),
        _rule("sub-account", "toAccount", "MEXC's internal transfer (/api/v3/capital/transfer/internal)"),
        _rule("api-key-management", "permissions", "MEXC's sub-account API-key creation"),
        _rule("transfer", "fromAccountType toAccountType", "MEXC's transfers (/api/v3/capital/transfer)"),
        _rule("transfer", "asset amount", "MEXC's transfers (/api/v3/capital/transfer...)"),
    ),
    "htx": (
        _rule("withdrawal", "address amount currency", "HTX's withdrawal endpoint (/v1/dw/withdraw/api/create)"),
        _rule("sub-account", "sub-uid", "HTX's sub-user transfer (/v1/subuser/transfer)"),
        _rule("sub-account", "sub_uid", "HTX's master/sub transfers (/api/v1/contract_master_sub_transfer)"),
        _rule("transfer", "fromUid toUid", "HTX's point transfer (/v2/point/transfer)"),
        _rule("transfer", "from_margin_account to_margin_account", "HTX's futures transfers (swap_transfer_inner)"),
        _rule("transfer", "currency amount",
              "HTX's transfers and margin loans (/v1/account/transfer, /v2/account/transfer, /v1/futures/transfer, "
              "/v1/margin/orders...)"),
        _rule("transfer", "asset amount", "HTX's futures transfers (/v5/account/universal_transfer...)"),
    ),
    # Path-bound exchanges: the withdrawal parameters, where cheap (defense in depth).
    "okx": (_rule("withdrawal", "toAddr", "OKX's withdrawal endpoint (/api/v5/asset/withdrawal)"),),
    "bitget": (_rule("withdrawal", "address size", "Bitget's withdrawal endpoint (/api/v2/spot/wallet/withdrawal)"),),
    "kraken": (_rule("withdrawal", "asset key amount", "Kraken's withdrawal endpoint (/0/private/Withdraw)"),),
}

# Account and position settings (see account-settings), tried after every fund-moving rule. Each set
# is mandatory at its endpoint, and none is carried by an order, cancel or query of ccxt's trading
# methods (tests/test_rules.py and tests/adversarial/test_unbound_params.py run them). Left out,
# because an order carries them: MEXC's {positionMode} (hedged orders), MEXC's {leverage, openType,
# symbol} (isolated orders), Bybit's tpslMode; and Binance's isolated-margin account switch ({symbol}).
_BINANCE_SETTINGS_RULES = (
    _rule("account-settings", "leverage",
          "Binance's leverage endpoints (/fapi/v1/leverage, /dapi/v1/leverage, /papi/v1/um/leverage...)"),
    _rule("account-settings", "marginType", "Binance's margin-type switch (/fapi/v1/marginType, /dapi/v1/marginType)"),
    _rule("account-settings", "dualSidePosition",
          "Binance's position-mode switch (/fapi/v1/positionSide/dual, /dapi/v1/positionSide/dual...)"),
    _rule("account-settings", "multiAssetsMargin", "Binance's multi-assets margin switch (/fapi/v1/multiAssetsMargin)"),
    _rule("account-settings", "maxLeverage", "Binance's margin maximum leverage (/sapi/v1/margin/max-leverage)"),
    _rule("account-settings", "feeBurn", "Binance's BNB fee switch (/fapi/v1/feeBurn, /papi/v1/um/feeBurn)"),
    _rule("account-settings", "spotBNBBurn", "Binance's BNB burn switch (/sapi/v1/bnbBurn)"),
    _rule("account-settings", "interestBNBBurn", "Binance's BNB burn switch (/sapi/v1/bnbBurn)"),
)
_SETTINGS_RULES: dict[str, tuple[ParamRule, ...]] = {
    "binance": _BINANCE_SETTINGS_RULES,
    "binanceusdm": _BINANCE_SETTINGS_RULES,
    "binanceus": _BINANCE_SETTINGS_RULES,
    "binancetr": _BINANCE_SETTINGS_RULES,
    "bybit": (
        _rule("account-settings", "buyLeverage sellLeverage",
              "Bybit's leverage endpoints (/v5/position/set-leverage, /v5/position/switch-isolated)"),
        _rule("account-settings", "tradeMode", "Bybit's margin-type switch (/v5/position/switch-isolated)"),
        _rule("account-settings", "category mode", "Bybit's position-mode switch (/v5/position/switch-mode)"),
        _rule("account-settings", "riskId", "Bybit's risk limit (/v5/position/set-risk-limit)"),
        _rule("account-settings", "autoAddMargin", "Bybit's auto-add-margin switch (/v5/position/set-auto-add-margin)"),
        _rule("account-settings", "margin", "Bybit's position margin (/v5/position/add-margin)"),
        _rule("account-settings", "setMarginMode", "Bybit's margin-mode switch (/v5/account/set-margin-mode)"),
        _rule("account-settings", "setHedgingMode", "Bybit's spot hedging switch (/v5/account/set-hedging-mode)"),
        _rule("account-settings", "collateralSwitch", "Bybit's collateral switch (/v5/account/set-collateral-switch)"),
        _rule("account-settings", "spotMarginMode", "Bybit's spot margin switch (/v5/spot-margin-trade/switch-mode)"),
        _rule("account-settings", "leverage", "Bybit's spot margin leverage (/v5/spot-margin-trade/set-leverage)"),
        _rule("account-settings", "switch", "Bybit's spot margin switch (/v5/spot-cross-margin-trade/switch)"),
    ),
    "mexc": (
        _rule("account-settings", "leverage positionType",
              "MEXC's leverage endpoint without a position (/api/v1/private/position/change_leverage)"),
        _rule("account-settings", "leverage positionId",
              "MEXC's leverage endpoint on a position (/api/v1/private/position/change_leverage)"),
        _rule("account-settings", "level positionType", "MEXC's risk limit (/api/v1/private/account/change_risk_level)"),
        _rule("account-settings", "isEnabled", "MEXC's auto-add-margin switch (/api/v1/private/position/change_auto_add_im)"),
        _rule("account-settings", "positionId amount", "MEXC's position margin (/api/v1/private/position/change_margin)"),
        _rule("account-settings", "mxDeductEnable", "MEXC's MX fee switch (/api/v3/mxDeduct/enable)"),
    ),
}
# Exchanges whose parameter rules apply to these methods only (see the module docstring).
_PARAM_METHODS = {"bybit": frozenset({"POST"})}


def _unbound_note(exchange_id: str, method: str) -> str:
    name = display_name(exchange_id)
    if exchange_id == "htx":
        return f" ({name} does not sign POST bodies, so the body can be swapped)" if method == "POST" else ""
    if exchange_id == "bybit":
        return f" ({name} signs only the payload, so the path is not bound)"
    if exchange_id in ("binance", "binanceusdm", "binanceus", "binancetr", "mexc"):
        return f" ({name} signs only the parameters, so the path is not bound)"
    return ""


def param_verdict(v: View) -> tuple[str, str] | None:
    """(category, why) of the first forbidden parameter set among the request's top-level names. The
    rules go from the specific to the general (`asset amount` is a transfer, `asset` alone a dust
    convert), so the first that matches names the endpoint those parameters are for."""
    methods = _PARAM_METHODS.get(v.exchange)
    if methods is not None and v.method not in methods:
        return None
    present = {name.lower() for name, _ in v.params if isinstance(name, str)}
    if not present:
        return None
    for rule in _PARAM_RULES.get(v.exchange, ()) + (_WITHDRAW_ANYWHERE,) + _SETTINGS_RULES.get(v.exchange, ()):
        if rule.names <= present:
            names = ", ".join(sorted(name for name, _ in v.params if name.lower() in rule.names))
            return rule.category, f"parameters {names} are those of {rule.endpoint}{_unbound_note(v.exchange, v.method)}"
    return None


def violations(v: View) -> tuple[tuple[str, str], ...]:
    """Every default-deny category the request falls in, (category, why), in CATEGORIES order: by its
    path (or Deribit JSON-RPC method), by a Deribit method that differs from the path, and by its
    parameters (param_verdict). A key must allow each of them: one that allows `transfer` must not get leverage
    parameters signed by sending them to a transfer path (on an exchange that does not sign the path,
    they would then be valid at the leverage endpoint)."""
    read = is_read(v)
    found: dict[str, str] = {}
    targets = [(v.path, v.key, f"path {v.path}")]
    targets += [(_rpc_key(m), _rpc_key(m), f"JSON-RPC method {m}") for m in v.rpc_methods]
    for path, key, label in targets:
        hit = path_verdict(v.exchange, path, key)
        if hit is not None and not (read and hit[0] in READ_ALLOWED and not hit[2]):
            found.setdefault(hit[0], f"{label} {hit[1]}")
    if v.exchange == "deribit" and v.key.startswith("/api/v2/"):
        named = _deribit_name(v.key)
        other = next((m for m in v.rpc_methods if m != named), None)
        if other is not None:
            found.setdefault("ambiguous-endpoint", (
                f"JSON-RPC method {other} differs from the path {v.path}: Deribit may run either, "
                "and the endpoint allow-list sees only the path"
            ))
    by_params = param_verdict(v)
    if by_params is not None:
        found.setdefault(*by_params)
    return tuple(sorted(found.items(), key=lambda item: CATEGORIES.index(item[0])))
