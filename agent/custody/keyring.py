"""The keyring: keys found in the token and used there, and the Credential a scheme signs with.

Finding an object by label makes the module scan every object (SoftHSM2: about 0.4 s per
search with 10,000 keys), while a MAC costs microseconds. So a key's handle is looked up
once and cached, and the listing the agent makes at start fills the cache with every key:
requests never search the token for a key it held then. Searching happens only for a label
not seen yet (one search, by label alone) and at most every MISSING_TTL_SECONDS for a label
known missing. Revocation stays immediate because a destroyed object's handle fails at the
next use (CKR_OBJECT_HANDLE_INVALID, also across processes), which evicts the entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeTypeInvalid

from agent.custody.errors import CustodyError, KeyNotFound, KeyRevoked
from agent.custody.objects import (
    ACCOUNT_APP,
    PRIVATE_KEY_TYPES,
    KeyInfo,
    decode_account,
    decode_metadata,
    public_der,
    public_fingerprint,
    public_key_of,
)
from agent.custody.provision import Provisioning
from agent.custody.session import HANDLE_GONE, TokenSession, TokenSettings
from agent.custody.store import KeyStore, StoreUnavailable
from agent.custody.wrapped import WrappedKeys

HashName = Literal["sha256", "sha384", "sha512"]
HMAC_MECHANISMS: dict[str, Mechanism] = {
    "sha256": Mechanism.SHA256_HMAC,
    "sha384": Mechanism.SHA384_HMAC,
    "sha512": Mechanism.SHA512_HMAC,
}
# How long "no such key" is believed without asking the token again. A key imported
# meanwhile becomes usable within this time; lookups of unknown labels cost nothing.
MISSING_TTL_SECONDS = 0.5
MISSING_CACHE_SIZE = 4096


@dataclass(frozen=True)
class KeyEntry:
    info: KeyInfo
    handle: Any  # pkcs11 SecretKey or PrivateKey; only Keyring calls into it
    generation: int  # the session it was found in: handles die with their module initialisation
    passphrase: str | None = field(default=None, repr=False)  # the passphrase header's value


class Keyring(WrappedKeys, Provisioning, TokenSession):
    """Keys in one token, used through one logged-in session, one call at a time.

    The session (login, lock, reconnect, module differences) is TokenSession's; the writes
    (import, generate, register, revoke) are Provisioning's; keys wrapped under the token's master
    key and kept in a key store are WrappedKeys'; finding and using keys is here.
    """

    def __init__(self, config: TokenSettings, store: KeyStore | None = None) -> None:
        super().__init__(config)
        self._init_wrapped(store)
        self._cache: dict[str, KeyEntry] = {}
        # Labels just found missing, with the monotonic time until which that answer holds:
        # a flood of unknown labels must not make every request scan the token.
        self._missing: dict[str, float] = {}
        # Keys generated but not registered yet, with the time until which that answer holds.
        self._pending: dict[str, tuple[KeyEntry, float]] = {}
        # The labels of the token searches made while recording_searches() is active.
        self._searches: list[str | None] | None = None

    def _session_changed(self, *, closed: bool = False) -> None:
        # Handles die with their session. At close only they go: what is known missing or
        # pending stays true (lookups after close fail at the token call anyway).
        self._cache.clear()
        self._wrapped_session_changed()
        if not closed:
            self._missing.clear()
            self._pending.clear()

    def _forget_label(self, label: str, *, exists: bool) -> None:
        """After a write of LABEL (under the lock): its cached handle is stale, and if the key
        EXISTS now it is no longer believed missing."""
        if exists:
            self._missing.pop(label, None)
        self._cache.pop(label, None)
        self._pending.pop(label, None)

    # -- the public seam for tools and tests ----------------------------------------------

    def forget_cached_handles(self) -> None:
        """Drop every cached handle and every "missing" or "pending" answer, as in an agent just
        started, before its listing: the next lookup of any label searches the token.

        For tests that damage the token behind the keyring's back, and for bench/probes.py, which
        measures lookups without the cache.
        """
        with self._lock:
            self._cache.clear()
            self._missing.clear()
            self._pending.clear()

    def known_keys(self) -> list[KeyInfo]:
        """The registered keys this keyring has seen (the start's listing, and lookups since), without a
        token call: what a policy is checked against on every reload (agent.delivery), where a full
        listing of thousands of keys would hold the token's lock. A key imported since and not yet
        used is missing here; its first request is checked on its own."""
        return [entry.info for entry in list(self._cache.values())]

    def is_cached(self, label: str) -> bool:
        """Would a lookup of LABEL be answered from the cache, without a token search?"""
        return label in self._cache

    @contextmanager
    def recording_searches(self) -> Iterator[list[str | None]]:
        """Record every search of the token for our keys made in the block: a list, filled as they
        happen, of the label searched for (None: a full listing). What tests and the bench count to
        show that lookups do not grow with the key count."""
        seen: list[str | None] = []
        self._searches = seen
        try:
            yield seen
        finally:
            self._searches = None

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
        if self._searches is not None:
            self._searches.append(label)
        objects = self._objects_by_class(session, label)
        accounts: dict[str, tuple[str, str | None]] = {}
        for obj in objects[ObjectClass.DATA]:
            account = decode_account(bytes(obj[Attribute.VALUE]))
            if account is not None:
                accounts[obj[Attribute.LABEL]] = account
        fingerprints: dict[str, str] = {}
        for obj in objects[ObjectClass.PUBLIC_KEY]:
            info = decode_metadata(obj[Attribute.LABEL], bytes(obj[Attribute.ID]))
            if info is not None and info.key_type in PRIVATE_KEY_TYPES:
                try:
                    fingerprints[info.label] = public_fingerprint(public_der(public_key_of(obj, info.key_type)))
                except ValueError:
                    fingerprints[info.label] = "unreadable public key"
        found = []
        for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
            for obj in objects[cls]:
                info = decode_metadata(obj[Attribute.LABEL], bytes(obj[Attribute.ID]))
                if info is None:
                    continue
                api_key, passphrase = accounts.get(info.label, (info.api_key, None))
                info = replace(info, api_key=api_key, has_passphrase=passphrase is not None,
                               fingerprint=info.fingerprint or fingerprints.get(info.label, "missing public key"))
                found.append((info, obj, passphrase))
        return found

    def list_keys(self, *, wrapped: bool = True) -> list[KeyInfo]:
        """Every key of ours in the token (and, when WRAPPED, in the key store), by label. Also refills
        the handle cache (see _index)."""

        def listing(session: Any) -> list[tuple[KeyInfo, Any, str | None]]:
            found = self._ours(session)
            # A label held by the token and the store (a `store migrate` cut short) resolves as lookup
            # resolves it, to the store's row: so it must not enter the index of token handles.
            stored: set[str] = set()
            if self._store is not None:
                try:
                    stored = self._store.present([info.label for info, _, _ in found])
                except StoreUnavailable:
                    pass  # both copies compute the same MAC (migrate verifies it first): token keys stay usable
            self._index([item for item in found if item[0].label not in stored])
            return found

        keys = [info for info, _, _ in self._call(listing)]
        if wrapped:
            keys += self.list_wrapped()
        return sorted(keys, key=lambda i: i.label)

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
        if self._store is not None:
            # The store first: an indexed read, where a token search scans every object.
            wrapped = self._lookup_wrapped(label)
            if wrapped is not None:
                return wrapped
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
            except HANDLE_GONE:
                # Destroyed (revoked) since we cached it, possibly by another process.
                if self._cache.get(entry.info.label) is entry:
                    del self._cache[entry.info.label]
                with self._unwrapped_lock:  # a wrapped key's session object, destroyed by an eviction
                    if self._unwrapped.get(entry.info.label) is entry:
                        del self._unwrapped[entry.info.label]
                raise self._not_found(KeyRevoked(f"key {entry.info.label!r} was revoked")) from None

        return self._call(use)

    def hmac(self, entry: KeyEntry, message: bytes, hash_name: HashName) -> bytes:
        """HMAC of MESSAGE under the key, computed inside the token."""
        if entry.info.key_type != "hmac":
            raise CustodyError(f"key {entry.info.label!r} is an {entry.info.key_type} key, not an HMAC key")
        mechanism = HMAC_MECHANISMS[hash_name]
        self._require(mechanism, f"HMAC-{hash_name.upper()}", "this exchange's requests need it; use a token with it")
        return self._use(entry, lambda handle: self._token_sign(handle, mechanism, message))

    def _token_sign(self, handle: Any, mechanism: Mechanism, data: bytes) -> bytes:
        """DATA signed (or MACed) by HANDLE in the token, under the lock: through the lean ctypes call
        where the module exports it (agent.custody.tokencall), else through python-pkcs11. Both raise
        python-pkcs11's exceptions, which `_use` and `_call` handle."""
        call = self._lean_call()
        if call is None:
            return handle.sign(data, mechanism=mechanism)
        return call.sign(handle.session.handle, handle.handle, mechanism, data)

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
        return self._use(entry, lambda handle: self._token_sign(handle, mechanism, data))

    def generated_in_token(self, label: str) -> bool:
        """True when the key was generated inside the token (CKA_LOCAL): revoking it loses it for good,
        as it exists nowhere else. Imported keys (and keys of a token that cannot say) are False."""
        return _generated(self, label)

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
                if decode_metadata(label, bytes(obj[Attribute.ID])) is not None:
                    return public_key_of(obj, info.key_type)
            raise CustodyError(f"the public half of key {label!r} is missing from the token")

        return self._call(read)


def _generated(keyring: "Keyring", label: str) -> bool:
    """Whether the key labelled LABEL was generated inside the token (CKA_LOCAL of its signing object)."""

    def read(session: Any) -> bool:
        found = keyring._ours(session, label)
        if not found:  # missing, or the leftovers of an interrupted import: revoke says which
            return False
        try:
            return bool(found[0][1][Attribute.LOCAL])
        except (KeyError, NotImplementedError, AttributeTypeInvalid, *HANDLE_GONE):
            return False

    return keyring._call(read)


class NonceSource(Protocol):
    """Where a key's nonces come from: agent.nonces.NonceStore in the agent."""

    def next(self, exchange: str, api_key: str, floor: int) -> int: ...


@dataclass(frozen=True)
class TokenCredential:
    """A scheme's view of one key in the token (see agent.schemes.context.Credential).

    MACs and signatures come from the token, nonces from NONCES. The nonce store's errors pass
    through as they are: the service maps them to statuses like every other failure, so custody
    knows nothing of the store (agent.nonces) beyond this method.
    """

    keyring: Keyring
    entry: KeyEntry
    nonces: NonceSource

    @property
    def api_key(self) -> str:
        return self.entry.info.api_key

    @property
    def key_type(self) -> str:
        return self.entry.info.key_type

    @property
    def passphrase(self) -> str | None:
        return self.entry.passphrase

    def option(self, name: str) -> str | None:
        return self.entry.info.options.get(name)

    def mac(self, message: bytes, hash_name: Any) -> bytes:
        return self.keyring.hmac(self.entry, message, hash_name)

    def sign(self, message: bytes) -> bytes:
        return self.keyring.sign(self.entry, message)

    def nonce(self, floor: int) -> int:
        return self.nonces.next(self.entry.info.exchange, self.entry.info.api_key, floor)
