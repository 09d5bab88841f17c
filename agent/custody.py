"""Token custody: exchange secrets as non-extractable PKCS#11 objects, MACs computed inside.

This is the only module that talks to the token. Everything it hands out is a
MAC or a description of a key (KeyInfo), never key material.

Two facts shape it:

* python-pkcs11 initialises the module with C_Initialize(NULL), so the module
  does no locking of its own: two threads inside it at once fail (SoftHSM2:
  CKR_GENERAL_ERROR). Every token call here holds `Keyring._lock`.
* Finding an object by label makes the module scan every object (tens of
  milliseconds with thousands of keys), while a MAC costs microseconds. So a
  key's handle is looked up once and cached. Revocation stays immediate because
  a destroyed object's handle fails at the next use (CKR_OBJECT_HANDLE_INVALID,
  also across processes), which evicts the entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

from agent.config import TokenConfig

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
METADATA_VERSION = 1
FINGERPRINT_MESSAGE = b"signing-agent key fingerprint v1"

LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # used with fullmatch
API_KEY_RE = re.compile(r"[\x21-\x7e]{1,256}")
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


class InvalidKeyMaterial(CustodyError, ValueError):
    """The label, API key id or secret given to an import is malformed; nothing was written."""


@dataclass(frozen=True)
class KeyInfo:
    """What the agent may tell about a key: everything but the key."""

    label: str
    exchange: str
    api_key: str
    key_type: str
    created: str  # ISO 8601, UTC
    fingerprint: str  # truncated HMAC of a fixed message under the key: identifies, does not reveal

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class KeyEntry:
    info: KeyInfo
    handle: Any  # pkcs11 SecretKey; only Keyring calls into it
    generation: int  # the session it was found in: handles die with their module initialisation


def fingerprint_of(mac_of_message: bytes) -> str:
    return mac_of_message[:16].hex()


def hmac_key_material(secret: bytes) -> bytearray:
    """The bytes to store for an HMAC secret: zero-padded to 64 bytes when shorter (see above)."""
    material = bytearray(secret)
    if len(material) < HMAC_KEY_PAD_TO:
        material.extend(b"\x00" * (HMAC_KEY_PAD_TO - len(material)))
    return material


def validate_label(label: str) -> None:
    if not LABEL_RE.fullmatch(label):
        raise InvalidKeyMaterial(
            "a key label is 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def validate_api_key(api_key: str) -> None:
    if not API_KEY_RE.fullmatch(api_key):
        raise InvalidKeyMaterial("the API key id must be 1-256 printable ASCII characters without spaces")


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


def _encode_metadata(info: KeyInfo) -> bytes:
    doc = {"app": METADATA_APP, "v": METADATA_VERSION, **info.as_dict()}
    del doc["label"]  # the label lives in CKA_LABEL
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _decode_metadata(label: str, raw: bytes) -> KeyInfo | None:
    """KeyInfo from CKA_ID, or None when the object is not one of ours."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("app") != METADATA_APP or doc.get("v") != METADATA_VERSION:
        return None
    try:
        return KeyInfo(
            label=label,
            exchange=doc["exchange"],
            api_key=doc["api_key"],
            key_type=doc["key_type"],
            created=doc["created"],
            fingerprint=doc["fingerprint"],
        )
    except KeyError:
        return None


def _hmac_key_template(label: str, metadata: bytes, material: bytearray) -> dict[Attribute, Any]:
    """A persistent, private, sensitive, non-extractable key that can sign and do nothing else."""
    return {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.VERIFY: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.DESTROYABLE: True,
        Attribute.LABEL: label,
        Attribute.ID: metadata,
        Attribute.VALUE: bytes(material),
    }


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
        raise TokenUnavailable(f"cannot load PKCS#11 module {config.module}: {exc or type(exc).__name__}") from None


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
        self._reinitialize = False
        self._generation = 0
        self._closed = False

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
        self._reinitialize = False
        label = self._config.label
        try:
            token = self._lib.get_token(token_label=label)
        except p11err.NoSuchToken:
            raise TokenUnavailable(
                f"no token labelled {label!r} in module {self._config.module} (create it: `make token`)"
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
        self._generation += 1
        self._cache.clear()
        self._missing.clear()
        return self._session

    def _lose_session(self) -> None:
        """Forget the session after a device error; the next call reinitialises the module and logs in again."""
        self._session = None
        self._reinitialize = True
        self._generation += 1
        self._cache.clear()
        self._missing.clear()

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

    def _ours(self, session: Any, label: str | None = None) -> list[tuple[KeyInfo, Any]]:
        template: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.SECRET_KEY}
        if label is not None:
            template[Attribute.LABEL] = label
        found = []
        for obj in session.get_objects(template):
            info = _decode_metadata(obj[Attribute.LABEL], bytes(obj[Attribute.ID]))
            if info is not None:
                found.append((info, obj))
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
                # Anything else the module refuses (a mechanism it lacks, a read-only token...):
                # name it, so an operator can act, rather than let it surface as a crash.
                raise CustodyError(f"token {self._config.label!r} refused the operation ({type(exc).__name__})") from None

    def list_keys(self) -> list[KeyInfo]:
        return sorted((info for info, _ in self._call(self._ours)), key=lambda i: i.label)

    def lookup(self, label: str) -> KeyEntry:
        """The key labelled LABEL, from the cache when possible (the hot path scans nothing)."""
        entry = self._cache.get(label)  # dict reads are atomic; entries are immutable
        if entry is not None:
            return entry
        not_found = KeyNotFound(f"no key labelled {label!r} (never imported, or revoked)")
        if self._missing.get(label, 0.0) > time.monotonic():
            raise not_found

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
            info, handle = found[0]
            entry = KeyEntry(info=info, handle=handle, generation=self._generation)
            self._cache[label] = entry
            return entry

        return self._call(find)

    def hmac(self, entry: KeyEntry, message: bytes, hash_name: HashName) -> bytes:
        """HMAC of MESSAGE under the key, computed inside the token."""
        mechanism = HMAC_MECHANISMS[hash_name]

        def sign(session: Any) -> bytes:
            if entry.generation != self._generation:
                # Found before the module was reinitialised: the handle means nothing now.
                raise KeyRevoked(f"key {entry.info.label!r} must be looked up again")
            try:
                return bytes(entry.handle.sign(message, mechanism=mechanism))
            except _HANDLE_GONE:
                # Destroyed (revoked) since we cached it, possibly by another process.
                if self._cache.get(entry.info.label) is entry:
                    del self._cache[entry.info.label]
                raise self._not_found(KeyRevoked(f"key {entry.info.label!r} was revoked")) from None

        return self._call(sign)

    # -- provisioning ------------------------------------------------------------

    def import_hmac_secret(self, *, label: str, exchange: str, api_key: str, secret: bytes | bytearray) -> KeyInfo:
        """Store SECRET as a new non-extractable HMAC key. Writes nothing unless everything is valid."""
        validate_label(label)
        validate_api_key(api_key)
        validate_secret(bytes(secret), api_key=api_key)
        expected_fp = fingerprint_of(hmac.new(bytes(secret), FINGERPRINT_MESSAGE, hashlib.sha256).digest())
        info = KeyInfo(
            label=label,
            exchange=exchange,
            api_key=api_key,
            key_type="hmac",
            created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            fingerprint=expected_fp,
        )
        material = hmac_key_material(secret)
        try:

            def create(session: Any) -> KeyInfo:
                if any(True for _ in session.get_objects({Attribute.LABEL: label})):
                    raise KeyExists(f"a key labelled {label!r} exists; revoke it first or choose another label")
                obj = session.create_object(_hmac_key_template(label, _encode_metadata(info), material))
                try:
                    # Self-test: the stored key must give the fingerprint computed from the secret.
                    got = fingerprint_of(bytes(obj.sign(FINGERPRINT_MESSAGE, mechanism=Mechanism.SHA256_HMAC)))
                    if not hmac.compare_digest(got, expected_fp):
                        raise CustodyError("the token computed a different MAC than expected; the key was not kept")
                    # Two imports racing for one label: both see two objects, both back out.
                    if len(list(session.get_objects({Attribute.LABEL: label}))) != 1:
                        raise KeyExists(f"another import of {label!r} ran at the same time; nothing was kept")
                except BaseException:
                    obj.destroy()
                    raise
                self._missing.pop(label, None)
                return info

            return self._call(create)
        except p11err.KeySizeRange:
            raise InvalidKeyMaterial("the token refused the key size") from None
        finally:
            material[:] = b"\x00" * len(material)

    def revoke(self, label: str) -> KeyInfo:
        """Destroy the key labelled LABEL in the token. Running agents refuse it at their next use."""

        def destroy(session: Any) -> KeyInfo:
            found = self._ours(session, label)
            if not found:
                raise self._not_found(KeyNotFound(f"no key labelled {label!r}"))
            for _, obj in found:
                obj.destroy()
            self._cache.pop(label, None)
            return found[0][0]

        return self._call(destroy)
