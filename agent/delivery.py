"""Delivery: whether a key's requests are handed to the bot signed (Sign), placed by the agent (Send), or both.

    [keys.htx-main]
    delivery = "send"            # "send" | "sign" | "both"; absent: "sign" (see DEFAULT_DELIVERY)
    send_to = "production"       # "production" | "testnet" | "https://host[:port]" (tests, a relay)

A signature handed to a bot is only as narrow as what it covers. Where an exchange does not sign a
part of the request that a policy restricts, the restriction binds nothing once the bot holds the
signature: the bot can pair it with another body. Those keys must be sent by the agent, so that the
exchange receives the bytes the policy read. `unbound_restrictions` says, for one key, which of its
restrictions its exchange leaves unsigned; a policy that would hand out such signatures (`sign` or
`both`) is refused by `policy check`, at start and on reload (agent.guard), and a request that
reaches the agent anyway (a key imported after the policy was loaded, a `[keys."*"]` table) is
refused by rule `delivery`.

This module is pure: it knows exchange ids and key types, not the token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SEND, SIGN, BOTH = "send", "sign", "both"
DELIVERIES = (SEND, SIGN, BOTH)
# Absent `delivery`: existing policies keep working as they did (their bots call Sign), and the
# agent opens no connection to an exchange that the operator did not ask for (an agent host may
# have no route out). Templates write "send".
DEFAULT_DELIVERY = SIGN
PRODUCTION, TESTNET = "production", "testnet"


@dataclass(frozen=True)
class Unbound:
    """A part of an exchange's requests its signature does not cover."""

    part: str  # as an operator reads it
    why: str  # what the signature covers instead
    key_types: frozenset[str] | None  # the key types concerned; None: every key type


# Exchange id -> what its signatures leave out, for the restrictions a policy places on bodies and
# symbols. Only parts that carry what `symbols`, `max_order` or `max_order_quote` read belong here.
UNBOUND: Mapping[str, Unbound] = {
    "htx": Unbound(
        part="the POST body (an order's symbol, amount and price)",
        why="HTX Signature V2 covers the method, host, path and query only",
        key_types=None,
    ),
    "coinbase": Unbound(
        part="the body and the query (an order's product, size and price)",
        why="a CDP key's JWT carries only 'METHOD host/path' and stays valid for 120 s",
        key_types=frozenset({"ec-p256", "ed25519"}),
    ),
}


def restrictions(key_policy) -> tuple[str, ...]:
    """The settings of KEY_POLICY (agent.policy.KeyPolicy) that read a request's body or symbols."""
    found = []
    if key_policy.symbols is not None:
        found.append("symbols")
    if key_policy.max_order:
        found.append("max_order")
    if key_policy.max_order_quote:
        found.append("max_order_quote")
    return tuple(found)


def unbound_problem(key_policy, exchange_id: str, key_type: str) -> str | None:
    """Why KEY_POLICY cannot hand out signatures for a key of EXCHANGE_ID and KEY_TYPE (None: it can)."""
    if key_policy.delivery == SEND:
        return None
    unbound = UNBOUND.get(exchange_id)
    # An unknown KEY_TYPE ("": `policy check --exchange` without the token) is taken as concerned.
    if unbound is None or (unbound.key_types is not None and key_type and key_type not in unbound.key_types):
        return None
    restricted = restrictions(key_policy)
    if not restricted:
        return None
    return (f"key {key_policy.label!r} ({exchange_id}, {key_type or 'key type unknown'}) restricts {', '.join(restricted)}, but "
            f"{unbound.why}: {unbound.part} is not signed, so a bot holding the signature could send any other. "
            f"Set delivery = \"send\" in [keys.{_toml_key(key_policy.label)}] (the agent then places the request "
            f"itself; bots call Send), or remove {', '.join(restricted)} from it")


def check_policy(policy, keys: Iterable[tuple[str, str, str]]) -> list[str]:
    """Every problem of POLICY (agent.policy.Policy) for KEYS, (label, exchange id, key type) of the
    keys in the token: a key without its own table is checked against the `[keys."*"]` table."""
    problems = []
    for label, exchange_id, key_type in keys:
        key_policy = policy.for_key(label)
        if key_policy is None:
            continue
        problem = unbound_problem(key_policy, exchange_id, key_type)
        if problem is not None:
            if label not in policy.keys:
                problem += ' (this key takes its policy from [keys."*"])'
            problems.append(problem)
    return problems


def _toml_key(label: str) -> str:
    from agent.toml_schema import toml_key

    return toml_key(label)
