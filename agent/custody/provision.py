"""Writing keys to the token: import, generation in the token, registration, revocation.

Token-side only: an exchange's rules (key types, options, passphrase, secret encodings) are
applied before, by agent/provision.py, which calls the methods here.

Every write runs under the keyring's lock and either completes or leaves nothing: the objects
a failed write created are destroyed, and the signing object is written last, so a crash in
the middle leaves no usable key, only leftovers the next write of that label removes.
Provisioning is a mixin of Keyring, so that the writes stay methods of the keyring every caller
holds: it uses the session (`_call`, `_create`, `_fit`, `_require`, `_signer`, `_not_found`), the
keyring's search (`_ours`) and its cache eviction (`_forget_label`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

from agent.custody.errors import CustodyError, InvalidKeyMaterial, KeyExists, KeyNotFound
from agent.custody.objects import (
    ACCOUNT_APP,
    ED25519_PARAMS,
    FINGERPRINT_MESSAGE,
    KEY_COMMON,
    PRIVATE_HALF,
    RSA_BITS,
    KeyInfo,
    account_template,
    decode_metadata,
    encode_account,
    encode_metadata,
    fingerprint_of,
    hmac_key_material,
    hmac_key_template,
    new_info,
    private_key_templates,
    public_der,
    public_fingerprint,
    public_key_of,
    verify_signature,
)
from agent.custody.session import KEY_TYPE_ADVICE
from agent.names import validate_api_key, validate_label

PASSPHRASE_MAX_LEN = 128
SECRET_MIN_LEN = 8
SECRET_MAX_LEN = 1024


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


def _left_beside_a_key(obj: Any, cls: Any, label: str) -> bool:
    """Is OBJ (of class CLS) one of ours that sits beside a signing key: its account or public half?

    What an interrupted import or revoke leaves without its key; other applications' objects
    with the same label are never counted.
    """
    if cls == ObjectClass.DATA:
        return obj[Attribute.APPLICATION] == ACCOUNT_APP
    return cls == ObjectClass.PUBLIC_KEY and decode_metadata(label, bytes(obj[Attribute.ID])) is not None


class Provisioning:
    """Keyring's writes (see the module docstring)."""

    @staticmethod
    def _label_free(session: Any, label: str) -> None:
        """Refuse a label that names a key or another application's object; remove what an
        interrupted import of ours left (an account or public key without its signing key, which
        imports write last)."""
        objects = list(session.get_objects({Attribute.LABEL: label}))
        for obj in objects:
            cls = obj[Attribute.CLASS]
            if not _left_beside_a_key(obj, cls, label) or any(
                    o[Attribute.CLASS] in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY) for o in objects):
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
            self._forget_label(label, exists=True)
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
        wrapped: bool = False,
    ) -> KeyInfo:
        """Store KEY (HMAC key bytes) as a new non-extractable key, with its account; or, when WRAPPED,
        as a blob in the key store wrapped under the token's master key (WrappedKeys._store_wrapped).

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
        info = new_info(label, exchange, api_key, "hmac", expected_fp, options or {}, passphrase)
        material = hmac_key_material(key)
        if wrapped:
            try:
                return self._store_wrapped(info, material, passphrase, sign_passphrase)  # type: ignore[attr-defined]
            finally:
                material[:] = b"\x00" * len(material)

        header_value = passphrase
        if passphrase is not None and sign_passphrase:  # checked against the token's own MAC below
            header_value = base64.b64encode(hmac.new(bytes(key), passphrase.encode(), hashlib.sha256).digest()).decode()

        def build(session: Any, created: list[Any]) -> KeyInfo:
            self._require(Mechanism.SHA256_HMAC, "HMAC-SHA256", "the import's self-test needs it; use a token with it")
            self._label_free(session, label)
            # The account first, the key last: a kill in between leaves no key (see _label_free).
            created.append(self._create(session, account_template(label, encode_account(api_key, header_value))))
            try:
                obj = self._create(session, hmac_key_template(label, encode_metadata(info), material))
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
        key_type = private_key_templates(private_key, label, b"")[0]
        # Asymmetric keys' fingerprints come from their public half, read from the token.
        info = new_info(label, exchange, api_key, key_type, "", options or {}, passphrase)
        _, private_t, public_t = private_key_templates(private_key, label, encode_metadata(info))

        def build(session: Any, created: list[Any]) -> KeyInfo:
            self._signer(key_type)  # before anything is written: the token must be able to use the key
            self._label_free(session, label)
            # The private key last (see import_hmac_key).
            created.append(self._create(session, account_template(label, encode_account(api_key, passphrase))))
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
        info = new_info(label, exchange, "", key_type, "", options or {}, None)
        metadata = encode_metadata(info)
        holder: dict[str, Any] = {}

        def build(session: Any, created: list[Any]) -> KeyInfo:
            if key_type == "ed25519":
                self._require(Mechanism.EC_EDWARDS_KEY_PAIR_GEN, "Ed25519 key generation", KEY_TYPE_ADVICE[key_type])
            else:
                self._require(Mechanism.RSA_PKCS_KEY_PAIR_GEN, "RSA key generation", KEY_TYPE_ADVICE[key_type])
            self._signer(key_type)
            self._label_free(session, label)
            common = {Attribute.LABEL: label, Attribute.ID: metadata}
            public_t = self._fit({**KEY_COMMON, **common, Attribute.VERIFY: True, Attribute.ENCRYPT: False,
                                  Attribute.WRAP: False, Attribute.DERIVE: False})
            private_t = self._fit({**PRIVATE_HALF, **common})
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
            public = public_key_of(pub, key_type)
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
            created.append(self._create(session, account_template(label, encode_account(api_key, header_value))))
            if len(list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label,
                                             Attribute.APPLICATION: ACCOUNT_APP}))) != 1:
                raise KeyExists(f"another registration of {label!r} ran at the same time; nothing was kept")
            return replace(info, api_key=api_key, has_passphrase=passphrase is not None)

        return self._provision(build, label)

    def revoke(self, label: str) -> KeyInfo:
        """Destroy the key labelled LABEL (all its objects). Running agents refuse it at their next use."""

        def destroy(session: Any) -> KeyInfo:
            found, leftovers = self._destroy_token_key(session, label)
            if not found:
                if leftovers:
                    return KeyInfo(label=label, exchange="", api_key="", key_type="(incomplete)", created="",
                                   fingerprint="")
                raise self._not_found(KeyNotFound(f"no key labelled {label!r}"))
            return found[0][0]

        return self._call(destroy)

    def _destroy_token_key(self, session: Any, label: str) -> tuple[list[tuple[KeyInfo, Any, str | None]], int]:
        """Destroy the token objects of key LABEL (under the lock): (the keys found, the leftovers destroyed)."""
        found = self._ours(session, label)
        # The signing object first: from then on the key is unusable, whatever happens next.
        for _, obj, _ in found:
            obj.destroy()
        # Then its public half and account; also when a revoke or import was interrupted
        # and left them without a key, so that the label can be used again.
        leftovers = 0
        for cls in (ObjectClass.PUBLIC_KEY, ObjectClass.DATA):
            for obj in list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})):
                if _left_beside_a_key(obj, cls, label):
                    obj.destroy()
                    leftovers += 1
        self._forget_label(label, exists=False)
        return found, leftovers
