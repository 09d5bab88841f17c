"""Exchange signing schemes: pure functions, no I/O, no token access.

A scheme turns a structured request into the exact bytes to sign, asks the
MAC function it is given (the token, in the agent; plain hmac in reference
tests) for the MAC, and places the encoded result into the request to send.
The agent owns the clock: schemes receive `now_ms` and never read a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agent.schemes.request import Body, RawBody, RequestInvalid, SignedRequest, UnsignedRequest

# (message, hash name) -> MAC bytes
MacFunction = Callable[[bytes, str], bytes]


class Scheme(Protocol):
    def sign(self, request: UnsignedRequest, *, api_key: str, now_ms: int, mac: MacFunction) -> SignedRequest: ...


def _registry() -> dict[str, Scheme]:
    from agent.schemes import binance

    return {
        # Exchange ids as operators type them (ccxt's ids). One Binance key signs spot and
        # USD-M futures alike; binanceusdm is ccxt's id for the latter.
        "binance": binance.SCHEME,
        "binanceusdm": binance.SCHEME,
        "binanceus": binance.SCHEME,
    }


EXCHANGES: dict[str, Scheme] = _registry()


class UnknownExchange(ValueError):
    pass


def scheme_for(exchange: str) -> Scheme:
    try:
        return EXCHANGES[exchange]
    except KeyError:
        raise UnknownExchange(
            f"unknown exchange {exchange!r}; supported: {', '.join(sorted(EXCHANGES))}"
        ) from None


__all__ = [
    "Body",
    "EXCHANGES",
    "MacFunction",
    "RawBody",
    "RequestInvalid",
    "Scheme",
    "SignedRequest",
    "UnknownExchange",
    "UnsignedRequest",
    "scheme_for",
]
