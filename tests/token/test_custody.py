"""Token custody against a real SoftHSM2 token: keys sign, and no route gets them out."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

from agent.custody import (
    FINGERPRINT_MESSAGE,
    InvalidKeyMaterial,
    KeyExists,
    KeyNotFound,
    Keyring,
    hmac_key_material,
)
from agent.provision import import_key
from support.deploy import MODULE, TOKEN_LABEL
from support.token_objects import handle_of, in_token, object_count, objects_labelled
from support.leaks import new_secret

API_KEY = "apikey-public-part"


def import_secret(keyring: Keyring, label: str, secret: bytes):
    """An HMAC import as `keys import` does it (exchange rules, then custody)."""
    return import_key(keyring, label=label, exchange_id="binance", api_key=API_KEY, key_type="hmac", secret=secret)


@pytest.fixture
def imported(keyring: Keyring, label: str) -> tuple[str, str]:
    secret = new_secret(64)
    import_secret(keyring, label, secret.encode())
    return label, secret


@pytest.mark.parametrize("length", [8, 16, 31, 32, 47, 48, 63, 64, 65, 100, 127, 128])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_secrets_of_every_length_sign_right_with_each_hash(keyring: Keyring, label: str, length: int, hash_name: str):
    secret = new_secret(length)
    import_secret(keyring, label, secret.encode())
    entry = keyring.lookup(label)
    for message in (b"", b"symbol=LTCBTC&timestamp=1", bytes(range(256)) * 4):
        expected = hmac.new(secret.encode(), message, getattr(hashlib, hash_name)).digest()
        assert keyring.hmac(entry, message, hash_name) == expected


def test_padding_applies_only_below_64_bytes():
    assert hmac_key_material(b"k" * 8) == b"k" * 8 + b"\x00" * 56
    assert hmac_key_material(b"k" * 64) == b"k" * 64
    assert hmac_key_material(b"k" * 65) == b"k" * 65  # padding past a block would change the MAC


def test_key_object_attributes(keyring: Keyring, imported):
    label, _ = imported
    key = handle_of(keyring, label)
    expected = {
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
    }
    got = in_token(keyring, lambda s: {attr: key[attr] for attr in expected})
    assert got == expected


def test_value_cannot_be_read(keyring: Keyring, imported):
    key = handle_of(keyring, imported[0])
    with pytest.raises(p11err.AttributeSensitive):
        in_token(keyring, lambda s: key[Attribute.VALUE])


def test_key_cannot_be_wrapped_out(keyring: Keyring, imported):
    key = handle_of(keyring, imported[0])

    def wrap(session):
        wrapping = session.generate_key(
            KeyType.AES, 256, store=False, capabilities=pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.ENCRYPT
        )
        return wrapping.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)

    with pytest.raises((p11err.KeyUnextractable, p11err.KeyNotWrappable)):
        in_token(keyring, wrap)


@pytest.mark.parametrize("attr,value", [(Attribute.EXTRACTABLE, True), (Attribute.SENSITIVE, False)])
def test_protection_attributes_cannot_be_relaxed(keyring: Keyring, imported, attr, value):
    key = handle_of(keyring, imported[0])

    def relax(session):
        key[attr] = value

    with pytest.raises(p11err.PKCS11Error):
        in_token(keyring, relax)
    assert in_token(keyring, lambda s: key[attr]) is (not value)


def test_key_cannot_be_copied_as_extractable(keyring: Keyring, imported):
    key = handle_of(keyring, imported[0])

    def copy(session):
        return key.copy({Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False, Attribute.TOKEN: False})

    with pytest.raises(p11err.PKCS11Error):
        in_token(keyring, copy)
    keys = in_token(keyring, lambda s: list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                           Attribute.LABEL: imported[0]})))
    assert len(keys) == 1


def test_nothing_can_be_derived_from_the_key(keyring: Keyring, imported):
    key = handle_of(keyring, imported[0])

    def derive(session):
        # CONCATENATE_BASE_AND_DATA would yield a key whose value begins with ours. The key
        # declares no derive capability, so python-pkcs11 hides derive_key: call it directly.
        return pkcs11._pkcs11.DeriveMixin.derive_key(
            key,
            KeyType.GENERIC_SECRET,
            80,
            mechanism=Mechanism.CONCATENATE_BASE_AND_DATA,
            mechanism_param=b"x" * 16,
            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
        )

    before = object_count(keyring)
    with pytest.raises(p11err.PKCS11Error):
        in_token(keyring, derive)
    assert object_count(keyring) == before


def test_key_is_invisible_without_login(env, imported):
    """Login state is shared by all sessions of a process, so look from a process that never logs in."""
    script = (
        "import os, pkcs11;"
        f"os.environ['SOFTHSM2_CONF'] = {str(env.root / 'softhsm' / 'softhsm2.conf')!r};"
        f"token = pkcs11.lib({MODULE!r}).get_token(token_label={TOKEN_LABEL!r});"
        "s = token.open();"
        f"print(len(list(s.get_objects({{pkcs11.Attribute.LABEL: {imported[0]!r}}}))))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0"


def test_fingerprint_identifies_the_key_without_revealing_it(keyring: Keyring, imported):
    label, secret = imported
    info = keyring.lookup(label).info
    assert info.fingerprint == hmac.new(secret.encode(), FINGERPRINT_MESSAGE, hashlib.sha256).digest()[:16].hex()
    assert secret not in repr(info) and secret[:16] not in info.fingerprint


def test_list_shows_metadata(keyring: Keyring, imported):
    label, _ = imported
    (info,) = [k for k in keyring.list_keys() if k.label == label]
    assert (info.exchange, info.api_key, info.key_type) == ("binance", API_KEY, "hmac")
    assert info.created.endswith("Z") and len(info.created) == 20


def test_existing_label_is_never_overwritten(keyring: Keyring, imported):
    label, secret = imported
    with pytest.raises(KeyExists):
        import_secret(keyring, label, new_secret(64).encode())
    entry = keyring.lookup(label)
    assert keyring.hmac(entry, b"m", "sha256") == hmac.new(secret.encode(), b"m", hashlib.sha256).digest()


@pytest.mark.parametrize(
    "secret",
    [b"", b"short", b"has space in it 12345", b"tab\tinside12345", "nonascii-\u00e9\u00e9\u00e9\u00e9".encode(), b"x" * 1025,
     API_KEY.encode()],
    ids=["empty", "too-short", "space", "tab", "non-ascii", "too-long", "is-api-key"],
)
def test_malformed_secret_writes_nothing(keyring: Keyring, label: str, secret: bytes):
    before = object_count(keyring)
    with pytest.raises(InvalidKeyMaterial):
        import_secret(keyring, label, secret)
    assert object_count(keyring) == before


@pytest.mark.parametrize("bad_label", ["", "-leading", "has space", "x" * 65, "slash/inside", "\u00e9t\u00e9"])
def test_malformed_label_writes_nothing(keyring: Keyring, bad_label: str):
    before = object_count(keyring)
    with pytest.raises(InvalidKeyMaterial):
        import_secret(keyring, bad_label, new_secret().encode())
    assert object_count(keyring) == before


def test_revoke_destroys_the_object(keyring: Keyring, imported):
    label, _ = imported
    entry = keyring.lookup(label)
    keyring.revoke(label)
    assert objects_labelled(keyring, label) == []
    with pytest.raises(KeyNotFound):
        keyring.hmac(entry, b"m", "sha256")
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)
    with pytest.raises(KeyNotFound):
        keyring.revoke(label)


def test_foreign_objects_are_ignored(keyring: Keyring, label: str):
    """Another application's key on the same token is neither listed nor usable through us."""

    def create(session):
        return session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SIGN: True,
                Attribute.LABEL: label,
                Attribute.ID: b"\x01\x02",
                Attribute.VALUE: b"k" * 64,
            }
        )

    obj = in_token(keyring, create)
    try:
        assert label not in [k.label for k in keyring.list_keys()]
        with pytest.raises(KeyNotFound):
            keyring.lookup(label)
        with pytest.raises(KeyNotFound):
            keyring.revoke(label)
    finally:
        in_token(keyring, lambda s: obj.destroy())
