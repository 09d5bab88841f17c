"""What a scheme is given besides the request: the key's operations, and the agent's clock.

Schemes are pure: they never touch the token, a file or a clock themselves.
In the agent, `Credential` is backed by the token (custody) and the nonce
store; in reference tests by Python's hmac and `cryptography`, which is how a
scheme is checked against ccxt without any token at all.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

HashName = Literal["sha256", "sha384", "sha512"]
# Key types, as stored in key metadata and typed by operators.
KeyType = Literal["hmac", "ed25519", "rsa", "ec-p256"]
KEY_TYPES: tuple[str, ...] = ("hmac", "ed25519", "rsa", "ec-p256")


class Credential(Protocol):
    """One exchange key, as a scheme may use it: identifiers and in-token operations."""

    @property
    def api_key(self) -> str:
        """The exchange's public key id (sent in headers); not a secret."""

    @property
    def key_type(self) -> str:
        """One of KEY_TYPES."""

    @property
    def passphrase(self) -> str | None:
        """The value for the exchange's passphrase header, if the key has one.

        OKX, Bitget and KuCoin v1 keys: the passphrase itself (sent in clear).
        KuCoin v2/v3 keys: base64(HMAC-SHA256(secret, passphrase)), computed in the token at import.
        """

    def option(self, name: str) -> str | None:
        """A per-key option recorded at import (for example KuCoin's key_version)."""

    def mac(self, message: bytes, hash_name: HashName) -> bytes:
        """HMAC of MESSAGE under the key (hmac keys only)."""

    def sign(self, message: bytes) -> bytes:
        """Signature of MESSAGE (asymmetric keys only).

        ed25519: pure Ed25519 over the whole message (64 bytes).
        rsa:     RSASSA-PKCS1-v1_5 with SHA-256.
        ec-p256: ECDSA P-256 over SHA-256(MESSAGE), raw r||s (64 bytes), as JWT ES256 wants.
        """

    def nonce(self, floor: int) -> int:
        """A nonce for this key: at least FLOOR, and greater than every nonce issued before
        for this key (across restarts and crashes). Schemes pass their clock in the unit the
        exchange expects (milliseconds or microseconds) as FLOOR."""


@dataclass(frozen=True)
class Environment:
    """The agent's clock and randomness for one request."""

    now_ms: int
    random_bytes: Callable[[int], bytes]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    """base64url without padding (JWT, Deribit)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
