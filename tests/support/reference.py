"""A software Credential for checking schemes against ccxt and published examples.

Schemes are pure: they take a Credential. Here it is backed by Python's hmac
and `cryptography` with the secret in memory, which is what ccxt does, so a
scheme can be compared with ccxt byte for byte without a token. The token
path (custody) is checked separately against the same schemes end to end.
This is a reference implementation, not a stand-in for PKCS#11.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agent.exchanges import exchange_for
from agent.schemes import Environment


@dataclass
class SoftwareCredential:
    api_key: str
    secret: bytes = b""  # HMAC key bytes (already decoded, as the exchange defines the key)
    key_type: str = "hmac"
    private_key: object | None = None  # cryptography private key for asymmetric types
    passphrase: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    # Nonces handed out: by default strictly increasing from the floor; tests may pin them.
    last_nonce: int = 0
    floors: list[int] = field(default_factory=list)  # every floor nonce() was asked for, in order

    def option(self, name: str) -> str | None:
        return self.options.get(name)

    def mac(self, message: bytes, hash_name: str) -> bytes:
        assert self.key_type == "hmac"
        return hmac.new(self.secret, message, getattr(hashlib, hash_name)).digest()

    def sign(self, message: bytes) -> bytes:
        key = self.private_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        raise AssertionError(f"no private key for {self.key_type}")

    def nonce(self, floor: int) -> int:
        self.floors.append(floor)
        self.last_nonce = max(floor, self.last_nonce + 1)
        return self.last_nonce


def hmac_credential(exchange_id: str, api_key: str, secret: str, passphrase: str | None = None, **options: str):
    """The credential the agent would hold after `keys import` of SECRET for EXCHANGE_ID."""
    exchange = exchange_for(exchange_id)
    key_bytes = exchange.hmac_key(secret.encode())
    resolved = exchange.resolve_options(options)
    if exchange.passphrase_rule(resolved) == "hmac-sha256-base64":
        assert passphrase is not None
        passphrase = base64.b64encode(hmac.new(key_bytes, passphrase.encode(), hashlib.sha256).digest()).decode()
    return SoftwareCredential(api_key=api_key, secret=key_bytes, passphrase=passphrase, options=resolved)


def asymmetric_credential(api_key: str, private_pem: str | bytes, passphrase: str | None = None):
    key = serialization.load_pem_private_key(
        private_pem.encode() if isinstance(private_pem, str) else private_pem, password=None
    )
    key_type = {ed25519.Ed25519PrivateKey: "ed25519", rsa.RSAPrivateKey: "rsa", ec.EllipticCurvePrivateKey: "ec-p256"}
    kind = next(v for k, v in key_type.items() if isinstance(key, k))
    return SoftwareCredential(api_key=api_key, key_type=kind, private_key=key, passphrase=passphrase)


def fixed_environment(now_ms: int, random_seed: bytes = b"seed") -> Environment:
    """A clock pinned at NOW_MS and deterministic 'random' bytes, for byte-for-byte comparisons."""
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(random_seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return Environment(now_ms=now_ms, random_bytes=random_bytes)


def recording(cred):
    """CRED, also keeping every message it MACs or signs (in the list returned with it)."""
    messages: list[bytes] = []
    mac, sign = cred.mac, cred.sign

    def recording_mac(message: bytes, hash_name: str) -> bytes:
        messages.append(message)
        return mac(message, hash_name)

    def recording_sign(message: bytes) -> bytes:
        messages.append(message)
        return sign(message)

    cred.mac, cred.sign = recording_mac, recording_sign
    return cred, messages


def ccxt_binance(secret: str, api_key: str, now_ms: int):
    """ccxt's own Binance signer with its clock pinned: what the agent's answer must equal."""
    import ccxt

    ex = ccxt.binance({"apiKey": api_key, "secret": secret, "options": {"recvWindow": None}})
    ex.nonce = lambda: now_ms
    return ex
