"""The lean token call (agent.custody.tokencall: C_SignInit + C_Sign through ctypes) against a real
SoftHSM2 token: the same bytes as python-pkcs11 and as the software references, under concurrency,
and the same errors (a revoked key, a lost session) as custody handles on python-pkcs11's path."""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pkcs11 import exceptions as p11err

from agent import provision
from agent.custody import KeyNotFound, KeyRevoked, Keyring
from agent.custody.tokencall import error_for
from support.leaks import new_secret, register_secret
from support.signatures import verify

MESSAGE = b"GET\n/api/v3/account\ntimestamp=1700000000000"
KEYS = {
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


def pem_of(key) -> bytes:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    register_secret(pem.decode().split("\n")[1])  # a line of the key body: enough for the leak guard
    return pem


def import_secret(keyring: Keyring, label: str, secret: bytes):
    """An HMAC import as `keys import` does it (exchange rules, then custody)."""
    return provision.import_key(keyring, label=label, exchange_id="binance", api_key="apikey-public-part",
                                key_type="hmac", secret=secret)


def test_softhsm2_signs_through_the_lean_call(keyring: Keyring):
    assert keyring.lean_token_calls
    with keyring.python_pkcs11_signing():
        assert not keyring.lean_token_calls
    assert keyring.lean_token_calls


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_hmacs_equal_the_software_hmac_and_python_pkcs11s(keyring: Keyring, label: str, hash_name: str):
    secret = new_secret(64)
    import_secret(keyring, label, secret.encode())
    entry = keyring.lookup(label)
    for message in (b"", b"symbol=BTCUSDT&side=BUY&timestamp=1", bytes(range(256)) * 40):
        lean = keyring.hmac(entry, message, hash_name)
        with keyring.python_pkcs11_signing():
            reference = keyring.hmac(entry, message, hash_name)
        assert lean == reference == hmac.new(secret.encode(), message, getattr(hashlib, hash_name)).digest()


@pytest.mark.parametrize("key_type", list(KEYS))
def test_signatures_verify_and_deterministic_ones_equal_the_softwares(keyring: Keyring, label: str, key_type: str):
    private = KEYS[key_type]()
    provision.import_key(keyring, label=label, exchange_id="coinbase" if key_type == "ec-p256" else "binance",
                         api_key="organizations/x/apiKeys/y", key_type=key_type, secret=pem_of(private))
    entry = keyring.lookup(label)
    lean = keyring.sign(entry, MESSAGE)
    with keyring.python_pkcs11_signing():
        reference = keyring.sign(entry, MESSAGE)
    verify(private.public_key(), key_type, lean, MESSAGE)
    if key_type == "ec-p256":  # randomized: both verify, and differ
        verify(private.public_key(), key_type, reference, MESSAGE)
        assert lean != reference
    else:
        expected = (private.sign(MESSAGE) if key_type == "ed25519" else
                    private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))
        assert lean == reference == expected


def test_threads_signing_at_once_each_get_their_own_right_mac(keyring: Keyring, label: str):
    """The call's buffers are shared and the GIL is released inside it: custody's lock must keep
    every thread's MAC its own."""
    secret = new_secret(48).encode()
    import_secret(keyring, label, secret)
    entry = keyring.lookup(label)
    wrong: list[tuple[bytes, bytes]] = []
    done = []

    def work(n: int) -> None:
        for i in range(300):
            message = f"thread={n}&i={i}&".encode() * (1 + (i + n) % 7)
            mac = keyring.hmac(entry, message, "sha256" if i % 2 else "sha512")
            expected = hmac.new(secret, message, hashlib.sha256 if i % 2 else hashlib.sha512).digest()
            if mac != expected:
                wrong.append((message, mac))
        done.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(done) == list(range(8)) and not wrong


def test_a_key_revoked_under_a_cached_handle_is_refused_as_revoked(keyring: Keyring, label: str):
    import_secret(keyring, label, new_secret(64).encode())
    entry = keyring.lookup(label)
    assert keyring.hmac(entry, b"m", "sha256")
    keyring.revoke(label)
    with pytest.raises(KeyRevoked):
        keyring.hmac(entry, b"m", "sha256")  # the stale handle: CKR_OBJECT_HANDLE_INVALID or KEY_HANDLE_INVALID
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)


def test_return_values_become_the_exceptions_python_pkcs11_raises():
    assert isinstance(error_for(0x82), p11err.ObjectHandleInvalid)
    assert isinstance(error_for(0x60), p11err.KeyHandleInvalid)
    assert isinstance(error_for(0xB3), p11err.SessionHandleInvalid)
    assert isinstance(error_for(0x32), p11err.DeviceRemoved)
    assert isinstance(error_for(0x70), p11err.MechanismInvalid)
    unmapped = error_for(0x190)  # CKR_CRYPTOKI_NOT_INITIALIZED: custody starts the module afresh
    assert type(unmapped) is p11err.PKCS11Error and "0x190" in str(unmapped)
