"""Every kind of key the agent keeps: asymmetric keys imported and generated in the token,
passphrases, Kraken's base64 secrets, registration, and revocation of all of a key's objects.

Against a real SoftHSM2 token; signatures are checked with `cryptography`, not with our code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

import pkcs11
from agent import provision
from agent.custody import InvalidKeyMaterial, KeyExists, Keyring, KeyNotFound, public_der, public_fingerprint
from support.leaks import new_secret, register_secret
from support.signatures import verify
from support.token_objects import in_token, object_count, objects_labelled

MESSAGE = b"GET\n/api/v3/account\ntimestamp=1700000000000"


def pem_of(key) -> bytes:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    register_secret(pem.decode().split("\n")[1])  # a line of the key body: enough for the leak guard
    return pem


KEYS = {
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


@pytest.mark.parametrize("key_type", list(KEYS))
def test_imported_private_key_signs_in_the_token(keyring: Keyring, label: str, key_type: str):
    private = KEYS[key_type]()
    info = provision.import_key(keyring, label=label, exchange_id="coinbase" if key_type == "ec-p256" else "binance",
                                api_key="organizations/x/apiKeys/y", key_type=key_type, secret=pem_of(private))
    assert info.key_type == key_type and info.registered
    assert info.fingerprint == public_fingerprint(public_der(private.public_key()))
    entry = keyring.lookup(label)
    signature = keyring.sign(entry, MESSAGE)
    verify(private.public_key(), key_type, signature, MESSAGE)
    if key_type != "ec-p256":  # deterministic: equal to the software signature byte for byte
        expected = (private.sign(MESSAGE) if key_type == "ed25519"
                    else private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))
        assert signature == expected
    assert public_der(keyring.public_key(label)) == public_der(private.public_key())


@pytest.mark.parametrize("key_type", list(KEYS))
def test_private_half_is_sensitive_and_never_leaves(keyring: Keyring, label: str, key_type: str):
    provision.import_key(keyring, label=label, exchange_id="coinbase" if key_type == "ec-p256" else "binance",
                         api_key="AKID", key_type=key_type, secret=pem_of(KEYS[key_type]()))
    handle = keyring.lookup(label).handle
    attrs = in_token(keyring, lambda s: {a: handle[a] for a in (
        Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.SIGN, Attribute.DECRYPT, Attribute.DERIVE,
        Attribute.UNWRAP, Attribute.MODIFIABLE, Attribute.COPYABLE, Attribute.TOKEN, Attribute.PRIVATE)})
    assert attrs == {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                     Attribute.DECRYPT: False, Attribute.DERIVE: False, Attribute.UNWRAP: False,
                     Attribute.MODIFIABLE: False, Attribute.COPYABLE: False, Attribute.TOKEN: True,
                     Attribute.PRIVATE: True}
    secret_attr = Attribute.PRIVATE_EXPONENT if key_type == "rsa" else Attribute.VALUE
    with pytest.raises(p11err.AttributeSensitive):
        in_token(keyring, lambda s: handle[secret_attr])

    def wrap(session):
        wrapping = session.generate_key(
            KeyType.AES, 256, store=False, capabilities=pkcs11.MechanismFlag.WRAP | pkcs11.MechanismFlag.ENCRYPT
        )
        return wrapping.wrap_key(handle, mechanism=Mechanism.AES_KEY_WRAP_PAD)

    with pytest.raises((p11err.KeyUnextractable, p11err.KeyNotWrappable)):
        in_token(keyring, wrap)


@pytest.mark.parametrize("key_type,exchange", [("ed25519", "binance"), ("rsa", "binance")])
def test_generated_key_is_born_in_the_token(keyring: Keyring, label: str, key_type: str, exchange: str):
    info, public = provision.generate_key(keyring, label=label, exchange_id=exchange, key_type=key_type)
    assert not info.registered and info.fingerprint == public_fingerprint(public_der(public))
    handle = keyring.lookup(label).handle
    # Generated inside: never extractable, and the module says it was never extractable at all.
    flags = in_token(keyring, lambda s: (handle[Attribute.LOCAL], handle[Attribute.NEVER_EXTRACTABLE],
                                         handle[Attribute.ALWAYS_SENSITIVE]))
    assert flags == (True, True, True)
    verify(public, key_type, keyring.sign(keyring.lookup(label), MESSAGE), MESSAGE)
    pem = provision.public_key_pem(public)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert public_der(serialization.load_pem_public_key(pem.encode())) == public_der(keyring.public_key(label))
    registered = provision.register(keyring, label=label, api_key="AKID-issued")
    assert registered.registered and registered.api_key == "AKID-issued"
    assert keyring.lookup(label).info.api_key == "AKID-issued"
    with pytest.raises(KeyExists):
        provision.register(keyring, label=label, api_key="AKID-other")


def test_generation_is_refused_where_the_exchange_does_not_take_it(keyring: Keyring, label: str):
    before = object_count(keyring)
    with pytest.raises(InvalidKeyMaterial, match="binanceus does not take ed25519 keys generated"):
        provision.generate_key(keyring, label=label, exchange_id="binanceus", key_type="ed25519")
    assert object_count(keyring) == before


@pytest.mark.parametrize(
    "secret,message",
    [
        (b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", "not a private key"),
        (base64.b64encode(b"x" * 31), "32 or 64 bytes"),
        (base64.b64encode(b"\x01" * 64), "does not match"),
    ],
    ids=["bad-pem", "short-seed", "mismatched-public-half"],
)
def test_malformed_private_keys_write_nothing(keyring: Keyring, label: str, secret: bytes, message: str):
    before = object_count(keyring)
    with pytest.raises(InvalidKeyMaterial, match=message):
        provision.import_key(keyring, label=label, exchange_id="binance", api_key="AKID", key_type="ed25519",
                             secret=secret)
    assert object_count(keyring) == before


def test_wrong_key_type_for_the_pem_is_refused(keyring: Keyring, label: str):
    with pytest.raises(InvalidKeyMaterial, match="not a rsa key"):
        provision.import_key(keyring, label=label, exchange_id="binance", api_key="AKID", key_type="rsa",
                             secret=pem_of(KEYS["ed25519"]()))


def test_small_rsa_keys_are_refused(keyring: Keyring, label: str):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidKeyMaterial, match="2048"):
        provision.import_key(keyring, label=label, exchange_id="binance", api_key="AKID", key_type="rsa",
                             secret=pem_of(weak))


def test_coinbase_base64_ed25519_secret(keyring: Keyring, label: str):
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    secret = register_secret(base64.b64encode(seed + public).decode())
    provision.import_key(keyring, label=label, exchange_id="coinbase", api_key="key-id", key_type="ed25519",
                         secret=secret.encode())
    assert keyring.sign(keyring.lookup(label), MESSAGE) == private.sign(MESSAGE)


def test_clear_passphrase_is_kept_for_the_header(keyring: Keyring, label: str):
    passphrase = register_secret("Pass-" + new_secret(12))
    provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID", key_type="hmac",
                         secret=new_secret(32).encode(), passphrase=passphrase)
    entry = keyring.lookup(label)
    assert entry.passphrase == passphrase and entry.info.has_passphrase
    assert passphrase not in repr(entry) and passphrase not in repr(keyring.list_keys())
    # Kept in a private data object, not in the key's metadata.
    metadata = in_token(keyring, lambda s: bytes(entry.handle[Attribute.ID]))
    assert passphrase.encode() not in metadata


@pytest.mark.parametrize("version", ["2", "3"])
def test_kucoin_passphrase_is_signed_in_the_token(keyring: Keyring, label: str, version: str):
    secret, passphrase = new_secret(36), register_secret(new_secret(10))
    provision.import_key(keyring, label=label, exchange_id="kucoin", api_key="AKID", key_type="hmac",
                         secret=secret.encode(), passphrase=passphrase, options={"key_version": version})
    entry = keyring.lookup(label)
    expected = base64.b64encode(hmac.new(secret.encode(), passphrase.encode(), hashlib.sha256).digest()).decode()
    assert entry.passphrase == expected  # the clear passphrase is not stored at all
    assert entry.info.options == {"key_version": version}


def test_passphrase_required_and_refused_by_exchange(keyring: Keyring, label: str):
    with pytest.raises(InvalidKeyMaterial, match="come with a passphrase"):
        provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID", key_type="hmac",
                             secret=new_secret(32).encode())
    with pytest.raises(InvalidKeyMaterial, match="have no passphrase"):
        provision.import_key(keyring, label=label, exchange_id="binance", api_key="AKID", key_type="hmac",
                             secret=new_secret(64).encode(), passphrase="x")
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)


def test_kraken_secret_is_base64_decoded_before_import(keyring: Keyring, label: str):
    key = bytes(range(64))
    secret = register_secret(base64.b64encode(key).decode())
    provision.import_key(keyring, label=label, exchange_id="kraken", api_key="AKID", key_type="hmac",
                         secret=secret.encode())
    mac = keyring.hmac(keyring.lookup(label), b"m", "sha512")
    assert mac == hmac.new(key, b"m", hashlib.sha512).digest()
    with pytest.raises(InvalidKeyMaterial, match="base64"):
        provision.import_key(keyring, label=label + "b", exchange_id="kraken", api_key="AKID", key_type="hmac",
                             secret=b"not*base64*at*all")


def test_revoke_destroys_every_object_of_the_key(keyring: Keyring, label: str):
    provision.import_key(keyring, label=label, exchange_id="bitget", api_key="AKID", key_type="rsa",
                         secret=pem_of(KEYS["rsa"]()), passphrase="pp-" + new_secret(8))
    classes = sorted(int(in_token(keyring, lambda s, o=o: o[Attribute.CLASS])) for o in objects_labelled(keyring, label))
    assert classes == sorted([int(ObjectClass.PRIVATE_KEY), int(ObjectClass.PUBLIC_KEY), int(ObjectClass.DATA)])
    keyring.revoke(label)
    assert objects_labelled(keyring, label) == []


def test_private_keys_refuse_sign_recover(keyring: Keyring, label: str):
    """C_SignRecover with raw RSA would be a decryption oracle; the key refuses it."""
    provision.import_key(keyring, label=label, exchange_id="binance", api_key="AKID", key_type="rsa",
                         secret=pem_of(KEYS["rsa"]()))
    handle = keyring.lookup(label).handle
    assert in_token(keyring, lambda s: handle[Attribute.SIGN_RECOVER]) is False


def test_an_import_clears_what_an_interrupted_import_left(keyring: Keyring, label: str):
    provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID", key_type="hmac",
                         secret=new_secret(32).encode(), passphrase="pp-" + new_secret(6))
    # As if interrupted before its key was written (imports write the key last): only the account.
    handle = keyring.lookup(label).handle
    in_token(keyring, lambda s: handle.destroy())
    keyring.forget_cached_handles()
    secret = new_secret(32)
    info = provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID2", key_type="hmac",
                                secret=secret.encode(), passphrase="pp-" + new_secret(6))
    assert info.api_key == "AKID2" and keyring.lookup(label).info.registered
    assert len(objects_labelled(keyring, label)) == 2  # the new key and its account, no leftover


def test_revoke_clears_what_an_interrupted_revoke_left(keyring: Keyring, label: str):
    provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID", key_type="hmac",
                         secret=new_secret(32).encode(), passphrase="pp-" + new_secret(6))
    # Interrupted after the key was destroyed: only the account object is left.
    handle = keyring.lookup(label).handle
    in_token(keyring, lambda s: handle.destroy())
    keyring.forget_cached_handles()
    assert keyring.revoke(label).key_type == "(incomplete)"
    assert objects_labelled(keyring, label) == []
    provision.import_key(keyring, label=label, exchange_id="okx", api_key="AKID", key_type="hmac",
                         secret=new_secret(32).encode(), passphrase="pp-" + new_secret(6))
