"""What the rules say about a request: the records `inspect` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class OrderFacts:
    """One order a request places or amends, as the exchange will read it.

    QUANTITY is in the unit of the exchange's own size field: the base asset for spot orders, but
    contracts (OKX, Gate, HTX, KuCoin and MEXC futures), lots, or USD (Deribit inverse) where the
    exchange counts that way. QUOTE_QUANTITY is set when the order is sized in the quote asset
    (quoteOrderQty, funds, notional, a spot market buy...). Where the unit of a size field depends on
    something the request does not settle, the value is given in BOTH fields: a cap checked on either
    then sees the true size (possibly refusing a legitimate order, never passing an oversized one).
    None: the order carries no such size, or one that is not a plain decimal number."""

    symbol: str | None  # as the exchange spells it, upper-cased
    quantity: Decimal | None  # absolute value (Bitfinex and Gate futures sizes carry a sign)
    quote_quantity: Decimal | None
    # The limit price, set only by readers whose QUANTITY times it is the order's notional in the quote
    # currency (base-sized orders; None for contracts, lots, and exchanges not read for it): the
    # notional budgets (agent.guardrails) fail closed without it. SIDE: "buy" or "sell", where read.
    # ORDER_TYPE: "limit" (a price the order will not cross) or "market" (fills at the book), None when
    # the reader cannot tell (a stop, an algorithm, an unknown type). BASE_SIZED: QUANTITY is in the
    # base asset, so a reference price (the ticker's, for a market order) times it is the notional.
    # Orders compare by symbol and size (what the size caps read); the rest is checked on its own.
    price: Decimal | None = field(default=None, compare=False)
    side: str | None = field(default=None, compare=False)
    order_type: str | None = field(default=None, compare=False)
    base_sized: bool = field(default=False, compare=False)

    @property
    def notional(self) -> Decimal | None:
        """The quote amount the order can spend or receive, or None when it cannot be read: a base
        quantity without a price (a market order), or a size of unknown unit. Where both readings
        exist (a size in BOTH units), the larger counts."""
        if self.quantity is None:
            return self.quote_quantity
        if self.price is None:
            return None
        priced = self.quantity * self.price
        return priced if self.quote_quantity is None else max(priced, self.quote_quantity)


@dataclass(frozen=True)
class RequestFacts:
    # Every default-deny category the request falls in, with the evidence for a person (path or
    # parameter names and what they are), in CATEGORIES order; empty for a request of none.
    violations: tuple[tuple[str, str], ...]
    symbols: tuple[str, ...]  # every symbol named anywhere, upper-cased, deduplicated, in order of appearance
    orders: tuple[OrderFacts, ...]  # one per order placed or amended; empty for other requests
    # One per amend of the price only (the size unchanged, so not in ORDERS): its new limit price, with the
    # symbol and side where the amend carries them (most carry neither side nor type).
    amends: tuple[OrderFacts, ...] = ()

    @property
    def forbidden(self) -> str | None:
        """The first category (None: none), as a person would be told first."""
        return self.violations[0][0] if self.violations else None

    @property
    def forbidden_why(self) -> str | None:
        return self.violations[0][1] if self.violations else None
