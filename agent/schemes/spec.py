"""The scheme interface and the errors a scheme or an exchange's record raises.

The record each exchange declares (key types, rules, template...) is agent.exchanges.record.Exchange.
"""

from __future__ import annotations

from typing import Literal, Protocol

from agent.schemes.context import Credential, Environment
from signing_agent_client.request import SignedRequest, UnsignedRequest


class Scheme(Protocol):
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest: ...


class UnknownExchange(ValueError):
    pass


class UnsupportedKey(ValueError):
    """The exchange does not take this key type, passphrase or option; the message says what it takes."""


PassphraseRule = Literal["clear", "hmac-sha256-base64"]
