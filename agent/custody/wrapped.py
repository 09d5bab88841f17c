"""Wrapped keys: exchange secrets stored outside the token, wrapped under its master key, unwrapped on use.

A token holds few objects (a YubiHSM2: 256; SoftHSM2 scans all of them at every search), so a platform's
100,000 keys cannot each be one. Here only the master key lives in the token (agent.custody.master); each
HMAC secret is a blob in the key store (agent.custody.store), wrapped with CKM_AES_KEY_WRAP_PAD inside the
token. On first use a blob is unwrapped into a session object (never a token object: nothing persists and
the token's object count stays a handful), and its handle is cached in a bounded LRU: the next requests for
that key sign at once, like a token key's. An evicted or revoked key's session object is destroyed.

What the token enforces, whoever holds the PIN: the master key's CKA_UNWRAP_TEMPLATE makes every unwrapped
key sensitive and non-extractable, unable to derive, encrypt, decrypt, wrap or unwrap. The agent asks for
exactly that (UNWRAPPED_TEMPLATE); an unwrap that asks for more is refused (CKR_TEMPLATE_INCONSISTENT).

Short secrets are padded to 64 bytes before wrapping (objects.hmac_key_material, as token imports do),
because tokens refuse HMAC keys shorter than the digest; RFC 2104 gives the same MAC.

Revocation across processes and hosts: a revoke deletes the row and appends an event; every agent polls the
events (STORE_POLL_SECONDS) and destroys its cached objects for those labels. While the store does not
answer for STORE_STALE_SECONDS, wrapped keys are refused (UNAVAILABLE): a revocation might be missed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

from agent.custody.errors import CustodyError, InvalidKeyMaterial, KeyExists
from agent.custody.master import MASTER_ID_PREFIX, MASTER_LABEL
from agent.custody.objects import (
    FINGERPRINT_MESSAGE,
    HMAC_KEY_PAD_TO,
    KeyInfo,
    decode_metadata,
    fingerprint_of,
    hmac_key_material,
)
from agent.custody.store import KeyStore, StoreUnavailable, WrappedRecord

WRAP_MECHANISM = Mechanism.AES_KEY_WRAP_PAD
UNWRAP_CACHE_SIZE = 4096  # unwrapped session objects kept (SoftHSM2 holds them in memory; an HSM counts them)
STORE_POLL_SECONDS = 0.25
STORE_STALE_SECONDS = 1.0

# What the agent asks of an unwrapped key: the master key's unwrap template forces the same (master.py).
# A session object (CKA_TOKEN false): it dies with the session and never adds to the token's objects.
UNWRAPPED_TEMPLATE: dict[Attribute, Any] = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}


@dataclass(frozen=True)
class Migration:
    """What `store migrate` did, or would do, with one token key, and why."""

    label: str
    # migrated | finished (a cut-short migration completed) | would migrate | would finish
    # | stays (by design) | re-import (cannot be wrapped) | conflict (left as it is, for a person to look at)
    outcome: str
    reason: str


def _value_len(obj: Any) -> int | None:
    try:
        return int(obj[Attribute.VALUE_LEN])
    except (p11err.AttributeTypeInvalid, p11err.AttributeSensitive):
        return None  # private keys have none


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0  # unwraps
    evictions: int = 0  # by size (revocations are not counted here)


def record_info(record: WrappedRecord) -> KeyInfo:
    return KeyInfo(label=record.label, exchange=record.exchange, api_key=record.api_key, key_type=record.key_type,
                   created=record.created, fingerprint=record.fingerprint, options=dict(record.options),
                   has_passphrase=record.header is not None, storage="wrapped")


class WrappedKeys:
    """Keyring's wrapped keys (a mixin, like Provisioning: it uses the session's `_call` and `_lock`)."""

    def _init_wrapped(self, store: KeyStore | None, cache_size: int = UNWRAP_CACHE_SIZE) -> None:
        self._store = store
        self._unwrapped: OrderedDict[str, Any] = OrderedDict()  # label -> KeyEntry, least recent first
        self._unwrapped_lock = threading.Lock()
        self._unwrap_cache_size = cache_size
        self._masters: dict[int, Any] = {}  # generation -> handle, for the current session
        self.unwrap_stats = CacheStats()
        self._store_seq = 0
        self._store_fresh_until: float | None = None  # set by poll_store: None = not polling (the CLI)

    @property
    def store(self) -> KeyStore | None:
        return self._store

    def use_store(self, store: KeyStore | None, *, cache_size: int = UNWRAP_CACHE_SIZE) -> None:
        """Use STORE for wrapped keys from now on (None: token keys only), forgetting what was unwrapped.

        The agent passes its store to Keyring.open; tests and bench/scale.py switch stores on one keyring,
        as the module loads once per process.
        """
        self.evict_wrapped(list(self._unwrapped))
        self._store = store
        self._unwrap_cache_size = cache_size
        self._store_seq = 0
        self._store_fresh_until = None
        self.unwrap_stats = CacheStats()

    def _wrapped_session_changed(self) -> None:
        # Session objects and handles die with the session: nothing to destroy.
        with self._unwrapped_lock:
            self._unwrapped.clear()
        self._masters.clear()

    # -- the master key ----------------------------------------------------------------

    def _master(self, session: Any, generation: int | None = None) -> tuple[int, Any]:
        """(generation, handle) of master key GENERATION (None: the newest) in the token."""
        if not self._masters or (generation is not None and generation not in self._masters):
            # Searched again for a generation not seen yet: `store rotate-master` may have made it since.
            self._masters.clear()
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: MASTER_LABEL}):
                key_id = bytes(obj[Attribute.ID])
                if key_id.startswith(MASTER_ID_PREFIX) and key_id[len(MASTER_ID_PREFIX):].isdigit():
                    self._masters[int(key_id[len(MASTER_ID_PREFIX):])] = obj
        if not self._masters:
            raise CustodyError(f"token {self.label!r} has no master key for wrapped keys; "
                               "create it once: signing-agent store init")
        wanted = max(self._masters) if generation is None else generation
        if wanted not in self._masters:
            raise CustodyError(f"the key is wrapped under master key generation {wanted}, which token "
                               f"{self.label!r} does not hold (another HSM's blob?)")
        return wanted, self._masters[wanted]

    # -- import ------------------------------------------------------------------------

    def _store_wrapped(self, info: KeyInfo, material: bytearray, passphrase: str | None,
                       sign_passphrase: bool) -> KeyInfo:
        """Provisioning.import_hmac_key(wrapped=True), once the key is checked: wrap MATERIAL (the padded HMAC
        key) under the master key inside the token and store the blob with INFO.

        The secret enters the token as an extractable session object only long enough to be wrapped (a
        wrap needs CKA_EXTRACTABLE); it is destroyed before this returns, whatever happens. The blob is
        then unwrapped as the agent will unwrap it, and must give the secret's own fingerprint.
        """
        store = self._require_store()
        label, expected_fp = info.label, info.fingerprint
        if passphrase is not None and not sign_passphrase:
            # A clear passphrase (OKX, Bitget, KuCoin v1) is sent as it is: the store would hold it readable.
            raise InvalidKeyMaterial("keys with a clear passphrase cannot be wrapped yet; import this key "
                                     "without --wrapped (a token object)")
        if len(material) % 8:
            # CKM_AES_KEY_WRAP_PAD pads to 8 bytes, and SoftHSM2 2.6 leaves that padding on the unwrapped key:
            # past 64 bytes (the SHA-256 block) zeros change the MAC. Shorter secrets are padded to 64 anyway.
            raise InvalidKeyMaterial("secrets longer than 64 bytes can be wrapped only when their length is a "
                                     "multiple of 8; import this key without --wrapped (a token object)")
        if store.get(label) is not None:
            raise KeyExists(f"a key labelled {label!r} exists in the key store; revoke it first or choose another label")

        def wrap(session: Any) -> tuple[int, bytes, str | None]:
            self._require(WRAP_MECHANISM, "AES key wrap with padding", "wrapped keys need it; use a token with it")
            self._require(Mechanism.SHA256_HMAC, "HMAC-SHA256", "the import's self-test needs it")
            for obj in session.get_objects({Attribute.LABEL: label}):
                if obj[Attribute.CLASS] in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY) and \
                        decode_metadata(label, bytes(obj[Attribute.ID])) is not None:
                    raise KeyExists(f"a key labelled {label!r} exists on the token; revoke it first or choose another label")
            generation, master = self._master(session)
            blob = self._wrap_one(session, master, material)
            unwrapped = self._unwrap_with(master, blob)
            try:
                got = fingerprint_of(bytes(unwrapped.sign(FINGERPRINT_MESSAGE, mechanism=Mechanism.SHA256_HMAC)))
                if not hmac.compare_digest(got, expected_fp):
                    raise CustodyError("the unwrapped key computed a different MAC than expected; nothing was kept")
                header = None
                if passphrase is not None:  # KuCoin v2/v3: the header value, signed by the token
                    header = base64.b64encode(bytes(unwrapped.sign(passphrase.encode(),
                                                                   mechanism=Mechanism.SHA256_HMAC))).decode()
            finally:
                unwrapped.destroy()
            return generation, blob, header

        generation, blob, header = self._call(wrap)  # type: ignore[attr-defined]
        record = WrappedRecord(label=label, exchange=info.exchange, api_key=info.api_key, key_type="hmac",
                               created=info.created, fingerprint=expected_fp, master=generation, blob=blob,
                               options=dict(info.options), header=header)
        store.add(record)
        self._missing.pop(label, None)  # type: ignore[attr-defined]
        return record_info(record)

    def _wrap_one(self, session: Any, master: Any, material: bytearray) -> bytes:
        """MATERIAL wrapped under MASTER. It enters the token as an extractable session object (a wrap needs
        CKA_EXTRACTABLE), visible to this session only, and is destroyed before this returns."""
        temporary = self._create(session, {  # type: ignore[attr-defined]
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True, Attribute.SIGN: False, Attribute.VALUE: bytes(material),
        })
        try:
            return bytes(master.wrap_key(temporary, mechanism=WRAP_MECHANISM))
        finally:
            temporary.destroy()

    def wrap_hmac_secrets(self, keys: list[bytes]) -> tuple[int, list[bytes]]:
        """(master generation, blobs): KEYS wrapped in the token in one session call, for bulk loads.

        No self-test and no store write: bench/scale.py fills a store with this (and a migration would),
        then checks a sample by signing. Each secret is padded as an import pads it.
        """

        def wrap(session: Any) -> tuple[int, list[bytes]]:
            generation, master = self._master(session)
            blobs = []
            for key in keys:
                material = hmac_key_material(key)
                try:
                    blobs.append(self._wrap_one(session, master, material))
                finally:
                    material[:] = b"\x00" * len(material)
            return generation, blobs

        return self._call(wrap)  # type: ignore[attr-defined]

    def _unwrap_with(self, master: Any, blob: bytes) -> Any:
        bad_blob = CustodyError("a wrapped key's blob does not unwrap under this token's master key "
                                "(damaged, or wrapped by another HSM)")
        try:
            return master.unwrap_key(ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, blob, mechanism=WRAP_MECHANISM,
                                     store=False, template=dict(UNWRAPPED_TEMPLATE))
        except (p11err.WrappedKeyInvalid, p11err.WrappedKeyLenRange, p11err.EncryptedDataInvalid,
                p11err.EncryptedDataLenRange):
            raise bad_blob from None
        except p11err.GeneralError:
            # SoftHSM2 answers a blob whose integrity check fails with CKR_GENERAL_ERROR, which elsewhere means
            # a lost device. With the token still there it is the blob: one bad row must not reset the session
            # (and every cached key with it).
            if self._token_present():  # type: ignore[attr-defined]
                raise bad_blob from None
            raise

    # -- migration of token objects -------------------------------------------------------

    def migrate_token_keys(self, *, clear_passphrase: Callable[[KeyInfo], bool], dry_run: bool = False,
                           row_written: Callable[[str], None] | None = None,
                           progress: Callable[[Migration], None] | None = None) -> list[Migration]:
        """Move our HMAC token objects into the key store as blobs wrapped inside the token (`store migrate`).

        Per key, in this order: wrap the object under the newest master key and check that the blob, unwrapped
        as the agent unwraps it, computes the object's MAC; write the row; read the row back and check it the
        same way; only then destroy the token object and its account. A kill anywhere leaves the key usable:
        before the row, only the object exists; after it, both hold the same key and lookups take the row
        (Keyring.lookup, list_keys); a rerun checks such a pair and destroys the object.

        CLEAR_PASSPHRASE(info) says whether the key's stored passphrase is sent in clear (those stay token
        objects: the store would hold it readable). ROW_WRITTEN(label) runs after each row is committed
        (the CLI's crash hook for tests); PROGRESS(migration) after each key, as it is done.
        """
        store = self._require_store()

        def survey(session: Any) -> list[tuple[KeyInfo, bool, int | None, bool]]:
            self._master(session)  # no master key: say so before anything else
            return [(info, passphrase is not None, _value_len(obj), bool(obj[Attribute.EXTRACTABLE]))
                    for info, obj, passphrase in self._ours(session)]  # type: ignore[attr-defined]

        keys = sorted(self._call(survey), key=lambda k: k[0].label)  # type: ignore[attr-defined]
        in_store = store.present([info.label for info, *_ in keys])
        done: list[Migration] = []
        for info, has_passphrase, value_len, extractable in keys:
            label = info.label
            if info.key_type != "hmac":
                done.append(Migration(label, "stays", "asymmetric private keys stay token objects"))
            elif label in in_store:
                done.append(Migration(label, "would finish", "the store has its row already; the token object "
                                      "would be checked against it and destroyed") if dry_run
                            else self._finish_migration(label))
            elif has_passphrase and clear_passphrase(info):
                done.append(Migration(label, "stays", "its passphrase is sent in clear, and the store would hold "
                                      "it readable"))
            elif not info.registered:
                done.append(Migration(label, "stays", "not registered yet: run keys register first"))
            elif not extractable:
                done.append(Migration(label, "re-import", "CKA_EXTRACTABLE is false, so the token will not wrap it "
                                      "(nothing can take it out, not even wrapped): revoke it and import the "
                                      "exchange's secret again with --wrapped"))
            elif value_len is not None and value_len > HMAC_KEY_PAD_TO and value_len % 8:
                done.append(Migration(label, "re-import", "longer than 64 bytes and not a multiple of 8: SoftHSM2 "
                                      "would change its MAC when unwrapping (see Limits); it stays a token object"))
            elif dry_run:
                done.append(Migration(label, "would migrate", "extractable: wrapped inside the token"))
            else:
                done.append(self._migrate_one(label, store, row_written))
            if progress is not None:
                progress(done[-1])
        return done

    def _migrate_one(self, label: str, store: KeyStore, row_written: Callable[[str], None] | None) -> Migration:
        def wrap(session: Any) -> WrappedRecord | Migration:
            found = self._ours(session, label)  # type: ignore[attr-defined]
            if len(found) != 1:
                return Migration(label, "conflict", f"{len(found)} token keys have this label; revoke and re-import")
            info, obj, passphrase = found[0]
            generation, master = self._master(session)
            try:
                blob = bytes(master.wrap_key(obj, mechanism=WRAP_MECHANISM))
            except (p11err.KeyUnextractable, p11err.KeyNotWrappable):
                return Migration(label, "re-import", "the token refused to wrap it; revoke it and import the "
                                 "exchange's secret again with --wrapped")
            mac = self._mac_of(obj)
            if not hmac.compare_digest(self._mac_of_blob(session, generation, blob), mac):
                return Migration(label, "conflict", "its blob unwrapped to a key with another MAC; nothing changed")
            return WrappedRecord(label=label, exchange=info.exchange, api_key=info.api_key, key_type="hmac",
                                 created=info.created, fingerprint=fingerprint_of(mac), master=generation,
                                 blob=blob, options=dict(info.options), header=passphrase)

        wrapped = self._call(wrap)  # type: ignore[attr-defined]
        if isinstance(wrapped, Migration):
            return wrapped
        try:
            store.add(wrapped)
        except KeyExists:
            return Migration(label, "conflict", "a row with this label appeared meanwhile (an import?); rerun "
                             "store migrate to compare the two")
        if row_written is not None:
            row_written(label)
        return self._finish_migration(label, outcome="migrated")

    def _finish_migration(self, label: str, outcome: str = "finished") -> Migration:
        """The key is in the store and the token: destroy the token's copy if the row computes its MAC."""
        record = self._require_store().get(label)
        if record is None:
            return Migration(label, "conflict", "its row went away meanwhile (revoked?); the token object is kept")

        def check_and_destroy(session: Any) -> Migration:
            found = self._ours(session, label)  # type: ignore[attr-defined]
            if len(found) != 1:
                return Migration(label, "conflict", f"{len(found)} token keys have this label; nothing destroyed")
            if not hmac.compare_digest(self._mac_of_blob(session, record.master, record.blob),
                                       self._mac_of(found[0][1])):
                return Migration(label, "conflict", "the store's row and the token object are different keys; "
                                 "both kept (the row is the one used): revoke the wrong one")
            self._destroy_token_key(session, label)  # type: ignore[attr-defined]
            return Migration(label, outcome, f"wrapped under master key generation {record.master}; "
                             "the token object is destroyed")

        result = self._call(check_and_destroy)  # type: ignore[attr-defined]
        self.evict_wrapped([label])
        return result

    def unusable_blobs(self, records: list[WrappedRecord]) -> dict[str, str]:
        """Label -> why, for each of RECORDS whose blob this token cannot use as the agent would: no master key
        of its generation here, a blob that does not unwrap, or a key whose fingerprint is not the row's."""
        def check(session: Any) -> dict[str, str]:
            bad = {}
            for record in records:
                try:
                    got = fingerprint_of(self._mac_of_blob(session, record.master, record.blob))
                except CustodyError as exc:
                    bad[record.label] = str(exc)
                    continue
                if not hmac.compare_digest(got, record.fingerprint):
                    bad[record.label] = "its blob unwraps to a key whose fingerprint is not the row's"
            return bad

        return self._call(check)  # type: ignore[attr-defined]

    @staticmethod
    def _mac_of(key: Any) -> bytes:
        return bytes(key.sign(FINGERPRINT_MESSAGE, mechanism=Mechanism.SHA256_HMAC))

    def _mac_of_blob(self, session: Any, generation: int, blob: bytes) -> bytes:
        """The fingerprint MAC of BLOB unwrapped as the agent unwraps it (the session object is destroyed)."""
        _, master = self._master(session, generation)
        unwrapped = self._unwrap_with(master, blob)
        try:
            return self._mac_of(unwrapped)
        finally:
            unwrapped.destroy()

    def _require_store(self) -> KeyStore:
        if self._store is None:
            raise CustodyError("no key store is configured for wrapped keys: set [store] in the agent's config")
        return self._store

    # -- use ---------------------------------------------------------------------------

    def _lookup_wrapped(self, label: str) -> Any:
        """The KeyEntry of wrapped key LABEL (unwrapping it on first use), or None when the store has none."""
        if self._store_fresh_until is not None and time.monotonic() > self._store_fresh_until:
            raise StoreUnavailable("the key store has not answered for a while; wrapped keys are refused until it "
                                   "does (a revocation could be missed)")
        with self._unwrapped_lock:
            entry = self._unwrapped.get(label)
            if entry is not None:
                self._unwrapped.move_to_end(label)
                self.unwrap_stats.hits += 1
                return entry
        record = self._store.get(label)  # type: ignore[union-attr]
        if record is None:
            return None
        from agent.custody.keyring import KeyEntry

        def unwrap(session: Any) -> Any:
            _, master = self._master(session, record.master)
            handle = self._unwrap_with(master, record.blob)
            return KeyEntry(info=record_info(record), handle=handle, generation=self._generation,  # type: ignore[attr-defined]
                            passphrase=record.header)

        entry = self._call(unwrap)  # type: ignore[attr-defined]
        evicted = []
        with self._unwrapped_lock:
            self.unwrap_stats.misses += 1
            cached = self._unwrapped.get(label)
            if cached is not None and cached.generation == entry.generation:
                # Another thread unwrapped it meanwhile, and may be signing with its object already: keep
                # that one and destroy ours, which nobody else has seen.
                self._unwrapped.move_to_end(label)
                evicted.append(entry)
                entry = cached
            else:
                self._unwrapped[label] = entry
            while len(self._unwrapped) > self._unwrap_cache_size:
                evicted.append(self._unwrapped.popitem(last=False)[1])
                self.unwrap_stats.evictions += 1
        self._destroy(evicted)
        return entry

    def _destroy(self, entries: list[Any]) -> None:
        """Destroy the session objects of ENTRIES; a signer still holding one gets KeyRevoked and looks up again."""
        if not entries:
            return

        def destroy(session: Any) -> None:
            for entry in entries:
                if entry.generation == self._generation:  # type: ignore[attr-defined]
                    try:
                        entry.handle.destroy()
                    except (p11err.ObjectHandleInvalid, p11err.KeyHandleInvalid):
                        pass

        try:
            self._call(destroy)  # type: ignore[attr-defined]
        except CustodyError:
            pass  # the session is gone: its objects went with it

    def evict_wrapped(self, labels: list[str]) -> None:
        with self._unwrapped_lock:
            gone = [e for e in (self._unwrapped.pop(label, None) for label in labels) if e is not None]
        for label in labels:
            self._missing.pop(label, None)  # type: ignore[attr-defined]  # re-imported: usable at once
        self._destroy(gone)

    def unwrapped_count(self) -> int:
        return len(self._unwrapped)

    def poll_store(self) -> list[str]:
        """Apply the store's events since the last poll (revocations, re-imports): evict those labels.

        Called every STORE_POLL_SECONDS by the agent (agent.server.StoreWatch). Raises StoreUnavailable.
        """
        store = self._require_store()
        if self._store_fresh_until is None:
            self._store_seq = store.head()
            labels: list[str] = []
        else:
            labels, self._store_seq = store.events_since(self._store_seq)
            self.evict_wrapped(labels)
        self._store_fresh_until = time.monotonic() + STORE_STALE_SECONDS
        return labels

    def revoke(self, label: str) -> KeyInfo:
        """A wrapped key: delete its row (every agent drops it at its next poll); otherwise the token's revoke."""
        if self._store is not None:
            record = self._store.revoke(label)
            if record is not None:
                self.evict_wrapped([label])
                return record_info(record)
        return super().revoke(label)  # type: ignore[misc]

    def list_wrapped(self) -> list[KeyInfo]:
        return [record_info(r) for r in self._store.records()] if self._store is not None else []
