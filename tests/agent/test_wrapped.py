"""Wrapped keys on a real SoftHSM2 token: the master key, blobs in the key store, unwrapped session objects.

What must hold: the master key only wraps and unwraps and never leaves the token; a blob unwraps only into a
sensitive, non-extractable key that signs (the token refuses any other template); signatures equal the
in-token path's byte for byte (and ccxt's, through the agent process); the unwrapped-object cache is bounded;
a revocation in another process is applied at the next poll.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import time

import ccxt
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err

from agent.custody import KeyExists, KeyNotFound, KeyRevoked, Keyring
from agent.custody.master import MASTER_LABEL, master_id
from agent.custody.store import SqliteKeyStore
from agent.custody.wrapped import UNWRAPPED_TEMPLATE, WRAP_MECHANISM
from agent.provision import import_key
from support.deploy import Env, run_cli, start_agent
from support.leaks import new_secret
from support.token_objects import in_token, object_count

STORE_TABLE = '[store]\nbackend = "sqlite"\nsqlite_file = "state/keys.db"\n'


@pytest.fixture(scope="module")
def wrapped_env(env: Env) -> Env:
    """The session token, with a master key and a config naming a SQLite key store."""
    config = env.write_config("wrapped", extra=STORE_TABLE + "[state]\ndir = \"state-wrapped\"\n")
    first = run_cli(env, "store", "init", config=config)
    assert first.returncode == 0, first.stderr
    assert "created the master key" in first.stdout or "holds a master key already" in first.stdout
    again = run_cli(env, "store", "init", config=config)
    assert again.returncode == 0 and "holds a master key already" in again.stdout, again.stderr
    env.wrapped_config = config  # type: ignore[attr-defined]
    return env


@pytest.fixture
def store(wrapped_env: Env, keyring: Keyring):
    s = SqliteKeyStore(wrapped_env.root / "state" / "keys.db")
    keyring.use_store(s)
    yield s
    keyring.use_store(None)
    s.close()


def import_wrapped(keyring: Keyring, label: str, secret: bytes, exchange: str = "binance", **kw):
    return import_key(keyring, label=label, exchange_id=exchange, api_key="AKID-wrapped", key_type="hmac",
                      secret=secret, wrapped=True, **kw)


def _master(session):
    return session.get_key(object_class=ObjectClass.SECRET_KEY, id=master_id(1))


def test_master_key_only_wraps_and_unwraps_and_cannot_leave(wrapped_env: Env, keyring: Keyring):
    def attrs(session):
        m = _master(session)
        return {a: m[a] for a in (Attribute.LABEL, Attribute.TOKEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE,
                                  Attribute.MODIFIABLE, Attribute.COPYABLE, Attribute.ENCRYPT, Attribute.DECRYPT,
                                  Attribute.SIGN, Attribute.DERIVE, Attribute.WRAP, Attribute.UNWRAP,
                                  Attribute.NEVER_EXTRACTABLE, Attribute.LOCAL)}

    got = in_token(keyring, attrs)
    assert got[Attribute.LABEL] == MASTER_LABEL
    assert got[Attribute.TOKEN] and got[Attribute.SENSITIVE] and got[Attribute.NEVER_EXTRACTABLE] and got[Attribute.LOCAL]
    for refused in (Attribute.EXTRACTABLE, Attribute.MODIFIABLE, Attribute.COPYABLE, Attribute.ENCRYPT,
                    Attribute.DECRYPT, Attribute.SIGN, Attribute.DERIVE):
        assert got[refused] is False, refused
    assert got[Attribute.WRAP] and got[Attribute.UNWRAP]
    with pytest.raises(p11err.AttributeSensitive):
        in_token(keyring, lambda s: _master(s)[Attribute.VALUE])


@pytest.mark.parametrize("length", [8, 32, 63, 64, 72, 128])
def test_wrapped_key_signs_exactly_as_the_token_key(store, keyring: Keyring, label: str, length: int):
    secret = new_secret(length).encode()
    before = object_count(keyring)
    info = import_wrapped(keyring, label, secret)
    assert info.storage == "wrapped" and info.registered
    # Nothing persistent was added to the token: the key is a row, its blob wrapped.
    assert object_count(keyring) == before
    record = store.get(label)
    assert record is not None and secret not in record.blob and len(record.blob) >= 72
    token_label = label + "-token"
    import_key(keyring, label=token_label, exchange_id="binance", api_key="AKID-token", key_type="hmac", secret=secret)
    wrapped, in_token_key = keyring.lookup(label), keyring.lookup(token_label)
    assert wrapped.info.storage == "wrapped" and in_token_key.info.storage == "token"
    assert wrapped.info.fingerprint == in_token_key.info.fingerprint
    for hash_name, digest in (("sha256", hashlib.sha256), ("sha384", hashlib.sha384), ("sha512", hashlib.sha512)):
        message = f"symbol=BTCUSDT&side=BUY&timestamp={time.time_ns()}".encode()
        got = keyring.hmac(wrapped, message, hash_name)
        assert got == keyring.hmac(in_token_key, message, hash_name) == hmac.new(secret, message, digest).digest()
    keyring.revoke(token_label)


def test_unwrapped_object_is_a_sensitive_session_key_that_cannot_be_read(store, keyring: Keyring, label: str):
    import_wrapped(keyring, label, new_secret(64).encode())
    handle = keyring.lookup(label).handle

    def attrs(_session):
        return {a: handle[a] for a in UNWRAPPED_TEMPLATE if a != Attribute.VERIFY}

    got = in_token(keyring, attrs)
    assert got == {a: v for a, v in UNWRAPPED_TEMPLATE.items() if a != Attribute.VERIFY}
    assert got[Attribute.TOKEN] is False and got[Attribute.EXTRACTABLE] is False and got[Attribute.SENSITIVE] is True
    with pytest.raises(p11err.AttributeSensitive):
        in_token(keyring, lambda s: handle[Attribute.VALUE])
    # Nor can it be wrapped out under the master key (or any other).
    with pytest.raises(p11err.KeyUnextractable):
        in_token(keyring, lambda s: _master(s).wrap_key(handle, mechanism=WRAP_MECHANISM))


@pytest.mark.parametrize("asked", [
    {Attribute.EXTRACTABLE: True}, {Attribute.SENSITIVE: False}, {Attribute.DERIVE: True},
    {Attribute.ENCRYPT: True}, {Attribute.DECRYPT: True}, {Attribute.WRAP: True}, {Attribute.UNWRAP: True},
], ids=lambda d: next(iter(d)).name + "=" + str(next(iter(d.values()))))
def test_the_token_refuses_to_unwrap_a_blob_as_anything_readable(store, keyring: Keyring, label: str, asked):
    """What a PIN holder with a copy of the database would try: the master key's template forbids it."""
    import_wrapped(keyring, label, new_secret(40).encode())
    blob = store.get(label).blob
    with pytest.raises(p11err.TemplateInconsistent):
        in_token(keyring, lambda s: _master(s).unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, blob, mechanism=WRAP_MECHANISM, store=False,
            template={**UNWRAPPED_TEMPLATE, **asked}))
    # The same blob, asked for what the agent asks, unwraps and signs.
    key = in_token(keyring, lambda s: _master(s).unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, blob, mechanism=WRAP_MECHANISM, store=False,
        template=dict(UNWRAPPED_TEMPLATE)))
    assert len(in_token(keyring, lambda s: bytes(key.sign(b"m", mechanism=Mechanism.SHA256_HMAC)))) == 32
    in_token(keyring, lambda s: key.destroy())


def test_a_damaged_blob_is_refused_and_nothing_leaks(store, keyring: Keyring, label: str):
    import_wrapped(keyring, label, new_secret(64).encode())
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE wrapped_keys SET blob = ? WHERE label = ?", (b"\x00" * 72, label))
    keyring.use_store(store)  # forget what was unwrapped
    with pytest.raises(Exception) as caught:
        keyring.lookup(label)
    assert "does not unwrap" in str(caught.value)


def test_labels_are_unique_across_token_and_store(store, keyring: Keyring, label: str):
    import_wrapped(keyring, label, new_secret(64).encode())
    with pytest.raises(KeyExists):
        import_wrapped(keyring, label, new_secret(64).encode())
    with pytest.raises(KeyExists):
        import_key(keyring, label=label, exchange_id="binance", api_key="AKID-x", key_type="hmac",
                   secret=new_secret(64).encode())
    other = label + "-t"
    import_key(keyring, label=other, exchange_id="binance", api_key="AKID-x", key_type="hmac",
               secret=new_secret(64).encode())
    with pytest.raises(KeyExists):
        import_wrapped(keyring, other, new_secret(64).encode())
    keyring.revoke(other)


def test_long_secrets_whose_unwrap_padding_would_change_the_mac_are_refused(store, keyring: Keyring, label: str):
    with pytest.raises(Exception, match="multiple of 8"):
        import_wrapped(keyring, label, new_secret(65).encode())
    assert store.get(label) is None


def test_clear_passphrases_are_not_wrapped(store, keyring: Keyring, label: str):
    with pytest.raises(Exception, match="clear passphrase"):
        import_key(keyring, label=label, exchange_id="okx", api_key="AKID-okx", key_type="hmac",
                   secret=new_secret(32).encode(), passphrase="pass-phrase", wrapped=True)
    assert store.get(label) is None


def test_kucoin_signed_passphrase_is_the_tokens_mac(store, keyring: Keyring, label: str):
    secret = new_secret(36)
    info = import_key(keyring, label=label, exchange_id="kucoin", api_key="AKID-kc", key_type="hmac",
                      secret=secret.encode(), passphrase="pass-phrase", wrapped=True)
    assert info.has_passphrase
    import base64
    expected = base64.b64encode(hmac.new(secret.encode(), b"pass-phrase", hashlib.sha256).digest()).decode()
    assert keyring.lookup(label).passphrase == expected
    assert "pass-phrase" not in json.dumps(store.get(label).options)


def test_unwrapped_cache_is_bounded_and_evicted_objects_are_destroyed(wrapped_env: Env, keyring: Keyring, label: str):
    s = SqliteKeyStore(wrapped_env.root / "state" / "bounded.db")
    keyring.use_store(s, cache_size=2)
    try:
        secrets_ = {f"{label}-{i}": new_secret(64).encode() for i in range(4)}
        for name, secret in secrets_.items():
            import_wrapped(keyring, name, secret)
        entries = {name: keyring.lookup(name) for name in secrets_}
        assert keyring.unwrapped_count() == 2 and keyring.unwrap_stats.evictions == 2
        oldest = entries[f"{label}-0"]
        with pytest.raises(KeyRevoked):  # its session object was destroyed at eviction
            keyring.hmac(oldest, b"m", "sha256")
        for name, secret in secrets_.items():  # every key still signs: unwrapped again on demand
            assert keyring.hmac(keyring.lookup(name), b"m", "sha256") == hmac.new(secret, b"m", hashlib.sha256).digest()
        hits = keyring.unwrap_stats.hits
        keyring.lookup(f"{label}-3")
        assert keyring.unwrap_stats.hits == hits + 1
    finally:
        keyring.use_store(None)
        s.close()


def test_threads_unwrapping_one_key_at_once_never_kill_each_others_object(store, keyring: Keyring, label: str):
    secret = new_secret(64).encode()
    import_wrapped(keyring, label, secret)
    expected = hmac.new(secret, b"m", hashlib.sha256).digest()

    def cold_sign(_: int) -> bytes:
        return keyring.hmac(keyring.lookup(label), b"m", "sha256")

    from concurrent.futures import ThreadPoolExecutor

    for _ in range(20):
        keyring.use_store(store)  # every round starts cold: eight threads race to unwrap
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(cold_sign, range(8))) == {expected}
    assert keyring.unwrapped_count() == 1


def test_revocation_in_another_process_is_applied_at_the_next_poll(wrapped_env: Env, store, keyring: Keyring, label: str):
    import_wrapped(keyring, label, new_secret(64).encode())
    keyring.poll_store()
    entry = keyring.lookup(label)
    keyring.hmac(entry, b"m", "sha256")
    proc = run_cli(wrapped_env, "keys", "revoke", "--label", label, "--yes", config=wrapped_env.wrapped_config)
    assert proc.returncode == 0, proc.stderr
    assert label in keyring.poll_store()
    with pytest.raises(KeyRevoked):
        keyring.hmac(entry, b"m", "sha256")
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)
    assert store.get(label) is None


def test_cli_import_wrapped_and_agent_signs_as_ccxt(wrapped_env: Env, label: str):
    secret = new_secret(64)
    config = wrapped_env.wrapped_config
    proc = run_cli(wrapped_env, "keys", "import", "--wrapped", "--label", label, "--exchange", "binance",
                   "--api-key", "AKID-e2e", stdin=secret + "\n", config=config)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(run_cli(wrapped_env, "keys", "list", "--json", config=config, check=True).stdout)
    (info,) = [k for k in listed if k["label"] == label]
    assert info["storage"] == "wrapped" and info["api_key"] == "AKID-e2e"
    agent = start_agent(wrapped_env, config)
    try:
        from signing_agent_client.client import KeyNotFoundError, SignerClient

        with SignerClient(agent.target) as client:
            got = client.sign(label, "GET", "/api/v3/openOrders", query={"symbol": "BTCUSDT"})
            stamp = int(re.search(r"timestamp=(\d+)", got.path).group(1))
            ex = ccxt.binance({"apiKey": "AKID-e2e", "secret": secret, "options": {"recvWindow": None}})
            ex.nonce = lambda: stamp
            expected = ex.sign("openOrders", ["private"], "GET", {"symbol": "BTCUSDT"})
            assert "https://api.binance.com" + got.path == expected["url"]
            assert got.headers_dict() == expected["headers"]
            # Revoked by another process: refused within the poll interval.
            assert run_cli(wrapped_env, "keys", "revoke", "--label", label, "--yes", config=config).returncode == 0
            deadline = time.monotonic() + 1.0
            while True:
                try:
                    client.sign(label, "GET", "/api/v3/openOrders", query={"symbol": "BTCUSDT"})
                except KeyNotFoundError:
                    break
                assert time.monotonic() < deadline, "a revoked wrapped key was still signed after 1 s"
                time.sleep(0.05)
    finally:
        assert agent.stop() == 0
