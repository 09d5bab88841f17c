"""Guardrails over time (issue 17): the kill switch, order rates and notional budgets.

The rules of agent.policy judge one request; these judge what a key's (and a bot's) orders add up
to, which a compromised bot with a valid credential could otherwise abuse within every per-order
rule: the 2022 drain was thousands of small, allowed buys. The guard calls `check` once a request
has passed every rule of agent.policy.evaluate (and the key's request rate), in this order:

    frozen          PERMISSION_DENIED   a freeze (agent.freeze) covers the key or bot: no order,
                                        no amend; reads and cancels still signed
    thin-market     PERMISSION_DENIED   min_quote_volume_24h: the symbol traded less than that in 24 h
                                        (the exchange's own ticker, agent.market)
    price-band      PERMISSION_DENIED   price_band_pct: a limit buy above, or sell below, the last price
                                        by more than the band; the new price of an amend likewise (an
                                        amend that does not say its side must stay inside the band);
                                        a ticker older than the staleness bound refuses the orders
                                        that need it (and alerts)
    order-rate      RESOURCE_EXHAUSTED  max_orders_per_minute (the key; each symbol; the bot)
    notional-budget PERMISSION_DENIED   max_notional windows (the key; each symbol; the bot),
                                        charged last so that a refusal by any rule spends nothing

State lives in the state dir, shared by every worker: the freeze file (polled with the policy), the
order-rate buckets (the guard's SharedBuckets), the ledgers (agent.budgets). With several hosts on one
PostgreSQL ([store] backend = "postgres") the buckets and ledgers live there instead (agent.shared_state),
and the freezes every host reads too (agent.freeze_pg), beside the host's own freeze file.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, deque
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent import freeze
from agent.budgets import Charge, LedgerDamaged, Ledgers
from agent.limits import Limits
from agent.logs import get_logger
from agent.market import Market, MarketSettings, NoTicker, market_for
from agent.policy import RESOURCE_EXHAUSTED, Refusal

if TYPE_CHECKING:
    from agent.exchanges.record import Exchange
    from agent.policy import BotPolicy, KeyPolicy, Verdict
    from agent.rates import SharedBuckets
    from agent.freeze_pg import SharedFreezes
    from agent.shared_state import PostgresLedgers


class Guardrails:
    def __init__(self, state_dir: Path, *, buckets: "SharedBuckets", market: MarketSettings | None = None,
                 alert: Callable[..., None] = lambda kind, **fields: None,
                 audit: Callable[..., bool] = lambda event, **fields: True,
                 ledgers: "Ledgers | PostgresLedgers | None" = None,
                 shared_freezes: "SharedFreezes | None" = None) -> None:
        self._state_dir = state_dir
        self._buckets = buckets  # the guard's, shared by every worker through the state dir
        self._alert = alert
        self.market = Market(market or MarketSettings(), on_stale=self._stale)
        self._patterns = OrderPatterns(alert, audit)
        self._log = get_logger()
        self._freeze_seen = self._freeze_digest()
        self.freezes = freeze.read(state_dir)
        # Several hosts: the freezes every host shares (agent.freeze_pg), beside this host's own file.
        self.shared_freezes = shared_freezes
        # The notional ledgers: this state dir's journal, or the database several hosts share.
        self._ledgers = ledgers if ledgers is not None else Ledgers(state_dir)

    # -- the freeze file, polled with the policy (Guard._watch) ---------------------------------------

    def _freeze_digest(self) -> str | None:
        try:
            return hashlib.sha256(freeze.path_in(self._state_dir).read_bytes()).hexdigest()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"unreadable:{exc.errno}"

    def poll(self) -> None:
        """Re-read the freeze file when it changed; log what changed (the CLI audited and alerted it)."""
        digest = self._freeze_digest()
        if digest == self._freeze_seen:
            return
        self._freeze_seen = digest
        before, self.freezes = self.freezes, freeze.read(self._state_dir)  # one assignment: old or new, whole
        added = set(self.freezes.entries) - set(before.entries)
        lifted = set(before.entries) - set(self.freezes.entries)
        for entry in added:
            self._log.warning("freeze.applied", scope=entry.scope, name=entry.name, by=entry.by, at=entry.at)
        for entry in lifted:
            self._log.warning("freeze.lifted", scope=entry.scope, name=entry.name)
        if self.freezes.problem:
            self._log.error("freeze.unreadable", reason=self.freezes.problem)

    # -- the checks ---------------------------------------------------------------------------------

    def check(self, *, bot: "BotPolicy | None", bot_name: str, key_policy: "KeyPolicy", exchange: "Exchange",
              verdict: "Verdict", now: float) -> None:
        """Raise the Refusal of the first guardrail REQUEST (its VERDICT, already passed by the rules)
        breaks; otherwise charge its orders to every rate and budget that counts them."""
        label = key_policy.label
        frozen = self.freezes.find(bot=bot_name, key=label)
        shared = self.shared_freezes.current() if self.shared_freezes is not None else None
        if frozen is None and shared is not None:
            frozen = shared.find(bot=bot_name, key=label)
        if frozen is not None and not freeze.frozen_allows(verdict.view, verdict.facts):
            if shared is not None and shared.problem and frozen.reason == shared.problem:
                raise Refusal("frozen", f"{shared.problem}; orders and amends are refused (reads and cancels are "
                                        "still signed): retry once the database answers", "UNAVAILABLE")
            raise Refusal("frozen", f"{frozen.describe()}: orders and amends are refused (reads and cancels are "
                                    f"still signed); to lift it: `{frozen.undo()}`")
        orders = verdict.facts.orders if verdict.facts is not None else ()
        key_limits, bot_limits = key_policy.limits, (bot.limits if bot is not None else None)
        amends = verdict.facts.amends if verdict.facts is not None else ()
        if amends and key_limits.price_band_pct is not None:
            self._amends_in_band(label, key_limits.price_band_pct, exchange, verdict, amends)
        if not orders:
            return
        budgets = key_limits.budgets or (bot_limits is not None and bot_limits.budgets)
        if key_limits.needs_market or (budgets and any(_market_priced(o) for o in orders)):
            orders = self._against_market(label, key_limits, budgets, exchange, verdict, orders)
        self._order_rate(label, bot_name, key_limits, bot_limits, orders)
        self._charge(label, bot_name, key_limits, bot_limits, orders, now)
        self._patterns.note(label, bot_name, orders)

    def _against_market(self, label: str, limits: Limits, budgets: bool, exchange: "Exchange", verdict: "Verdict",
                        orders: tuple) -> tuple:
        """Thin markets, then price bands, against the ticker of the market each order goes to; and the
        orders again, each market order by quantity priced where it would start to fill (the best ask
        for a buy, the best bid for a sell: Ticker.fill_price), so that a budget counts it."""
        rule = ("thin-market" if limits.min_quote_volume_24h is not None
                else "price-band" if limits.price_band_pct is not None else "notional-budget")
        view = verdict.view
        market = _market_of(exchange, view)
        if market is None:
            if not limits.needs_market:
                raise Refusal(rule, f"a market order by quantity on key {label!r}, which has a notional budget, "
                                    f"and this version reads no {exchange.name} ticker to price it: send a limit "
                                    "price, or size the order in the quote asset")
            raise Refusal(rule, f"key {label!r} has {_market_settings(limits)}, but this version has no ticker "
                                f"source for {exchange.name} {view.path[:80] if view else ''}: "
                                "remove them from the key's policy to trade there")
        priced = []
        for order in orders:
            if not limits.needs_market and not _market_priced(order):
                priced.append(order)  # a budget alone reads the market only to price market orders
                continue
            if not order.symbol:
                raise Refusal(rule, f"an order without a readable symbol; key {label!r} checks orders against "
                                    "the market: send the symbol once")
            try:
                ticker = self.market.ticker(market, order.symbol)
            except NoTicker as exc:
                send = ("send a limit price, or size the order in the quote asset, or retry later"
                        if rule == "notional-budget" else "retry later")
                raise Refusal(rule, f"{exc}: orders on {order.symbol} that need the market are refused until the "
                                    f"agent can read it again ({send})") from None
            floor = limits.min_quote_volume_24h
            if floor is not None and (ticker.quote_volume_24h is None or ticker.quote_volume_24h < floor):
                raise Refusal("thin-market", f"{order.symbol} traded {_plain(ticker.quote_volume_24h or Decimal(0))} "
                                             f"in 24 h on {market}, under key {label!r}'s min_quote_volume_24h of "
                                             f"{_plain(floor)}: a market this thin is moved by the orders themselves")
            fill = None
            if order.price is None and order.order_type == "market":
                if order.side is None:
                    raise Refusal(rule, f"a market order on {order.symbol} whose side could not be read (field "
                                        f"'side'): key {label!r} prices market orders by the side of the book "
                                        "they take; send the side, or a limit order")
                fill = ticker.fill_price(order.side)
                if order.base_sized and order.quantity is not None:
                    order = replace(order, price=fill)
            band = limits.price_band_pct
            if band is not None:
                self._band(label, band, market, ticker.price, order, fill)
            priced.append(order)
        return tuple(priced)

    def _amends_in_band(self, label: str, band: Decimal, exchange: "Exchange", verdict: "Verdict",
                        amends: tuple) -> None:
        """The new price of each amend of the price only (RequestFacts.amends), held to the band exactly as a
        new order's limit price; where it cannot be read or checked, refused (fail closed)."""
        view = verdict.view
        market = _market_of(exchange, view)
        instead = "cancel the order and place a new one (its symbol, side and price are then checked)"
        if market is None:
            raise Refusal("price-band", f"key {label!r} has price_band_pct, but this version has no ticker source for "
                                        f"{exchange.name} {view.path[:80] if view else ''} to check an amend's new "
                                        f"price against: {instead}, or remove price_band_pct to trade there")
        for amend in amends:
            if not amend.symbol or amend.price is None:
                missing = " and ".join(n for n, v in (("symbol", amend.symbol), ("new price", amend.price)) if not v)
                raise Refusal("price-band", f"an amend of an order's price whose {missing} could not be read: key "
                                            f"{label!r} holds new prices to its price_band_pct; send the symbol and "
                                            f"a plain limit price with the amend, or {instead}")
            try:
                ticker = self.market.ticker(market, amend.symbol)
            except NoTicker as exc:
                raise Refusal("price-band", f"{exc}: amends on {amend.symbol} that need the market are refused until "
                                            "the agent can read it again (retry later)") from None
            self._band(label, band, market, ticker.price, amend, None, amend=True)

    @staticmethod
    def _band(label: str, band: Decimal, market: str, last: Decimal, order: Any, fill: Decimal | None,
              amend: bool = False) -> None:
        """A limit price, or where a market order would fill, against the last price."""
        price = order.price if fill is None else fill
        if price is None:
            raise Refusal("price-band", f"an order on {order.symbol} whose {_missing(order)} could not be read: "
                                        f"key {label!r} has price_band_pct, so send a limit order with its price "
                                        "and side, or a market order with its side")
        high, low = last * (1 + band / 100), last * (1 - band / 100)
        if order.side is None:  # inside the band either way, the side does not matter; outside, it decides
            if low <= price <= high:
                return
            what = "the new price of an amend" if amend else "the limit price of an order"
            send = ("amend within the band, or cancel the order and place a new one with its side" if amend
                    else "send the order's side")
            raise Refusal("price-band", f"{what} on {order.symbol}, {_plain(price)}, is more than {_plain(band)} % "
                                        f"from the last price {_plain(last)} on {market} (key {label!r}'s "
                                        f"price_band_pct: {_plain(low)} to {_plain(high)}), and it does not say "
                                        f"its side, so the band cannot tell a buy above it from a sell below it: "
                                        f"{send}")
        if (order.side == "buy" and price > high) or (order.side == "sell" and price < low):
            where = "above" if order.side == "buy" else "below"
            limit = high if order.side == "buy" else low
            what = (f"a {order.side} at {_plain(price)}" if fill is None else
                    f"a market {order.side}, which would fill from the best {'ask' if order.side == 'buy' else 'bid'} "
                    f"{_plain(price)},")
            raise Refusal("price-band", f"{what} on {order.symbol} is more than {_plain(band)} % {where} the last "
                                        f"price {_plain(last)} on {market}: key {label!r}'s price_band_pct; send a "
                                        f"limit order no {'higher' if where == 'above' else 'lower'} than {_plain(limit)}")

    def _stale(self, market: str, symbol: str, why: str) -> None:
        self._alert("ticker-stale", rule="price-band", symbol=symbol,
                    reason=f"the {market} ticker for {symbol} cannot be read ({why}): orders needing it are refused")

    def _order_rate(self, label: str, bot_name: str, key: Limits, bot: Limits | None, orders: tuple) -> None:
        takes: list[tuple[str, int, int, str]] = []  # (bucket, per minute, orders, who)
        if key.max_orders_per_minute is not None:
            takes.append((f"orders:key:{label}", key.max_orders_per_minute, len(orders), f"key {label!r}"))
        if key.max_orders_per_minute_per_symbol:
            for symbol, count in Counter((o.symbol or "") for o in orders).items():
                limit = key.symbol_rate(symbol) if symbol else min(key.max_orders_per_minute_per_symbol.values())
                if limit is not None:
                    takes.append((f"orders:key:{label}:{symbol}", limit, count,
                                  f"key {label!r} on {symbol or 'an order without a readable symbol'}"))
        if bot is not None and bot.max_orders_per_minute is not None:
            takes.append((f"orders:bot:{bot_name}", bot.max_orders_per_minute, len(orders), f"bot {bot_name!r}"))
        # Token buckets of PER_MINUTE orders refilling at PER_MINUTE/60 a second, shared by every worker;
        # taken all or none, so a request refused by one bucket spends nothing from the others.
        short = self._buckets.take_all([(bucket, n / 60, n, count) for bucket, n, count, _ in takes]) if takes else None
        if short is not None:
            _, per_minute, _, who = takes[short]
            raise Refusal("order-rate", f"{who} is over its {per_minute} orders per minute "
                                        "(max_orders_per_minute): slow down; this request was not signed",
                          RESOURCE_EXHAUSTED)

    def _charge(self, label: str, bot_name: str, key: Limits, bot: Limits | None, orders: tuple,
                now: float) -> None:
        if not (key.budgets or (bot is not None and bot.budgets)):
            return
        symbol_budgets = {o.symbol: key.symbol_budgets(o.symbol or "") for o in orders}
        total = Decimal(0)
        per_symbol: dict[str, Decimal] = {}
        for order in orders:
            notional = order.notional
            if notional is None:
                raise Refusal("notional-budget", _unreadable(label, order))
            if order.symbol is None and key.max_notional_per_symbol:
                raise Refusal("notional-budget", f"an order without a readable symbol: key {label!r} has "
                                                 "per-symbol budgets (max_notional_per_symbol); send the symbol once")
            total += notional
            if order.symbol is not None:
                per_symbol[order.symbol] = per_symbol.get(order.symbol, Decimal(0)) + notional
        charges = [Charge(f"key:{label}", f"key {label!r}", key.max_notional, total)]
        charges += [Charge(f"key:{label}:symbol:{s}", f"key {label!r} on {s}", symbol_budgets[s], amount)
                    for s, amount in per_symbol.items() if symbol_budgets[s]]
        if bot is not None:
            charges.append(Charge(f"bot:{bot_name}", f"bot {bot_name!r}", bot.max_notional, total))
        try:
            over = self._ledgers.charge(charges, now)
        except LedgerDamaged as exc:
            raise Refusal("notional-budget", str(exc)) from None
        except OSError as exc:
            raise Refusal("notional-budget", f"the notional ledgers cannot be written ({exc.strerror}): orders "
                                             "are refused while a budget cannot be kept") from None
        if over is not None:
            c, b = over.charge, over.budget
            raise Refusal("notional-budget", f"{c.describe} has used {_plain(over.used)} of its {b.window} notional "
                                             f"budget of {_plain(b.limit)}; this request adds {_plain(c.notional)}: "
                                             f"wait until earlier orders leave the {b.window} window, or send less")

    def used(self, scope: str, limits: Limits, now: float) -> dict[str, Decimal]:
        return self._ledgers.used(scope, limits.max_notional, now)

    def close(self) -> None:
        self._ledgers.close()
        if self.shared_freezes is not None:
            self.shared_freezes.close()


class OrderPatterns:
    """An alert (kind `order-pattern`, no refusal) when a key's order flow leaves its usual shape: a
    side it has not used, or an order far larger than its median (audited as `order.pattern`). A
    compromised bot's first orders are often both. Kept per process (each worker sees its share of the flow), in memory: a heuristic
    for a person to look at, not a limit."""

    WARM = 20  # orders seen before a key's flow counts as "usual"
    KEEP = 200  # recent order sizes the median is taken over
    FACTOR = 10  # an order this many times the median is "far above" it

    def __init__(self, alert: Callable[..., None], audit: Callable[..., bool]) -> None:
        self._alert, self._audit = alert, audit
        self._lock = threading.Lock()
        self._sides: dict[str, set[str]] = {}
        self._sizes: dict[str, deque[Decimal]] = {}
        self._seen: dict[str, int] = {}
        self._median: dict[str, Decimal] = {}  # recomputed every WARM orders: no sort on every order

    def note(self, label: str, bot: str, orders: tuple) -> None:
        unusual: list[str] = []
        with self._lock:
            if len(self._seen) > 10_000:  # bounded memory: start afresh
                self._sides.clear(), self._sizes.clear(), self._seen.clear(), self._median.clear()
            seen = self._seen.get(label, 0)
            sides = self._sides.setdefault(label, set())
            sizes = self._sizes.setdefault(label, deque(maxlen=self.KEEP))
            if sizes and (label not in self._median or seen % self.WARM == 0):
                self._median[label] = sorted(sizes)[len(sizes) // 2]
            median = self._median.get(label)
            for order in orders:
                if order.side and order.side not in sides and seen >= self.WARM:
                    unusual.append(f"a first {order.side} after {seen} orders")
                size = order.notional
                if size is not None and median and seen >= self.WARM and size > median * self.FACTOR:
                    unusual.append(f"an order of {_plain(size)} on {order.symbol}, over {self.FACTOR} times the "
                                   f"median {_plain(median)}")
                if order.side:
                    sides.add(order.side)
                if size is not None:
                    sizes.append(size)
                seen += 1
            self._seen[label] = seen
        if unusual:
            reason = f"key {label!r} signed {'; '.join(unusual[:3])}: its order flow changed shape"
            self._audit("order.pattern", bot=bot, key=label, reason=reason)
            self._alert("order-pattern", bot=bot, key=label, rule="order-pattern", reason=reason)


def _market_of(exchange: "Exchange", view: Any) -> str | None:
    """The ticker market a request's orders trade on: by path, and by the body's category (Bybit) or
    productType (Bitget futures) where one path serves several markets."""
    if view is None:
        return None
    fields = view.fields()
    return market_for(exchange.id, view.key, fields.text("category") or fields.text("productType"))


def _plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f")  # 2000, not 2E+3 or 2000.00


def _market_settings(limits: Limits) -> str:
    return " and ".join(name for name, value in (("price_band_pct", limits.price_band_pct),
                                                 ("min_quote_volume_24h", limits.min_quote_volume_24h))
                        if value is not None)


def _market_priced(order: Any) -> bool:
    """A market order by quantity: its notional is the quantity at the price the ticker gives."""
    return order.price is None and order.order_type == "market" and order.base_sized and order.quantity is not None


def _missing(order: Any) -> str:
    """The fields of ORDER the guardrails needed and could not read, for a person."""
    missing = [name for name, value in (("side", order.side), ("limit price", order.price),
                                         ("order type", order.order_type)) if value is None]
    if order.order_type == "market":
        missing.remove("limit price")  # a market order has none; it is priced by the ticker
    return " and ".join(missing) or "size"


def _unreadable(label: str, order: Any) -> str:
    what = (f"a {order.side} " if order.side else "an ") + f"order on {order.symbol or 'an unreadable symbol'}"
    if order.quantity is not None and order.price is None:
        if order.order_type == "market" and not order.base_sized:
            return (f"{what} is a market order sized in contracts or lots, which a ticker price does not turn into "
                    f"a notional for key {label!r}'s notional budget (max_notional): send a limit price, or size it "
                    "in the quote asset")
        return (f"{what} has a quantity but its {_missing(order)} could not be read, so its notional cannot be "
                f"counted against key {label!r}'s notional budget (max_notional): send a limit price (or a market "
                "order the agent can price: a plain market type with its side), or size it in the quote asset "
                "(quoteOrderQty, funds)")
    return (f"{what} has no size the budget can count (key {label!r} has max_notional): send a base quantity with "
            "a limit price, or a quote amount")
