"""Provisioning: an exchange's rules (its record in agent.exchanges) applied to what an operator hands over.

The CLI reads secrets; this module checks them against the exchange (key type,
options, passphrase, Kraken's base64, PEM formats) and hands custody exactly
what the token must store. Nothing is written unless everything is valid.
The token side of the same writes is agent/custody/provision.py, which knows no exchange.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.custody import InvalidKeyMaterial, KeyExists, KeyInfo, Keyring, validate_secret
from agent.custody.wrapped import Migration
from agent.exchanges import Exchange, exchange_for
from agent.names import validate_api_key
from agent.schemes import UnknownExchange, UnsupportedKey

PRIVATE_KEY_CLASSES = {"ed25519": ed25519.Ed25519PrivateKey, "rsa": rsa.RSAPrivateKey, "ec-p256": ec.EllipticCurvePrivateKey}


def exchange_rules(exchange_id: str) -> Exchange:
    try:
        return exchange_for(exchange_id)
    except UnknownExchange as exc:
        raise InvalidKeyMaterial(str(exc)) from None


def _check(exchange: Exchange, key_type: str, options: dict[str, str], passphrase: str | None,
           *, generated: bool = False, registering: bool = True) -> tuple[dict[str, str], bool]:
    """Resolved options, and whether the passphrase is stored HMAC-signed (KuCoin v2/v3)."""
    try:
        exchange.check_key_type(key_type, generated=generated)
        resolved = exchange.resolve_options(options)
    except UnsupportedKey as exc:
        raise InvalidKeyMaterial(str(exc)) from None
    rule = exchange.passphrase_rule(resolved)
    if registering:
        if rule is not None and passphrase is None:
            raise InvalidKeyMaterial(f"{exchange.id} keys come with a passphrase: give it after the secret")
        if rule is None and passphrase is not None:
            raise InvalidKeyMaterial(f"{exchange.id} keys have no passphrase; give the secret alone")
    return resolved, rule == "hmac-sha256-base64"


def parse_private_key(data: bytes, key_type: str) -> Any:
    """A private key from PEM (PKCS#8, SEC1 or PKCS#1), or Coinbase's base64 Ed25519 secret."""
    text = bytes(data).strip()
    key: Any
    if text.startswith(b"-----BEGIN") and b"\\n" in text:
        text = text.replace(b"\\n", b"\n")  # copied out of Coinbase's JSON key file, escapes and all
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except TypeError:
            raise InvalidKeyMaterial("the PEM key is encrypted; decrypt it first (openssl pkey -in k.pem)") from None
        except (ValueError, UnsupportedAlgorithm):
            raise InvalidKeyMaterial("the PEM block is not a private key this agent can read") from None
    elif key_type == "ed25519":
        # Coinbase CDP Ed25519 secrets: base64 of seed || public key (64 bytes), or of the seed alone.
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidKeyMaterial("an Ed25519 secret is PEM, or base64 of 32 or 64 bytes") from None
        if len(raw) not in (32, 64):
            raise InvalidKeyMaterial(f"an Ed25519 secret decodes to 32 or 64 bytes, not {len(raw)}")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        if len(raw) == 64:
            public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if public != raw[32:]:
                raise InvalidKeyMaterial("the Ed25519 secret's public half does not match its seed")
    else:
        raise InvalidKeyMaterial(f"a {key_type} private key is given as a PEM block (-----BEGIN ...)")
    if not isinstance(key, PRIVATE_KEY_CLASSES[key_type]):
        raise InvalidKeyMaterial(f"the private key is not a {key_type} key")
    return key


def import_key(
    keyring: Keyring,
    *,
    label: str,
    exchange_id: str,
    api_key: str,
    key_type: str,
    secret: bytes | bytearray,
    passphrase: str | None = None,
    options: dict[str, str] | None = None,
    wrapped: bool = False,
) -> KeyInfo:
    """Import a secret as a token object, or (WRAPPED, HMAC only) as a blob in the key store."""
    exchange = exchange_rules(exchange_id)
    validate_api_key(api_key, InvalidKeyMaterial)
    resolved, sign_passphrase = _check(exchange, key_type, options or {}, passphrase)
    if wrapped and key_type != "hmac":
        raise InvalidKeyMaterial("only HMAC secrets can be wrapped for now; import this key without --wrapped")
    if not wrapped and keyring.store is not None and keyring.store.get(label) is not None:
        raise KeyExists(f"a key labelled {label!r} exists in the key store; revoke it first or choose another label")
    if key_type == "hmac":
        validate_secret(bytes(secret), api_key=api_key)
        try:
            key = exchange.hmac_key(bytes(secret))
        except UnsupportedKey as exc:
            raise InvalidKeyMaterial(str(exc)) from None
        return keyring.import_hmac_key(
            label=label, exchange=exchange.id, api_key=api_key, key=key, options=resolved,
            passphrase=passphrase, sign_passphrase=sign_passphrase, wrapped=wrapped,
        )
    private_key = parse_private_key(secret, key_type)
    return keyring.import_private_key(
        label=label, exchange=exchange.id, api_key=api_key, private_key=private_key, options=resolved,
        passphrase=passphrase,
    )


def generate_key(
    keyring: Keyring, *, label: str, exchange_id: str, key_type: str, bits: int = 2048,
    options: dict[str, str] | None = None,
) -> tuple[KeyInfo, Any]:
    exchange = exchange_rules(exchange_id)
    resolved, _ = _check(exchange, key_type, options or {}, None, generated=True, registering=False)
    return keyring.generate_key(label=label, exchange=exchange.id, key_type=key_type, bits=bits, options=resolved)


def register(keyring: Keyring, *, label: str, api_key: str, passphrase: str | None = None) -> KeyInfo:
    info = keyring.lookup(label).info  # one scan for this label, not a listing of the token
    exchange = exchange_rules(info.exchange)
    _, sign_passphrase = _check(exchange, info.key_type, info.options, passphrase)
    return keyring.register(label, api_key=api_key, passphrase=passphrase, sign_passphrase=sign_passphrase)


def migrate_to_store(keyring: Keyring, *, dry_run: bool = False, **hooks: Any) -> list[Migration]:
    """`store migrate`: the token's HMAC keys into the key store, with the exchange's word on passphrases."""

    def clear_passphrase(info: KeyInfo) -> bool:
        try:
            return exchange_rules(info.exchange).passphrase_rule(info.options) == "clear"
        except InvalidKeyMaterial:
            return True  # an exchange this version does not know: keep its key where it is

    return keyring.migrate_token_keys(clear_passphrase=clear_passphrase, dry_run=dry_run, **hooks)


def public_key_pem(public_key: Any) -> str:
    """The public key as exchanges take it when registering a self-generated key (PEM SubjectPublicKeyInfo)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
