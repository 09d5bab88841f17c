"""Exchange signing schemes: pure functions, no I/O, no token access.

A scheme turns a structured request into the exact bytes to sign, asks the
MAC function it is given (the token, in the agent; plain hmac in reference
tests) for the MAC, and places the encoded result into the request to send.
The agent owns the clock: schemes receive `now_ms` and never read a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.schemes.request import Body, RawBody, RequestInvalid, SignedRequest, UnsignedRequest

# (message, hash name) -> MAC bytes
MacFunction = Callable[[bytes, str], bytes]


class Scheme(Protocol):
    def sign(self, request: UnsignedRequest, *, api_key: str, now_ms: int, mac: MacFunction) -> SignedRequest: ...


@dataclass(frozen=True)
class ExchangeInfo:
    """An exchange id as operators type it (ccxt's ids), and the scheme that signs for it."""

    exchange: str
    scheme: Scheme


def _registry() -> dict[str, ExchangeInfo]:
    from agent.schemes import binance

    return {
        # One key signs spot and USD-M futures alike; binanceusdm is ccxt's id for the latter.
        "binance": ExchangeInfo("binance", binance.SCHEME),
        "binanceusdm": ExchangeInfo("binanceusdm", binance.SCHEME),
        "binanceus": ExchangeInfo("binanceus", binance.SCHEME),
    }


EXCHANGES: dict[str, ExchangeInfo] = _registry()


class UnknownExchange(ValueError):
    pass


def exchange_info(exchange: str) -> ExchangeInfo:
    try:
        return EXCHANGES[exchange]
    except KeyError:
        raise UnknownExchange(
            f"unknown exchange {exchange!r}; supported: {', '.join(sorted(EXCHANGES))}"
        ) from None


__all__ = [
    "Body",
    "EXCHANGES",
    "ExchangeInfo",
    "MacFunction",
    "RawBody",
    "RequestInvalid",
    "Scheme",
    "SignedRequest",
    "UnknownExchange",
    "UnsignedRequest",
    "exchange_info",
]
