"""The shared basis of exchange signing schemes: pure, no I/O, no token access.

A scheme (agent/exchanges/<family>/scheme.py) turns a structured request into the exact bytes to
sign, asks the key (a `Credential`: the token, in the agent) for the MAC or signature, and places
the encoded result into the request to send, with the exchange's headers. The agent owns the clock
and the nonces: schemes receive them. This package holds what every scheme shares: the request
types (request.py), what a scheme is given (context.py), the encodings (encoding.py) and the
interface and errors (spec.py). Which exchanges there are, and what is known about each, is the
registry's: agent.exchanges.
"""

from __future__ import annotations

from agent.schemes.context import KEY_TYPES, Credential, Environment, HashName, b64, b64url
from signing_agent_client.request import Body, RawBody, RequestInvalid, SignedRequest, UnsignedRequest
from agent.schemes.spec import PassphraseRule, Scheme, UnknownExchange, UnsupportedKey

__all__ = [
    "Body",
    "Credential",
    "Environment",
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
]
