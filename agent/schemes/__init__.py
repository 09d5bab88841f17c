"""Exchange signing schemes: pure functions, no I/O, no token access.

A scheme turns a structured request into the exact bytes to sign, asks the
key (a `Credential`: the token, in the agent) for the MAC or signature, and
places the encoded result into the request to send, with the exchange's
headers. The agent owns the clock and the nonces: schemes receive them.

Each scheme module declares its exchanges as `Exchange` records: which key
types they accept, which may be generated in the token, whether a passphrase
goes with the key, and how the secret is decoded before import.
"""

from __future__ import annotations

import importlib

from agent.schemes.context import KEY_TYPES, Credential, Environment, HashName, b64, b64url
from agent.schemes.request import Body, RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import Exchange, PassphraseRule, Scheme, UnknownExchange, UnsupportedKey


# The scheme modules; each declares EXCHANGES: tuple[Exchange, ...].
_MODULES = (
    "binance", "okx", "kucoin", "bitget", "kraken", "bitfinex", "gemini", "bybit", "mexc",
    "coinbase", "bitstamp", "cryptocom", "deribit", "gate", "htx",
)


def _registry() -> dict[str, Exchange]:
    registry: dict[str, Exchange] = {}
    for name in _MODULES:
        for exchange in importlib.import_module(f"agent.schemes.{name}").EXCHANGES:
            assert exchange.id not in registry, exchange.id
            assert set(exchange.key_types) <= set(KEY_TYPES) and set(exchange.generated) <= set(exchange.key_types)
            registry[exchange.id] = exchange
    return registry


EXCHANGES: dict[str, Exchange] = _registry()


def exchange_for(exchange_id: str) -> Exchange:
    try:
        return EXCHANGES[exchange_id]
    except KeyError:
        raise UnknownExchange(
            f"unknown exchange {exchange_id!r}; supported: {', '.join(sorted(EXCHANGES))}"
        ) from None


def scheme_for(exchange_id: str) -> Scheme:
    return exchange_for(exchange_id).scheme


__all__ = [
    "Body",
    "Credential",
    "EXCHANGES",
    "Environment",
    "Exchange",
    "HashName",
    "KEY_TYPES",
    "PassphraseRule",
    "RawBody",
    "RequestInvalid",
    "Scheme",
    "SignedRequest",
    "UnknownExchange",
    "UnsignedRequest",
    "UnsupportedKey",
    "b64",
    "b64url",
    "exchange_for",
    "scheme_for",
]
