"""Exchange rules: what a signing request IS, for the policy engine. Pure: no I/O, no token.

    facts = inspect(EXCHANGES["binance"], UnsignedRequest("POST", "/api/v3/order", query=(("symbol", "BTCUSDT"), ...)))
    facts.violations       # every default-deny category ("withdrawal", "transfer", ...) with its evidence
    facts.forbidden        # the first of them, or None
    facts.forbidden_why    # its evidence, for the person reading the refusal
    facts.symbols          # every symbol the request names
    facts.orders           # the orders it places or amends, with their sizes

Default deny (CATEGORIES; agent/rules/forbidden.py has the full list and the reasons): withdrawals
and withdrawal addresses, transfers of every kind, sub-accounts, API keys and other credentials
(Kraken's WebSocket token: "session-token"), margin borrowing and repayment, loans,
earn/staking/savings, converts and OTC, payments (Pay, gift cards, P2P, fiat), block trades and RFQ,
security settings (and, on Binance, Bybit and MEXC, account and position settings such as leverage:
"account-settings"), and Deribit JSON-RPC bodies that name another method than their path. Deposit
addresses are allowed (they move nothing). Reads of forbidden families (withdrawal history...) are
allowed; API-key reads are not.

Per exchange, what these engines read is the exchange's record (agent.exchanges: symbol parameters,
order reader, explicit patterns, parameter rules, reads, body format, path binding); the engines
here are shared and take the record.

Path binding (a record's `path_bound`): Binance (all four), Bybit and MEXC sign only the parameters, so a
signature is valid for any path; HTX signs the path but not a POST body, so the body the policy
read is not bound to the signature. For those, parameter rules refuse the parameters of forbidden
endpoints on any path, and orders are recognised by their parameters, whatever the path.

Orders (agent/rules/orders.py): sizes are read as the exchange reads them, including batches (JSON
arrays, Binance's batchOrders, Kraken's orders, Bitfinex's multi ops...). A size that is not a plain
decimal number, or is given under two spellings of its name, is None: the engine refuses a capped
order without a readable quantity.

`inspect` raises nothing but agent.schemes.RequestInvalid, and that only for a body the exchange's
scheme would refuse to sign as unparseable (JSON that is not one object or array, or names a member
twice; a form body that is not strict ASCII name=value text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.rules.facts import OrderFacts, RequestFacts
from agent.rules.forbidden import CATEGORIES, violations
from agent.rules.orders import orders, symbols
from agent.rules.view import View, view
from signing_agent_client.request import UnsignedRequest

if TYPE_CHECKING:
    from agent.exchanges.record import Exchange


def inspect(exchange: "Exchange", request: UnsignedRequest) -> RequestFacts:
    """The facts of REQUEST for EXCHANGE (a record of agent.exchanges)."""
    return facts_of(view(exchange, request))


def facts_of(v: View) -> RequestFacts:
    """The facts of a request already read as a View (callers that also need its parameters parse once)."""
    return RequestFacts(
        violations=violations(v),
        symbols=symbols(v),
        orders=orders(v),
        amends=tuple(v.exchange.rules.read_amends(v)),
    )


__all__ = ["CATEGORIES", "OrderFacts", "RequestFacts", "facts_of", "inspect"]
