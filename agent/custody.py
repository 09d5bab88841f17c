"""Token custody: exchange secrets as non-extractable PKCS#11 objects, MACs computed inside.

This is the only module that talks to the token. Everything it hands out is a
MAC or a description of a key (KeyInfo), never key material.

Two facts shape it:

* python-pkcs11 initialises the module with C_Initialize(NULL), so the module
  does no locking of its own: two threads inside it at once fail (SoftHSM2:
  CKR_GENERAL_ERROR). Every token call here holds `Keyring._lock`.
* Finding an object by label makes the module scan every object (SoftHSM2:
  about 0.4 s per search with 10,000 keys), while a MAC costs microseconds. So
  a key's handle is looked up once and cached, and the listing the agent makes
  at start fills the cache with every key: requests never search the token for
  a key it held then. Searching happens only for a label not seen yet (one
  search, by label alone) and at most every MISSING_TTL_SECONDS for a label
  known missing. Revocation stays immediate because a destroyed object's
  handle fails at the next use (CKR_OBJECT_HANDLE_INVALID, also across
  processes), which evicts the entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err
from pkcs11.util.ec import encode_named_curve_parameters

from agent.config import TokenConfig
from agent.names import validate_api_key, validate_label

HashName = Literal["sha256", "sha384", "sha512"]
HMAC_MECHANISMS: dict[str, Mechanism] = {
    "sha256": Mechanism.SHA256_HMAC,
    "sha384": Mechanism.SHA384_HMAC,
    "sha512": Mechanism.SHA512_HMAC,
}

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
PASSPHRASE_MAX_LEN = 128

SECRET_MIN_LEN = 8
SECRET_MAX_LEN = 1024
# How long "no such key" is believed without asking the token again. A key imported
# meanwhile becomes usable within this time; lookups of unknown labels cost nothing.
MISSING_TTL_SECONDS = 0.5
MISSING_CACHE_SIZE = 4096

# Errors after which the session (or the module) must be reopened.
_SESSION_LOST = (
    p11err.SessionHandleInvalid,
    p11err.SessionClosed,
    p11err.DeviceRemoved,
    p11err.DeviceError,
    p11err.DeviceMemory,
    p11err.TokenNotPresent,
    p11err.TokenNotRecognised,
    p11err.GeneralError,
    p11err.UserNotLoggedIn,
    p11err.FunctionFailed,
)
_HANDLE_GONE = (p11err.ObjectHandleInvalid, p11err.KeyHandleInvalid)


class CustodyError(Exception):
    """Base class. Messages name what went wrong and never contain key material."""


class TokenUnavailable(CustodyError):
    """The module or token cannot be reached right now; a later call may succeed."""


class TokenLoginError(CustodyError):
    """The token refused the PIN (wrong, locked, expired); retrying will not help."""


class KeyNotFound(CustodyError):
    """No key with that label (never imported, or revoked)."""


class KeyRevoked(KeyNotFound):
    """The cached handle died since lookup: revoked, or the session was reopened. Look it up again."""


class KeyExists(CustodyError):
    """A key with that label exists already; labels are never overwritten."""


class MechanismUnsupported(CustodyError):
    """The token lacks a mechanism this key type needs; the message names it and what to do instead."""


class InvalidKeyMaterial(CustodyError, ValueError):
    """The label, API key id or secret given to an import is malformed; nothing was written."""


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

    @property
    def registered(self) -> bool:
        return bool(self.api_key)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "registered": self.registered}


@dataclass(frozen=True)
class KeyEntry:
    info: KeyInfo
    handle: Any  # pkcs11 SecretKey or PrivateKey; only Keyring calls into it
    generation: int  # the session it was found in: handles die with their module initialisation
    passphrase: str | None = field(default=None, repr=False)  # the passphrase header's value


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


def validate_secret(secret: bytes, *, api_key: str) -> None:
    """Exchange secrets are printable ASCII (Kraken's base64 text too, before decoding)."""
    if not secret:
        raise InvalidKeyMaterial("the secret is empty")
    if not SECRET_MIN_LEN <= len(secret) <= SECRET_MAX_LEN:
        raise InvalidKeyMaterial(
            f"the secret is too short or too long: exchange secrets are {SECRET_MIN_LEN} to {SECRET_MAX_LEN} characters"
        )
    if any(b < 0x21 or b > 0x7E for b in secret):
        raise InvalidKeyMaterial(
            "the secret contains spaces, control or non-ASCII characters; paste it exactly as the exchange shows it"
        )
    if hmac.compare_digest(secret, api_key.encode()):
        raise InvalidKeyMaterial("the secret equals the API key id: the secret was probably pasted in its place")


def validate_passphrase(passphrase: str) -> None:
    if not passphrase or len(passphrase) > PASSPHRASE_MAX_LEN or not passphrase.isprintable():
        raise InvalidKeyMaterial(
            f"the passphrase must be 1-{PASSPHRASE_MAX_LEN} printable characters (as set at the exchange)"
        )


def _encode_metadata(info: KeyInfo) -> bytes:
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


def _decode_metadata(label: str, raw: bytes) -> KeyInfo | None:
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


def _encode_account(api_key: str, passphrase: str | None) -> bytes:
    doc: dict[str, str] = {"api_key": api_key}
    if passphrase is not None:
        doc["passphrase"] = passphrase
    return json.dumps(doc, separators=(",", ":")).encode()


def _decode_account(raw: bytes) -> tuple[str, str | None] | None:
    try:
        doc = json.loads(raw)
        return str(doc["api_key"]), (str(doc["passphrase"]) if "passphrase" in doc else None)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return None


# Every key object: persistent, private (invisible without login), and usable to sign only.
_KEY_COMMON: dict[Attribute, Any] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
    Attribute.DESTROYABLE: True,
}
# ...and for the secret halves: sensitive and never extractable, wrapped, derived from or decrypting.
_SECRET_HALF: dict[Attribute, Any] = {
    **_KEY_COMMON,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}


# PKCS#11 v2.40 attributes. Modules implementing v2.20 (opencryptoki 3.8) refuse any template naming
# them (CKR_ATTRIBUTE_TYPE_INVALID), so they are left out there: such a token lets any object be copied
# and destroyed, and a copy of a key keeps it sensitive and non-extractable.
V2_40_ATTRIBUTES = (Attribute.COPYABLE, Attribute.DESTROYABLE)
# PKCS#1 v1.5 signing over SHA-256 where the module lacks CKM_SHA256_RSA_PKCS: CKM_RSA_PKCS over
# DigestInfo(SHA-256) || hash gives the identical signature (the hash involves no secret).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# What each key type needs from the token, and what to do when it is missing.
_KEY_TYPE_ADVICE = {
    "ed25519": "use an RSA key where the exchange takes one, or a token with Ed25519 (SoftHSM2 2.6 or later)",
    "ec-p256": "use a token with ECDSA on P-256 (SoftHSM2 has it)",
    "rsa": "use a token with RSA PKCS#1 v1.5 signatures",
}

# Private keys also refuse C_SignRecover. (CKA_ALLOWED_MECHANISMS would pin each key to its one
# mechanism, but python-pkcs11 0.10 crashes packing it; the agent only calls the key's own mechanism.)
_PRIVATE_HALF: dict[Attribute, Any] = {**_SECRET_HALF, Attribute.SIGN_RECOVER: False}


def _hmac_key_template(label: str, metadata: bytes, material: bytearray) -> dict[Attribute, Any]:
    """A persistent, private, sensitive, non-extractable key that can sign and do nothing else."""
    return {
        **_SECRET_HALF,
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.LABEL: label,
        Attribute.ID: metadata,
        Attribute.VALUE: bytes(material),
    }


def _account_template(label: str, value: bytes) -> dict[Attribute, Any]:
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


def _private_key_templates(
    key: Any, label: str, metadata: bytes
) -> tuple[str, dict[Attribute, Any], dict[Attribute, Any]]:
    """(key type, private template, public template) for a `cryptography` private key."""
    common = {Attribute.LABEL: label, Attribute.ID: metadata}
    public = {**_KEY_COMMON, **common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.VERIFY: True,
              Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.DERIVE: False}
    private = {**_PRIVATE_HALF, **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
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


def _public_key_of(obj: Any, key_type: str) -> Any:
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


def load_module(config: TokenConfig) -> Any:
    """Load the PKCS#11 module named in the config (once per process)."""
    # Module-specific environment (SOFTHSM2_CONF...) must be set before the module loads.
    for name, value in config.env.items():
        os.environ[name] = value
    if not config.module.exists():
        raise TokenUnavailable(f"PKCS#11 module {config.module} does not exist (is the HSM's library installed?)")
    try:
        return pkcs11.lib(str(config.module))
    except p11err.PKCS11Error as exc:
        hint = ""
        if "opencryptoki" in config.module.name:
            # Its library needs the slot daemon; without it C_Initialize says CKR_HOST_MEMORY.
            hint = " (opencryptoki needs its slot daemon: is pkcsslotd running? Start it as root: `pkcsslotd`)"
        detail = str(exc) or f"the module failed to initialise ({type(exc).__name__})"
        raise TokenUnavailable(f"cannot load PKCS#11 module {config.module}: {detail}{hint}") from None


class Keyring:
    """Keys in one token, used through one logged-in session, one call at a time."""

    def __init__(self, config: TokenConfig) -> None:
        self._config = config
        self._pin = config.read_pin()
        self._lock = threading.Lock()
        self._lib: Any = None
        self._session: Any = None
        self._cache: dict[str, KeyEntry] = {}
        # Labels just found missing, with the monotonic time until which that answer holds:
        # a flood of unknown labels must not make every request scan the token.
        self._missing: dict[str, float] = {}
        # Keys generated but not registered yet, with the time until which that answer holds.
        self._pending: dict[str, tuple[KeyEntry, float]] = {}
        self._reinitialize = False
        self._generation = 0
        self._closed = False
        self._mechanisms: frozenset[Any] | None = None  # the token's, read at login
        self._omit: tuple[Attribute, ...] = ()  # attributes the module does not know (V2_40_ATTRIBUTES)

    # -- session ---------------------------------------------------------------

    @classmethod
    def open(cls, config: TokenConfig) -> "Keyring":
        """Load the module and log in; raises TokenLoginError or TokenUnavailable with a clear message."""
        keyring = cls(config)
        with keyring._lock:
            keyring._ensure_session()
        return keyring

    def _ensure_session(self) -> Any:
        if self._session is not None:
            return self._session
        if self._closed:
            raise TokenUnavailable("the agent is shutting down")
        if self._lib is None:
            self._lib = load_module(self._config)
        elif self._reinitialize:
            # After a device loss the module keeps a dead view of the token (SoftHSM2: the slot
            # list fails with CKR_GENERAL_ERROR even once the token is back): start it afresh.
            try:
                self._lib.reinitialize()
            except p11err.PKCS11Error as exc:
                raise TokenUnavailable(f"cannot reinitialise module {self._config.module} ({type(exc).__name__})") from None
        label = self._config.label
        try:
            token = self._lib.get_token(token_label=label)
        except p11err.NoSuchToken:
            raise TokenUnavailable(
                f"no token labelled {label!r} in module {self._config.module}: check [token] label; if the "
                "token existed, its files may be damaged (SoftHSM2 rewrites token.object at every login: "
                "restore it from a backup before creating anything); a new dev token: `make token`"
            ) from None
        except p11err.MultipleTokensReturned:
            raise TokenUnavailable(f"more than one token is labelled {label!r}; labels must be unique") from None
        except _SESSION_LOST as exc:
            raise TokenUnavailable(f"token {label!r} is unreachable ({type(exc).__name__})") from None
        try:
            self._session = token.open(rw=True, user_pin=self._pin)
        except p11err.PinIncorrect:
            raise TokenLoginError(f"token {label!r} rejected the PIN (wrong PIN; check the configured PIN source)") from None
        except p11err.PinLocked:
            raise TokenLoginError(f"the user PIN of token {label!r} is locked; the security officer must reset it") from None
        except p11err.PinExpired:
            raise TokenLoginError(f"the user PIN of token {label!r} has expired; set a new one") from None
        except (p11err.PinLenRange, p11err.PinInvalid):
            raise TokenLoginError(f"token {label!r} rejected the PIN as malformed (length or characters)") from None
        except p11err.UserPinNotInitialized:
            raise TokenLoginError(f"token {label!r} has no user PIN set; initialise it first") from None
        except _SESSION_LOST as exc:
            raise TokenUnavailable(f"cannot open a session on token {label!r} ({type(exc).__name__})") from None
        # Only now: until a session is open, every attempt starts the module afresh. A module that
        # initialised while the token was missing keeps that view, and would never see it return.
        self._reinitialize = False
        try:
            self._mechanisms = frozenset(token.slot.get_mechanisms())
        except p11err.PKCS11Error:
            self._mechanisms = None  # unknown: every mechanism is tried, and the token's refusal reported
        self._omit = () if self._lib.cryptoki_version >= (2, 40) else V2_40_ATTRIBUTES
        self._generation += 1
        self._cache.clear()
        self._missing.clear()
        self._pending.clear()
        return self._session

    def _lose_session(self) -> None:
        """Forget the session after a device error; the next call reinitialises the module and logs in again."""
        self._session = None
        self._reinitialize = True
        self._generation += 1
        self._cache.clear()
        self._missing.clear()
        self._pending.clear()

    def _token_present(self) -> bool:
        """Ask the module afresh whether our token is there (C_GetSlotList, C_GetTokenInfo).

        A vanished token and a missing key look alike to C_FindObjects (both find
        nothing), so every "not found" is confirmed here before it is believed.
        """
        try:
            return any(
                slot.get_token().label == self._config.label for slot in self._lib.get_slots(token_present=True)
            )
        except p11err.PKCS11Error:
            return False

    def _not_found(self, error: KeyNotFound) -> KeyNotFound:
        """ERROR if the token is healthy; otherwise drop the session and raise TokenUnavailable."""
        if self._token_present():
            return error
        self._lose_session()
        raise TokenUnavailable(f"token {self._config.label!r} is unreachable (not present in the module)")

    @property
    def label(self) -> str:
        return self._config.label

    def probe(self) -> bool:
        """Does the token answer now? Logs in again if it can: the agent recovers by itself.

        Cheap (C_GetSlotList, C_GetTokenInfo, C_GenerateRandom), so health checks can call it
        twice a second; it never scans objects.
        """
        with self._lock:
            try:
                session = self._ensure_session()
            except CustodyError:  # unreachable, or a PIN it refuses: not serving either way
                return False
            try:
                session.generate_random(64)
            except p11err.PKCS11Error:
                self._lose_session()
                return False
            if not self._token_present():
                self._lose_session()
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._session is not None:
                try:
                    self._session.close()
                except p11err.PKCS11Error:
                    pass
                self._session = None
            self._cache.clear()

    def __enter__(self) -> "Keyring":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------

    @staticmethod
    def _objects_by_class(session: Any, label: str | None) -> dict[Any, list[Any]]:
        """Our candidate objects (accounts, public keys, secret and private keys), by class.

        Every search costs a scan of the whole token, so a label is found with one search
        by label alone, then sorted here; a full listing searches once per class instead,
        which leaves other applications' objects in the module.
        """
        classes = (ObjectClass.DATA, ObjectClass.PUBLIC_KEY, ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
        by_class: dict[Any, list[Any]] = {cls: [] for cls in classes}
        if label is None:
            for cls in classes:
                template: dict[Attribute, Any] = {Attribute.CLASS: cls}
                if cls == ObjectClass.DATA:
                    template[Attribute.APPLICATION] = ACCOUNT_APP
                by_class[cls] = list(session.get_objects(template))
            return by_class
        for obj in session.get_objects({Attribute.LABEL: label}):
            cls = obj[Attribute.CLASS]
            if cls in by_class and (cls != ObjectClass.DATA or obj[Attribute.APPLICATION] == ACCOUNT_APP):
                by_class[cls].append(obj)
        return by_class

    def _ours(self, session: Any, label: str | None = None) -> list[tuple[KeyInfo, Any, str | None]]:
        """(info with its account, signing object, passphrase) for each of our keys (labelled LABEL)."""
        objects = self._objects_by_class(session, label)
        accounts: dict[str, tuple[str, str | None]] = {}
        for obj in objects[ObjectClass.DATA]:
            account = _decode_account(bytes(obj[Attribute.VALUE]))
            if account is not None:
                accounts[obj[Attribute.LABEL]] = account
        fingerprints: dict[str, str] = {}
        for obj in objects[ObjectClass.PUBLIC_KEY]:
            info = _decode_metadata(obj[Attribute.LABEL], bytes(obj[Attribute.ID]))
            if info is not None and info.key_type in PRIVATE_KEY_TYPES:
                try:
                    fingerprints[info.label] = public_fingerprint(public_der(_public_key_of(obj, info.key_type)))
                except ValueError:
                    fingerprints[info.label] = "unreadable public key"
        found = []
        for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
            for obj in objects[cls]:
                info = _decode_metadata(obj[Attribute.LABEL], bytes(obj[Attribute.ID]))
                if info is None:
                    continue
                api_key, passphrase = accounts.get(info.label, (info.api_key, None))
                info = replace(info, api_key=api_key, has_passphrase=passphrase is not None,
                               fingerprint=info.fingerprint or fingerprints.get(info.label, "missing public key"))
                found.append((info, obj, passphrase))
        return found

    def _call(self, fn: Any) -> Any:
        """Run FN(session) under the lock, turning device errors into TokenUnavailable."""
        with self._lock:
            session = self._ensure_session()
            try:
                return fn(session)
            except _SESSION_LOST as exc:
                self._lose_session()
                raise TokenUnavailable(f"token {self._config.label!r} is unreachable ({type(exc).__name__})") from None
            except p11err.PKCS11Error as exc:
                if type(exc) is p11err.PKCS11Error:
                    # python-pkcs11 raises the bare base class for CKR_CRYPTOKI_NOT_INITIALIZED (the
                    # module was finalized under us) and the few codes it has no class for: start afresh.
                    self._lose_session()
                    raise TokenUnavailable(f"token {self._config.label!r} is unreachable (module not initialised)") from None
                # Anything else the module refuses (a mechanism it lacks, a read-only token...):
                # name it, so an operator can act, rather than let it surface as a crash.
                raise CustodyError(f"token {self._config.label!r} refused the operation ({type(exc).__name__})") from None

    def _fit(self, template: dict[Attribute, Any]) -> dict[Attribute, Any]:
        """TEMPLATE without the attributes this module does not know."""
        return {k: v for k, v in template.items() if k not in self._omit}

    def _create(self, session: Any, template: dict[Attribute, Any]) -> Any:
        return session.create_object(self._fit(template))

    def _require(self, mechanism: Mechanism, what: str, advice: str) -> None:
        """Raise MechanismUnsupported, naming the mechanism, if the token does not list it."""
        if self._mechanisms is not None and mechanism not in self._mechanisms:
            raise MechanismUnsupported(
                f"token {self._config.label!r} does not support {what} (CKM_{mechanism.name}): {advice}"
            )

    def _signer(self, key_type: str) -> tuple[Mechanism, Any]:
        """(mechanism, message -> data to sign) for KEY_TYPE on this token, or MechanismUnsupported."""
        advice = _KEY_TYPE_ADVICE.get(key_type, "")
        if key_type == "ed25519":
            self._require(Mechanism.EDDSA, "Ed25519 signatures", advice)
            return Mechanism.EDDSA, lambda m: m
        if key_type == "ec-p256":
            self._require(Mechanism.ECDSA, "ECDSA signatures", advice)
            return Mechanism.ECDSA, lambda m: hashlib.sha256(m).digest()
        if key_type == "rsa":
            if self._mechanisms is None or Mechanism.SHA256_RSA_PKCS in self._mechanisms:
                return Mechanism.SHA256_RSA_PKCS, lambda m: m
            self._require(Mechanism.RSA_PKCS, "RSA PKCS#1 v1.5 signatures", advice)
            return Mechanism.RSA_PKCS, lambda m: SHA256_DIGEST_INFO + hashlib.sha256(m).digest()
        raise CustodyError(f"keys of type {key_type!r} make no signatures")

    def list_keys(self) -> list[KeyInfo]:
        """Every key of ours in the token, by label. Also refills the handle cache (see _index)."""

        def listing(session: Any) -> list[tuple[KeyInfo, Any, str | None]]:
            found = self._ours(session)
            self._index(found)
            return found

        return sorted((info for info, _, _ in self._call(listing)), key=lambda i: i.label)

    def _index(self, found: list[tuple[KeyInfo, Any, str | None]]) -> None:
        """Replace the handle cache with every registered key of a full listing (under the lock).

        The agent lists the token once at start, so from then on a request for any key the
        token held scans nothing, however many keys there are. Keys revoked since drop out;
        labels held twice are left to lookup, which refuses them.
        """
        counts: dict[str, int] = {}
        for info, _, _ in found:
            counts[info.label] = counts.get(info.label, 0) + 1
        fresh = {
            info.label: KeyEntry(info=info, handle=handle, generation=self._generation, passphrase=passphrase)
            for info, handle, passphrase in found
            if info.registered and counts[info.label] == 1
        }
        self._cache = fresh  # one assignment: lock-free readers see the old index or the new one
        for label in fresh:
            self._missing.pop(label, None)

    def lookup(self, label: str) -> KeyEntry:
        """The key labelled LABEL, from the cache when possible (the hot path scans nothing)."""
        entry = self._cache.get(label)  # dict reads are atomic; entries are immutable
        if entry is not None:
            return entry  # the hot path: no token call, whatever the key count
        not_found = KeyNotFound(f"no key labelled {label!r} (never imported, or revoked)")
        if self._missing.get(label, 0.0) > time.monotonic():
            raise not_found
        pending = self._pending.get(label)
        if pending is not None and pending[1] > time.monotonic() and pending[0].generation == self._generation:
            return pending[0]

        def find(session: Any) -> KeyEntry:
            entry = self._cache.get(label)
            if entry is not None:
                return entry
            found = self._ours(session, label)
            if not found:
                error = self._not_found(not_found)
                if len(self._missing) >= MISSING_CACHE_SIZE:
                    self._missing.clear()
                self._missing[label] = time.monotonic() + MISSING_TTL_SECONDS
                raise error
            if len(found) > 1:
                raise CustodyError(f"{len(found)} keys are labelled {label!r}; revoke and import again")
            info, handle, passphrase = found[0]
            entry = KeyEntry(info=info, handle=handle, generation=self._generation, passphrase=passphrase)
            if info.registered:
                self._cache[label] = entry
            else:  # looked up again once registered (at most MISSING_TTL_SECONDS later)
                if len(self._pending) >= MISSING_CACHE_SIZE:
                    self._pending.clear()
                self._pending[label] = (entry, time.monotonic() + MISSING_TTL_SECONDS)
            return entry

        return self._call(find)

    def _use(self, entry: KeyEntry, operation: Any) -> Any:
        """Run OPERATION(handle) under the lock; a dead handle evicts the entry (revoked, or new session)."""

        def use(session: Any) -> Any:
            if entry.generation != self._generation:
                # Found before the module was reinitialised: the handle means nothing now.
                raise KeyRevoked(f"key {entry.info.label!r} must be looked up again")
            try:
                return bytes(operation(entry.handle))
            except _HANDLE_GONE:
                # Destroyed (revoked) since we cached it, possibly by another process.
                if self._cache.get(entry.info.label) is entry:
                    del self._cache[entry.info.label]
                raise self._not_found(KeyRevoked(f"key {entry.info.label!r} was revoked")) from None

        return self._call(use)

    def hmac(self, entry: KeyEntry, message: bytes, hash_name: HashName) -> bytes:
        """HMAC of MESSAGE under the key, computed inside the token."""
        if entry.info.key_type != "hmac":
            raise CustodyError(f"key {entry.info.label!r} is an {entry.info.key_type} key, not an HMAC key")
        mechanism = HMAC_MECHANISMS[hash_name]
        self._require(mechanism, f"HMAC-{hash_name.upper()}", "this exchange's requests need it; use a token with it")
        return self._use(entry, lambda handle: handle.sign(message, mechanism=mechanism))

    def sign(self, entry: KeyEntry, message: bytes) -> bytes:
        """Signature of MESSAGE by the private key, computed inside the token.

        ed25519: pure EdDSA over the whole message. rsa: PKCS#1 v1.5 with SHA-256.
        ec-p256: ECDSA over SHA-256(MESSAGE) (hashed here: it involves no secret), raw r||s.
        """
        key_type = entry.info.key_type
        if key_type not in PRIVATE_KEY_TYPES:
            raise CustodyError(f"key {entry.info.label!r} is an HMAC key; it makes MACs, not signatures")
        mechanism, prepare = self._signer(key_type)
        data = prepare(message)
        return self._use(entry, lambda handle: handle.sign(data, mechanism=mechanism))

    def public_key(self, label: str) -> Any:
        """The public half of an asymmetric key, as a `cryptography` public key."""

        def read(session: Any) -> Any:
            found = self._ours(session, label)
            if not found:
                raise self._not_found(KeyNotFound(f"no key labelled {label!r}"))
            info = found[0][0]
            if info.key_type == "hmac":
                raise CustodyError(f"key {label!r} is an HMAC key; it has no public key")
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label}):
                if _decode_metadata(label, bytes(obj[Attribute.ID])) is not None:
                    return _public_key_of(obj, info.key_type)
            raise CustodyError(f"the public half of key {label!r} is missing from the token")

        return self._call(read)

    # -- provisioning ------------------------------------------------------------

    @staticmethod
    def _new_info(label: str, exchange: str, api_key: str, key_type: str, fingerprint: str,
                  options: dict[str, str], passphrase: str | None) -> KeyInfo:
        return KeyInfo(
            label=label, exchange=exchange, api_key=api_key, key_type=key_type,
            created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            fingerprint=fingerprint, options=dict(options), has_passphrase=passphrase is not None,
        )

    @staticmethod
    def _label_free(session: Any, label: str) -> None:
        """Refuse a label that names a key or another application's object; remove what an
        interrupted import of ours left (an account or public key without its signing key, which
        imports write last)."""
        objects = list(session.get_objects({Attribute.LABEL: label}))
        for obj in objects:
            cls = obj[Attribute.CLASS]
            leftover = (obj[Attribute.APPLICATION] == ACCOUNT_APP if cls == ObjectClass.DATA else
                        cls == ObjectClass.PUBLIC_KEY and _decode_metadata(label, bytes(obj[Attribute.ID])) is not None)
            if not leftover or any(o[Attribute.CLASS] in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY)
                                   for o in objects):
                what = {ObjectClass.DATA: "a data object", ObjectClass.PUBLIC_KEY: "a public key"}.get(cls, "a key")
                raise KeyExists(f"{what} labelled {label!r} exists on the token; revoke it first or choose another label")
        for obj in objects:
            obj.destroy()

    def _only_one(self, session: Any, label: str, accounts: int = 1) -> None:
        # Two provisionings racing for one label (of any key type): both see two, both back out.
        # (One may also have removed the other's account as a leftover: that one sees none.)
        found = session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label,
                                     Attribute.APPLICATION: ACCOUNT_APP})
        if len(self._ours(session, label)) != 1 or len(list(found)) != accounts:
            raise KeyExists(f"another import of {label!r} ran at the same time; nothing was kept")

    def _provision(self, build: Any, label: str) -> KeyInfo:
        """Run BUILD(session, created) under the lock; on any failure destroy every object it created.

        So a refused or failed provisioning leaves nothing behind (a crash in the middle can
        leave objects written before the signing key, which is written last: no key, and removed
        by the next provisioning of the label).
        """

        def run(session: Any) -> KeyInfo:
            created: list[Any] = []
            try:
                info = build(session, created)
            except BaseException:
                for obj in reversed(created):
                    try:
                        obj.destroy()
                    except p11err.PKCS11Error:
                        pass
                raise
            self._missing.pop(label, None)
            self._cache.pop(label, None)
            self._pending.pop(label, None)
            return info

        return self._call(run)

    def import_hmac_key(
        self,
        *,
        label: str,
        exchange: str,
        api_key: str,
        key: bytes | bytearray,
        options: dict[str, str] | None = None,
        passphrase: str | None = None,
        sign_passphrase: bool = False,
    ) -> KeyInfo:
        """Store KEY (HMAC key bytes) as a new non-extractable key, with its account.

        SIGN_PASSPHRASE (KuCoin v2/v3): store base64(HMAC-SHA256(key, passphrase)), computed in
        the token, instead of the passphrase. Writes nothing unless everything is valid.
        """
        validate_label(label, InvalidKeyMaterial)
        validate_api_key(api_key, InvalidKeyMaterial)
        if not key:
            raise InvalidKeyMaterial("the HMAC key is empty")
        if passphrase is not None:
            validate_passphrase(passphrase)
        expected_fp = fingerprint_of(hmac.new(bytes(key), FINGERPRINT_MESSAGE, hashlib.sha256).digest())
        info = self._new_info(label, exchange, api_key, "hmac", expected_fp, options or {}, passphrase)
        material = hmac_key_material(key)

        header_value = passphrase
        if passphrase is not None and sign_passphrase:  # checked against the token's own MAC below
            header_value = base64.b64encode(hmac.new(bytes(key), passphrase.encode(), hashlib.sha256).digest()).decode()

        def build(session: Any, created: list[Any]) -> KeyInfo:
            self._require(Mechanism.SHA256_HMAC, "HMAC-SHA256", "the import's self-test needs it; use a token with it")
            self._label_free(session, label)
            # The account first, the key last: a kill in between leaves no key (see _label_free).
            created.append(self._create(session, _account_template(label, _encode_account(api_key, header_value))))
            try:
                obj = self._create(session, _hmac_key_template(label, _encode_metadata(info), material))
            except p11err.KeySizeRange:
                raise InvalidKeyMaterial("the token refused the key size") from None
            created.append(obj)
            # Self-test: the stored key must give the fingerprint computed from the secret.
            got = fingerprint_of(bytes(obj.sign(FINGERPRINT_MESSAGE, mechanism=Mechanism.SHA256_HMAC)))
            if not hmac.compare_digest(got, expected_fp):
                raise CustodyError("the token computed a different MAC than expected; the key was not kept")
            if passphrase is not None and sign_passphrase:
                mac = base64.b64encode(bytes(obj.sign(passphrase.encode(), mechanism=Mechanism.SHA256_HMAC))).decode()
                if not hmac.compare_digest(mac, header_value):
                    raise CustodyError("the token signed the passphrase differently; the key was not kept")
            self._only_one(session, label)
            return info

        try:
            return self._provision(build, label)
        finally:
            material[:] = b"\x00" * len(material)

    def import_private_key(
        self,
        *,
        label: str,
        exchange: str,
        api_key: str,
        private_key: Any,
        options: dict[str, str] | None = None,
        passphrase: str | None = None,
    ) -> KeyInfo:
        """Store PRIVATE_KEY (a `cryptography` key) as a non-extractable token key, with its public half."""
        validate_label(label, InvalidKeyMaterial)
        validate_api_key(api_key, InvalidKeyMaterial)
        if passphrase is not None:
            validate_passphrase(passphrase)
        public = private_key.public_key()
        key_type = _private_key_templates(private_key, label, b"")[0]
        # Asymmetric keys' fingerprints come from their public half, read from the token.
        info = self._new_info(label, exchange, api_key, key_type, "", options or {}, passphrase)
        _, private_t, public_t = _private_key_templates(private_key, label, _encode_metadata(info))

        def build(session: Any, created: list[Any]) -> KeyInfo:
            self._signer(key_type)  # before anything is written: the token must be able to use the key
            self._label_free(session, label)
            # The private key last (see import_hmac_key).
            created.append(self._create(session, _account_template(label, _encode_account(api_key, passphrase))))
            created.append(self._create(session, public_t))
            priv = self._create(session, private_t)
            created.append(priv)
            self._self_test(priv, public, key_type)
            self._only_one(session, label)
            return replace(info, fingerprint=public_fingerprint(public_der(public)))

        try:
            return self._provision(build, label)
        finally:
            private_t.clear()

    def _self_test(self, private_obj: Any, public: Any, key_type: str) -> None:
        """The token's signature must verify under the public key we will hand out."""
        message = FINGERPRINT_MESSAGE
        mechanism, prepare = self._signer(key_type)
        sig = bytes(private_obj.sign(prepare(message), mechanism=mechanism))
        if not verify_signature(public, key_type, sig, message):
            raise CustodyError("the token's signature does not verify under the public key; the key was not kept")

    def generate_key(
        self, *, label: str, exchange: str, key_type: str, bits: int = 2048, options: dict[str, str] | None = None
    ) -> tuple[KeyInfo, Any]:
        """Generate a key pair inside the token: the private half never exists anywhere else.

        Returns (info, public key). The key has no account until `register` gives it the API key
        id the exchange issued for the public key; until then it is refused for signing.
        """
        validate_label(label, InvalidKeyMaterial)
        if key_type == "rsa" and bits not in RSA_BITS:
            raise InvalidKeyMaterial(f"RSA keys are {', '.join(map(str, RSA_BITS))} bits")
        if key_type not in ("ed25519", "rsa"):
            raise InvalidKeyMaterial("keys generated in the token are ed25519 or rsa")
        info = self._new_info(label, exchange, "", key_type, "", options or {}, None)
        metadata = _encode_metadata(info)
        holder: dict[str, Any] = {}

        def build(session: Any, created: list[Any]) -> KeyInfo:
            if key_type == "ed25519":
                self._require(Mechanism.EC_EDWARDS_KEY_PAIR_GEN, "Ed25519 key generation", _KEY_TYPE_ADVICE[key_type])
            else:
                self._require(Mechanism.RSA_PKCS_KEY_PAIR_GEN, "RSA key generation", _KEY_TYPE_ADVICE[key_type])
            self._signer(key_type)
            self._label_free(session, label)
            common = {Attribute.LABEL: label, Attribute.ID: metadata}
            public_t = self._fit({**_KEY_COMMON, **common, Attribute.VERIFY: True, Attribute.ENCRYPT: False,
                                  Attribute.WRAP: False, Attribute.DERIVE: False})
            private_t = self._fit({**_PRIVATE_HALF, **common})
            if key_type == "ed25519":
                public_t[Attribute.EC_PARAMS] = ED25519_PARAMS
                pub, priv = session.generate_keypair(
                    KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                    public_template=public_t, private_template=private_t,
                )
            else:
                pub, priv = session.generate_keypair(
                    KeyType.RSA, bits, store=True, public_template=public_t, private_template=private_t
                )
            created.extend([priv, pub])
            public = _public_key_of(pub, key_type)
            self._self_test(priv, public, key_type)
            self._only_one(session, label, accounts=0)
            holder["public"] = public
            return replace(info, fingerprint=public_fingerprint(public_der(public)))

        info = self._provision(build, label)
        return info, holder["public"]

    def register(self, label: str, *, api_key: str, passphrase: str | None = None,
                 sign_passphrase: bool = False) -> KeyInfo:
        """Give a key generated in the token its account: the API key id the exchange issued for it."""
        validate_label(label, InvalidKeyMaterial)
        validate_api_key(api_key, InvalidKeyMaterial)
        if passphrase is not None:
            validate_passphrase(passphrase)

        def build(session: Any, created: list[Any]) -> KeyInfo:
            found = self._ours(session, label)
            if not found:
                raise self._not_found(KeyNotFound(f"no key labelled {label!r}"))
            info, handle, _ = found[0]
            if info.registered:
                raise KeyExists(f"key {label!r} is registered already (API key {info.api_key}); "
                                "revoke it and generate a new one to change accounts")
            header_value = passphrase
            if passphrase is not None and sign_passphrase:
                if info.key_type != "hmac":
                    raise InvalidKeyMaterial("only HMAC keys can sign a passphrase")
                header_value = base64.b64encode(
                    bytes(handle.sign(passphrase.encode(), mechanism=Mechanism.SHA256_HMAC))).decode("ascii")
            created.append(self._create(session, _account_template(label, _encode_account(api_key, header_value))))
            if len(list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label,
                                             Attribute.APPLICATION: ACCOUNT_APP}))) != 1:
                raise KeyExists(f"another registration of {label!r} ran at the same time; nothing was kept")
            return replace(info, api_key=api_key, has_passphrase=passphrase is not None)

        return self._provision(build, label)

    def revoke(self, label: str) -> KeyInfo:
        """Destroy the key labelled LABEL (all its objects). Running agents refuse it at their next use."""

        def destroy(session: Any) -> KeyInfo:
            found = self._ours(session, label)
            # The signing object first: from then on the key is unusable, whatever happens next.
            for _, obj, _ in found:
                obj.destroy()
            # Then its public half and account; also when a revoke or import was interrupted
            # and left them without a key, so that the label can be used again.
            leftovers = 0
            for cls in (ObjectClass.PUBLIC_KEY, ObjectClass.DATA):
                for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})):
                    ours = (
                        obj[Attribute.APPLICATION] == ACCOUNT_APP if cls == ObjectClass.DATA
                        else _decode_metadata(label, bytes(obj[Attribute.ID])) is not None
                    )
                    if ours:
                        obj.destroy()
                        leftovers += 1
            self._cache.pop(label, None)
            self._pending.pop(label, None)
            if not found:
                if leftovers:
                    return KeyInfo(label=label, exchange="", api_key="", key_type="(incomplete)", created="",
                                   fingerprint="")
                raise self._not_found(KeyNotFound(f"no key labelled {label!r}"))
            return found[0][0]

        return self._call(destroy)
