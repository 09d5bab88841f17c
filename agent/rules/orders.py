"""Symbols and orders: what a request trades, as each exchange reads it.

Symbols are collected from every parameter that names one (per exchange: symbol, instId,
product_id, instrument_name, currency_pair...), at any depth of a JSON body or of JSON text inside a
parameter (Binance's batchOrders and symbols=["A","B"]), comma-separated lists split, and from the
path where the exchange puts the pair there (Bitstamp /api/v2/buy/btcusd/, Gate
/futures/usdt/positions/BTC_USDT/leverage).

Each exchange's record (agent.exchanges) says which parameters name a symbol, which paths carry one,
and how its orders are read (its family's rules.py, with the helpers below).

Orders are recognised by endpoint on exchanges that sign the path, and by parameters on those that
do not (Binance, MEXC, Bybit): there, a signature made for any path can be sent to the order
endpoint, so any request carrying an order's parameters (side, quantity...) is an order, whatever its
path. An amend that does not change the size (no size parameter) is not reported as an order: the
size was checked when the order was placed. Its new limit price is reported apart, as an amend
(RequestFacts.amends, read by the exchange's read_amends), which the price band holds like a new
order's. A batch the rules cannot read as a list of objects is
reported as one order of unknown size; a MEXC futures body that is a list of order ids (a cancel)
is no order. Close-position endpoints (which only reduce) and test or preview endpoints (which place
nothing, on exchanges that sign the path) are not orders.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from agent.rules.facts import OrderFacts
from agent.rules.view import AMBIGUOUS, Fields, View, decimal, maybe_json, members, objects

# Words where a path symbol would be (Bitstamp /api/v2/buy/market/..., open_orders/all).
_NOT_SYMBOLS = frozenset({"all", "cross_mode", "market", "instant"})


def symbols(v: View) -> tuple[str, ...]:
    names = v.exchange.rules.symbol_params
    found: list[str] = []
    for pattern in v.exchange.rules.path_symbols:
        match = pattern.fullmatch(v.key)
        if match and match.group(1) not in _NOT_SYMBOLS:
            found.append(match.group(1).upper())
    # Every parameter (query, form, JSON members) and everything nested in it; a JSON array body.
    pairs: list[tuple[str, object]] = []
    for name, value in v.params:
        pairs.append((name, value))
        if not isinstance(value, str) or value.lstrip()[:1] in ("[", "{"):  # plain text has no members
            pairs.extend(members(value))
    if isinstance(v.body, list):
        pairs.extend(members(v.body))
    for name, value in pairs:
        if name.lower() in names:
            found.extend(_symbol_values(value))
    return tuple(dict.fromkeys(found))


def _symbol_values(value: object) -> list[str]:
    value = maybe_json(value)
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.extend(part.strip().upper() for part in item.split(",") if part.strip())
    return out


# -- helpers for the exchanges' order readers (agent/exchanges/<family>/rules.py) ------------------

BASE, QUOTE, BOTH = "base", "quote", "both"


def sized(symbol: str | None, value: object, unit: str) -> OrderFacts:
    number = decimal(value)
    if unit == BASE:
        return OrderFacts(symbol, number, None)
    if unit == QUOTE:
        return OrderFacts(symbol, None, number)
    return OrderFacts(symbol, number, number)


def traded(symbol: str | None, value: object, unit: str, *, price: object = None, side: str | None = None,
           order_type: str | None = None) -> OrderFacts:
    """sized(), with what the guardrails read: the limit price, the side and the order type. Only for
    sizes whose BASE unit is the base asset (spot, margin, linear contracts counted in coins), never
    contracts or lots: there BASE x price is the notional, and a market order is priced by the ticker.
    A size in BOTH units is priced too: its notional is then the larger reading (agent.rules.facts)."""
    facts = sized(symbol, value, unit)
    return OrderFacts(facts.symbol, facts.quantity, facts.quote_quantity, price_of(price), side,
                      order_type, base_sized=True)


def repriced(symbol: str | None, price: object, side: str | None = None) -> OrderFacts:
    """An amend of the limit price only (RequestFacts.amends): the new price, unread (None) unless a plain
    positive decimal; the order type is not known (the price may be a stop's trigger on some exchanges)."""
    return OrderFacts(symbol, None, None, price_of(price), side)


def no_price_amends(v: View) -> list[OrderFacts]:
    """An exchange's read_amends where it has no amend of the price alone: its amends carry the size too
    (read as orders), or it has no amend at all."""
    return []


def price_of(value: object) -> Decimal | None:
    """A limit price: a positive plain decimal. A signed one is unread: Kraken reads "+5" and "-5" as
    offsets from the market, and no exchange takes a negative price."""
    if isinstance(value, str) and value.strip().startswith(("+", "-")):
        return None
    price = decimal(value)
    return price if price is not None and price > 0 else None


def side_of(text: str) -> str | None:
    """'buy' or 'sell' from a side field as Fields.text gives it; None for anything else (unread)."""
    return text if text in ("buy", "sell") else None


def type_of(text: str, limit: Iterable[str] = ("limit",), market: Iterable[str] = ("market",)) -> str | None:
    """'limit' or 'market' from an order type field (Fields.text), by the exchange's names for each;
    None for any other type (stops, algorithms, an unknown spelling): the guardrails then need a price."""
    return "limit" if text in limit else "market" if text in market else None


def fields_of(obj: dict) -> Fields:
    return Fields(obj.items())


def unsure(f: Fields, *names: str) -> bool:
    """A field that decides a unit is spelled twice or is not text: the unit is then unknown."""
    return any(f.get(name) is AMBIGUOUS or not isinstance(f.get(name), (str, type(None))) for name in names)


def first_of(f: Fields, *names: str) -> object:
    """The value of the one of NAMES present; AMBIGUOUS when several are (the exchange's choice is
    unknown); None when none is."""
    present = [name for name in names if f.has(name)]
    if not present:
        return None
    return f.get(present[0]) if len(present) == 1 else AMBIGUOUS


def batch(v: View, f: Fields, *names: str, array_body: bool = True) -> list[dict] | None:
    """The order objects of a batch: the JSON array body, or the list under one of NAMES (any
    spelling). None when there is no batch; [{}] when there is one the rules cannot read."""
    if array_body and isinstance(v.body, list):
        found = objects(v.body)
        return found if len(found) == len(v.body) and found else [{}]
    values = [value for name in names for value in f.all(name)]
    if not values:
        return None
    result: list[dict] = []
    for value in values:
        parsed = maybe_json(value)
        items = objects(parsed)
        if not isinstance(parsed, list) or len(items) != len(parsed) or not items:
            return [{}]
        result.extend(items)
    return result


def orders(v: View) -> tuple[OrderFacts, ...]:
    """The orders the request places or amends, read by its exchange's reader (its record's)."""
    return tuple(v.exchange.rules.read_orders(v))
