"""Safe starting policies: for each exchange, the endpoints a trading bot needs and nothing else.

`signing-agent policy template --exchange binance --key binance-main` prints one (delivery "send": the
agent places the key's requests itself, agent.delivery), from the
exchange's record (agent/exchanges/<family>/template.py: its trading and settings endpoints). The lists
hold order placement, amendment and cancellation, and reads of orders, fills, balances and
positions: what ccxt's createOrder / cancelOrder / fetchOrder / fetchOpenOrders / fetchMyTrades
/ fetchBalance / fetchPositions use. Whatever an operator adds, the default-deny categories of
agent.rules (withdrawals, transfers, sub-accounts, API keys...) stay refused unless the key's
`allow` names them; tests check that no template endpoint falls in one.

Futures templates say, in a comment, how a key whose bot must set leverage, margin mode or position
mode itself gets those endpoints, and why they are off by default: with a bot's token an attacker
could raise leverage, then trade. On Binance, Bybit and MEXC (which do not sign the path) that takes
`allow = ["account-settings"]` too, as the endpoint list cannot bind a signature to its path there.
"""

from __future__ import annotations

from agent.exchanges import Exchange, exchange_for
from agent.market import market_for
from agent.market.sources import PRICES_UNREAD
from agent.rules.view import path_key

_UNBOUND_SETTINGS = '''# Leverage, margin mode and position mode are refused by default (category
# "account-settings"): with this bot's token an attacker could raise leverage, then trade (size
# caps bound each order, not the margin behind a position). {name} does not sign the request
# path, so this list cannot keep a signature from being sent to those endpoints: the category can.
# Best: set them once on the exchange. A key whose bot must set them itself (ccxt set_leverage,
# set_margin_mode, set_position_mode) uncomments `allow` and adds the endpoints to the list:
# allow = ["account-settings"]
{endpoints}
'''
_BOUND_SETTINGS = '''# Leverage, margin mode and position mode are off by default: with this bot's token an attacker
# could raise leverage, then trade (size caps bound each order, not the margin behind a
# position). {name} signs the request path, so this list decides: a key whose bot must set them
# itself (ccxt set_leverage, set_margin_mode, set_position_mode) adds the endpoints:
{endpoints}
'''

_LOGIN = '''# {name}: every signature the agent makes is ALSO a valid login (public/auth with
# grant_type=client_signature), from which a bot can obtain an access token that trades and
# withdraws without the agent. So every {name} request is refused until you allow it, for a bot
# you would trust with the key itself (docs/security-model.md):
# allow = ["session-token"]
'''

TEMPLATE = '''# Safe start for key "{key}" ({exchange}): trading only.
# Withdrawals, transfers, sub-accounts, API-key management and other fund-moving or
# account-changing endpoints are refused whatever this list says.
[keys."{key}"]
endpoints = [
{endpoints}
]
{settings}# symbols = ["..."]            # recommended: only the symbols this bot trades
rate_per_second = 10           # this key, all bots together
# max_order = {{ SYMBOL = "0.01" }}        # base quantity per order
# max_order_quote = {{ SYMBOL = "500" }}   # quote amount per order
timestamps = "skew"            # caller clocks within timestamp_skew_ms of the agent's
max_age_days = 90              # rotate keys at least this often
# The agent places this key's requests itself (bots call Send): the exchange receives exactly what
# this policy checked, once, and the bot holds no signature to replay or to pair with another body.
# "sign" hands signatures to the bot instead ("both": either){sign_note}.
delivery = "send"
send_to = "production"         # or "testnet", or an https:// base URL
# Guardrails over time (README, Policy guide), against the 2022 drain's shape: floods of small
# orders, buys far above the market, illiquid symbols. The rate is safe for any trading bot; set
# the others from the bot's real volume.
max_orders_per_minute = 120    # this key, every symbol together (per symbol: max_orders_per_minute_per_symbol)
# max_notional = {{ "1m" = "2000", "1h" = "20000", "24h" = "100000" }}   # quote currency, every signed order
{market}'''

_MARKET = '''# price_band_pct = "2"             # limit buys at most 2 % above {name}'s last price, sells 2 % below
# min_quote_volume_24h = "1000000" # no orders on symbols that traded less in 24 h ({name}'s own ticker)
'''
# Where the ticker is read but orders' limit prices are not (agent.market.sources.PRICES_UNREAD), only the floor.
_FLOOR_ONLY = '''# min_quote_volume_24h = "1000000" # no orders on symbols that traded less in 24 h ({name}'s own ticker)
# price_band_pct: {name} orders' prices are not read in this version, so a band would refuse them all.
'''
_NO_MARKET = '''# price_band_pct, min_quote_volume_24h: this version reads no {name} ticker, so a key with them
# refuses its orders; leave them off here.
'''

BOT_TEMPLATE = '''
[bots."{bot}"]
keys = ["{key}"]
rate_per_second = 20
'''


def default_policy(exchange: str, key: str, *, bot: str | None = None) -> str:
    """The TOML text of a safe starting policy for KEY on EXCHANGE (and a grant to BOT)."""
    record = exchange_for(exchange)  # UnknownExchange, naming the exchanges there are
    endpoints = "\n".join(f'  "{e}",' for e in record.template.trading)
    text = TEMPLATE.format(key=key, exchange=exchange, endpoints=endpoints,
                           settings=_login(record) + _settings(record), sign_note=_sign_note(record),
                           market=_market(record))
    if bot:
        text += BOT_TEMPLATE.format(bot=bot, key=key)
    return text


def _sign_note(record: Exchange) -> str:
    """Where the exchange leaves unsigned what `symbols` and `max_order` read, say that "sign" then
    cannot have them (agent.delivery refuses such a policy)."""
    from agent.delivery import UNBOUND

    unbound = UNBOUND.get(record.id)
    if unbound is None:
        return ""
    keys = "" if unbound.key_types is None else f" ({', '.join(sorted(unbound.key_types))} keys)"
    return (f".\n# {record.name}{keys} does not sign {unbound.part}:\n"
            "# with symbols or max_order, only \"send\" is accepted")


def _market(record: Exchange) -> str:
    """The price band and volume floor, proposed where the agent reads the exchange's ticker
    (agent.market) for its trading endpoints."""
    markets = {market_for(record.id, path_key(e.partition(" ")[2])) for e in record.template.trading} - {None}
    if not markets:
        return _NO_MARKET.format(name=record.name)
    return (_FLOOR_ONLY if markets <= PRICES_UNREAD else _MARKET).format(name=record.name)


def _login(record: Exchange) -> str:
    """Where every signature is also a login (Deribit), the template refuses everything until the
    operator allows `session-token` knowingly; '' for the other exchanges."""
    if record.rules.signature_is_login is None:
        return ""
    return _LOGIN.format(name=record.name)


def _settings(record: Exchange) -> str:
    """The futures templates' comment on leverage, margin mode and position mode; '' for the others."""
    listed = record.template.settings
    if not listed:
        return ""
    form = _BOUND_SETTINGS if record.rules.path_bound else _UNBOUND_SETTINGS
    return form.format(name=record.name, endpoints="\n".join(f'#   "{e}",' for e in listed))
