"""The record each scheme module declares per exchange, and the scheme interface."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agent.schemes.context import Credential, Environment
from agent.schemes.request import SignedRequest, UnsignedRequest


class Scheme(Protocol):
    def sign(self, request: UnsignedRequest, key: Credential, env: Environment) -> SignedRequest: ...


class UnknownExchange(ValueError):
    pass


class UnsupportedKey(ValueError):
    """The exchange does not take this key type, passphrase or option; the message says what it takes."""


PassphraseRule = Literal["clear", "hmac-sha256-base64"]


@dataclass(frozen=True)
class Exchange:
    id: str  # as operators type it: ccxt's id where ccxt has the exchange
    scheme: Scheme
    key_types: tuple[str, ...] = ("hmac",)  # accepted for import; the first is the default
    generated: tuple[str, ...] = ()  # key types the exchange registers by public key (made in the token)
    passphrase: bool = False  # the exchange's key comes with a passphrase
    secret_encoding: Literal["text", "base64"] = "text"  # Kraken's secret is base64 of the key
    # Per-key options recorded at import: name -> allowed values, the first being the default.
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ccxt_id: str | None = None  # ccxt's class, when it has one (reference tests and the bridge)
    docs: str = ""  # where its scheme is described (shared/docs/exchange-signing.md section)

    def passphrase_rule(self, options: Mapping[str, str]) -> PassphraseRule | None:
        """How the passphrase is sent: in clear, or (KuCoin key versions 2 and 3) HMAC-signed by the secret."""
        if not self.passphrase:
            return None
        if self.id.startswith("kucoin") and options.get("key_version", "2") != "1":
            return "hmac-sha256-base64"
        return "clear"

    def resolve_options(self, given: Mapping[str, str]) -> dict[str, str]:
        """GIVEN checked against the allowed options, with defaults filled in."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise UnsupportedKey(f"{self.id} keys have no option {unknown[0]!r} (options: {allowed})")
        resolved = {}
        for name, allowed_values in self.options.items():
            value = given.get(name, allowed_values[0])
            if value not in allowed_values:
                raise UnsupportedKey(f"{self.id} option {name} must be one of {', '.join(allowed_values)}")
            resolved[name] = value
        return resolved

    def check_key_type(self, key_type: str, *, generated: bool = False) -> None:
        allowed = self.generated if generated else self.key_types
        if key_type not in allowed:
            how = "generated in the token" if generated else "imported"
            takes = ", ".join(allowed) if allowed else "none"
            raise UnsupportedKey(f"{self.id} does not take {key_type} keys {how} (it takes: {takes})")

    def hmac_key(self, secret: bytes) -> bytes:
        """The HMAC key bytes for SECRET as the exchange shows it (Kraken: base64-decoded)."""
        if self.secret_encoding == "base64":
            try:
                key = base64.b64decode(secret, validate=True)
            except (binascii.Error, ValueError):
                raise UnsupportedKey(f"a {self.id} secret is base64 text; this one does not decode") from None
            if len(key) < 32:  # Kraken's are 64 bytes: a short one is a paste error, not a key
                raise UnsupportedKey(f"a {self.id} secret decodes to {len(key)} bytes; expected 64")
            return key
        return secret
