"""Deribit (v2): JSON-RPC, methods named by the path or the body; GET requests write."""

from __future__ import annotations

from agent.exchanges.record import Rules
from signing_agent_client.request import COMMON_METHODS
from agent.rules.facts import OrderFacts
from agent.rules.forbidden import Reads, explicit
from agent.rules.orders import BASE, batch, fields_of, repriced, sized
from agent.rules.view import Fields, View, json_body

# Deribit's header signature covers "ts\nnonce\nMETHOD\nURI\nbody\n"; public/auth with
# grant_type=client_signature verifies an HMAC over "timestamp\nnonce\ndata" with `data` free text.
# With data = "METHOD\nURI\nbody\n" the two strings are one, so any signed request is also a login
# that returns an access token (and a refresh token) for everything the key may do, without the agent.
DERIBIT_LOGIN = ("every Deribit signature is also a public/auth client_signature login (the signed text, "
                 "with data = METHOD\\nURI\\nbody, is the login's): a bot holding one obtains an access "
                 "token that trades and withdraws without the agent; allow the session-token category only "
                 "for a bot you would trust with the key itself (docs/security-model.md)")

# Endpoints whose names carry no keyword, or a misleading one (path keys, fullmatch).
EXPLICIT = (
    explicit("block-trade", r"/api/v2/private/(approve|execute|verify|reject|simulate|invalidate)_block_trade\w*",
             "arranges a block trade with a chosen counterparty"),
    explicit("transfer", r"/api/v2/private/move_positions", "moves positions to another account"),
)


# -- orders ------------------------------------------------------------------------------------------


def amends(v: View) -> list[OrderFacts]:
    """private/edit with a price and no amount or contracts; an edit names the order, not its instrument."""
    names = {v.key.removeprefix("/api/v2/")} | set(v.rpc_methods)
    top = v.fields()
    if names & {"private/edit", "private/edit_by_label"} and top.has("price") \
            and not (top.has("amount") or top.has("contracts")):
        return [repriced(top.symbol("instrument_name"), top.get("price"))]
    return []


def orders(v: View) -> list[OrderFacts]:
    names = {v.key.removeprefix("/api/v2/")} | set(v.rpc_methods)
    top = v.fields()
    out: list[OrderFacts] = []
    if names & {"private/buy", "private/sell"}:
        out.append(_deribit_order(top))
    if names & {"private/edit", "private/edit_by_label"} and (top.has("amount") or top.has("contracts")):
        out.append(_deribit_order(top))
    if "private/mass_quote" in names:
        # Each quote is a bid and/or an ask on one instrument: one order each.
        for quote in batch(v, top, "quotes", array_body=False) or [{}]:
            q = fields_of(quote)
            sides = [side for side in ("bid", "ask") if q.has(side)]
            if not sides:
                out.append(OrderFacts(q.symbol("instrument_name"), None, None))
            for side in sides:
                out.append(OrderFacts(q.symbol("instrument_name"), Fields.of(q.get(side)).number("amount"), None))
    return out


def _deribit_order(f: Fields) -> OrderFacts:
    # 'contracts' may replace 'amount'; its unit differs, so only 'amount' is reported.
    return sized(f.symbol("instrument_name"), f.get("amount"), BASE)


RULES = Rules(
    path_bound=True, unbound_note=None,
    body_format=json_body, json_rpc="/api/v2", symbol_params=frozenset({"instrument_name"}),
    path_symbols=(), read_orders=orders, read_amends=amends, reads=Reads(get=False, paths=None),
    explicit=EXPLICIT, not_forbidden=None,
    param_rules=(), settings_rules=(), param_methods=None, methods=COMMON_METHODS,
    signature_is_login=DERIBIT_LOGIN,
)
