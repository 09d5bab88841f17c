"""Our objects on the token: what they hold, how they are encoded, the templates that create them.

A key is two or three objects sharing one label:
  * the signing object (a secret key for HMAC, a private key otherwise), whose CKA_ID holds
    the key's metadata (exchange, type, creation date, options) as JSON marked as ours;
  * for asymmetric keys, the public half, with the same metadata;
  * a private data object holding the exchange account (API key id, passphrase).
Nothing here talks to a session: these are values, read and written by the keyring and
provisioning (and by bench/deploy.py, which fills tokens with exactly these objects).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from agent.custody.errors import CustodyError, InvalidKeyMaterial

# SoftHSM2 (and other modules) refuse HMAC keys shorter than the digest:
# 32 bytes for SHA-256, 48 for SHA-384, 64 for SHA-512. RFC 2104 pads any key
# shorter than the hash's block size with zeros, so K and K || 0x00.. give the
# same MAC while both are within the block. 64 bytes is the SHA-256 block size
# and below the SHA-384/512 block size (128), so padding short secrets to 64
# bytes keeps one token object correct for all three hashes. Longer secrets are
# stored as they are: padding past a block would change the MAC.
HMAC_KEY_PAD_TO = 64

# Written into CKA_ID of our objects so that other applications' objects on
# the same token are never listed, used or destroyed by us.
METADATA_APP = "signing-agent"
METADATA_VERSION = 2  # v1 (HMAC only, api_key in the metadata) is still read
FINGERPRINT_MESSAGE = b"signing-agent key fingerprint v1"
# The exchange account a key belongs to (API key id, passphrase) lives in a private
# data object beside the key: a key generated in the token gets its API key id only
# after its public key is registered with the exchange, and key objects are not modifiable.
ACCOUNT_APP = "signing-agent/account"
PRIVATE_KEY_TYPES = ("ed25519", "rsa", "ec-p256")
ED25519_PARAMS = encode_named_curve_parameters("1.3.101.112")
P256_PARAMS = encode_named_curve_parameters("1.2.840.10045.3.1.7")
RSA_BITS = (2048, 3072, 4096)


@dataclass(frozen=True)
class KeyInfo:
    """What the agent may tell about a key: everything but the key (and never the passphrase)."""

    label: str
    exchange: str
    api_key: str  # "" until the account is registered (keys generated in the token)
    key_type: str  # hmac | ed25519 | rsa | ec-p256
    created: str  # ISO 8601, UTC
    # hmac: truncated HMAC of a fixed message under the key. Others: truncated SHA-256 of the
    # public key (SubjectPublicKeyInfo DER). Identifies the key; reveals nothing.
    fingerprint: str
    options: dict[str, str] = field(default_factory=dict)
    has_passphrase: bool = False
    # "token": the key is an object in the token; "wrapped": a blob in the key store, wrapped under the
    # token's master key and unwrapped into a session object when used (agent.custody.wrapped)
    storage: str = "token"

    @property
    def registered(self) -> bool:
        return bool(self.api_key)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "registered": self.registered}


def new_info(label: str, exchange: str, api_key: str, key_type: str, fingerprint: str,
             options: dict[str, str], passphrase: str | None) -> KeyInfo:
    """The KeyInfo of a key about to be written, created now."""
    return KeyInfo(
        label=label, exchange=exchange, api_key=api_key, key_type=key_type,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        fingerprint=fingerprint, options=dict(options), has_passphrase=passphrase is not None,
    )


def fingerprint_of(mac_of_message: bytes) -> str:
    return mac_of_message[:16].hex()


def public_fingerprint(public_der: bytes) -> str:
    return hashlib.sha256(public_der).hexdigest()[:32]


def hmac_key_material(secret: bytes) -> bytearray:
    """The bytes to store for an HMAC secret: zero-padded to 64 bytes when shorter (see above)."""
    material = bytearray(secret)
    if len(material) < HMAC_KEY_PAD_TO:
        material.extend(b"\x00" * (HMAC_KEY_PAD_TO - len(material)))
    return material


def encode_metadata(info: KeyInfo) -> bytes:
    doc: dict[str, Any] = {
        "app": METADATA_APP,
        "v": METADATA_VERSION,
        "exchange": info.exchange,
        "key_type": info.key_type,
        "created": info.created,
        "options": info.options,
    }
    if info.key_type == "hmac":  # asymmetric keys: computed from the public half when read
        doc["fingerprint"] = info.fingerprint
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_metadata(label: str, raw: bytes) -> KeyInfo | None:
    """KeyInfo (without its account) from CKA_ID, or None when the object is not one of ours."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("app") != METADATA_APP or doc.get("v") not in (1, METADATA_VERSION):
        return None
    try:
        options = doc.get("options", {})
        return KeyInfo(
            label=label,
            exchange=str(doc["exchange"]),
            api_key=str(doc.get("api_key", "")),  # v1 kept it here
            key_type=str(doc["key_type"]),
            created=str(doc["created"]),
            fingerprint=str(doc.get("fingerprint", "")),
            options={str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else {},
        )
    except KeyError:
        return None


def encode_account(api_key: str, passphrase: str | None) -> bytes:
    doc: dict[str, str] = {"api_key": api_key}
    if passphrase is not None:
        doc["passphrase"] = passphrase
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_account(raw: bytes) -> tuple[str, str | None] | None:
    try:
        doc = json.loads(raw)
        return str(doc["api_key"]), (str(doc["passphrase"]) if "passphrase" in doc else None)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None


# Every key object: persistent, private (invisible without login), and usable to sign only.
KEY_COMMON: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
    Attribute.DESTROYABLE: True,
}
# ...and for the secret halves: sensitive and never extractable, wrapped, derived from or decrypting.
SECRET_HALF: dict[Attribute, Any] = {
    **KEY_COMMON,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
# Private keys also refuse C_SignRecover. (CKA_ALLOWED_MECHANISMS would pin each key to its one
# mechanism, but python-pkcs11 0.10 crashes packing it; the agent only calls the key's own mechanism.)
PRIVATE_HALF: dict[Attribute, Any] = {**SECRET_HALF, Attribute.SIGN_RECOVER: False}


def hmac_key_template(label: str, metadata: bytes, material: bytearray) -> dict[Attribute, Any]:
    """A persistent, private, sensitive, non-extractable key that can sign and do nothing else."""
    return {
        **SECRET_HALF,
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.LABEL: label,
        Attribute.ID: metadata,
        Attribute.VALUE: bytes(material),
    }


def account_template(label: str, value: bytes) -> dict[Attribute, Any]:
    return {
        Attribute.CLASS: ObjectClass.DATA,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.DESTROYABLE: True,
        Attribute.LABEL: label,
        Attribute.APPLICATION: ACCOUNT_APP,
        Attribute.VALUE: value,
    }



def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def private_key_templates(
    key: Any, label: str, metadata: bytes
) -> tuple[str, dict[Attribute, Any], dict[Attribute, Any]]:
    """(key type, private template, public template) for a `cryptography` private key."""
    common = {Attribute.LABEL: label, Attribute.ID: metadata}
    public = {**KEY_COMMON, **common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.VERIFY: True,
              Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.DERIVE: False}
    private = {**PRIVATE_HALF, **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        point = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for t in (private, public):
            t.update({Attribute.KEY_TYPE: KeyType.EC_EDWARDS, Attribute.EC_PARAMS: ED25519_PARAMS})
        private[Attribute.VALUE] = seed
        public[Attribute.EC_POINT] = b"\x04\x20" + point  # DER OCTET STRING, as the module returns it
        return "ed25519", private, public
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKeyMaterial(f"EC keys must be on P-256 (secp256r1), not {key.curve.name}")
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        for t in (private, public):
            t.update({Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: P256_PARAMS})
        private[Attribute.VALUE] = key.private_numbers().private_value.to_bytes(32, "big")
        public[Attribute.EC_POINT] = b"\x04" + bytes([len(point)]) + point
        return "ec-p256", private, public
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size not in RSA_BITS:
            raise InvalidKeyMaterial(f"RSA keys must be {', '.join(map(str, RSA_BITS))} bits, not {key.key_size}")
        n = key.private_numbers()
        for t in (private, public):
            t.update({Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: _int_bytes(n.public_numbers.n),
                      Attribute.PUBLIC_EXPONENT: _int_bytes(n.public_numbers.e)})
        private.update({
            Attribute.PRIVATE_EXPONENT: _int_bytes(n.d), Attribute.PRIME_1: _int_bytes(n.p),
            Attribute.PRIME_2: _int_bytes(n.q), Attribute.EXPONENT_1: _int_bytes(n.dmp1),
            Attribute.EXPONENT_2: _int_bytes(n.dmq1), Attribute.COEFFICIENT: _int_bytes(n.iqmp),
        })
        return "rsa", private, public
    raise InvalidKeyMaterial("the private key must be Ed25519, EC P-256 or RSA")


def public_key_of(obj: Any, key_type: str) -> Any:
    """A `cryptography` public key from a token public-key object (its attributes are public)."""
    if key_type == "ed25519":
        point = bytes(obj[Attribute.EC_POINT])
        return ed25519.Ed25519PublicKey.from_public_bytes(point[2:] if len(point) == 34 else point)
    if key_type == "ec-p256":
        point = bytes(obj[Attribute.EC_POINT])
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point[2:] if len(point) == 67 else point)
    if key_type == "rsa":
        n = int.from_bytes(bytes(obj[Attribute.MODULUS]), "big")
        e = int.from_bytes(bytes(obj[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise CustodyError(f"keys of type {key_type!r} have no public key")


def public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_signature(public_key: Any, key_type: str, signature: bytes, message: bytes) -> bool:
    """Check a signature made by Keyring.sign (self-tests after import and generation)."""
    from cryptography.exceptions import InvalidSignature

    try:
        if key_type == "ed25519":
            public_key.verify(signature, message)
        elif key_type == "rsa":
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
