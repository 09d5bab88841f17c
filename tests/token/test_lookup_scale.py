"""Key lookup that does not grow with the key count: the listing at start indexes every key.

Against the session's real SoftHSM2 token. "Scans" are the searches custody reports through
Keyring.recording_searches(); the token is never mocked.
Changes made by another process (the CLI) must still be seen within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11 import Attribute

from agent.custody import KeyNotFound, KeyRevoked, Keyring
from agent.provision import import_key
from support.deploy import run_cli
from support.leaks import new_secret

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.deploy import API_KEY, fill  # noqa: E402

MESSAGE = b"timestamp=1763750000000&symbol=BTCUSDT&side=BUY"


def _import(keyring: Keyring, label: str) -> str:
    secret = new_secret(64)
    import_key(keyring, label=label, exchange_id="binance", api_key=API_KEY, key_type="hmac", secret=secret.encode())
    return secret


def _mac(secret: str) -> bytes:
    return hmac.new(secret.encode(), MESSAGE, hashlib.sha256).digest()


@pytest.fixture
def scans(keyring: Keyring) -> Iterator[list[str | None]]:
    """Every token search custody makes from now on, by label (None: a full listing)."""
    with keyring.recording_searches() as seen:
        yield seen


def test_after_the_listing_no_lookup_searches_the_token(keyring: Keyring, label: str, scans: list):
    secrets = {f"{label}-{i}": _import(keyring, f"{label}-{i}") for i in range(3)}
    keyring.forget_cached_handles()  # as in a freshly started agent
    scans.clear()  # imports search too (is the label free and unique?)
    listed = {k.label for k in keyring.list_keys()}
    assert set(secrets) <= listed
    assert scans == [None]
    for name, secret in secrets.items():
        for _ in range(3):
            assert keyring.hmac(keyring.lookup(name), MESSAGE, "sha256") == _mac(secret)
    assert scans == [None], "a listed key was searched for again"


def test_a_label_not_listed_is_searched_for_by_label_alone(keyring: Keyring, label: str, scans: list):
    keyring.list_keys()
    secret = _import(keyring, label)  # imports leave the label out of the cache
    scans.clear()
    assert keyring.hmac(keyring.lookup(label), MESSAGE, "sha256") == _mac(secret)
    assert keyring.hmac(keyring.lookup(label), MESSAGE, "sha256") == _mac(secret)
    assert scans == [label]


def test_an_unknown_label_is_searched_for_at_most_once_per_ttl(keyring: Keyring, label: str, scans: list):
    for _ in range(5):
        with pytest.raises(KeyNotFound):
            keyring.lookup(label)
    assert scans == [label]


def test_a_key_imported_by_another_process_after_the_listing_is_found_within_a_second(
    env, keyring: Keyring, label: str
):
    keyring.list_keys()
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)  # now believed missing for a while
    secret = new_secret(64)
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", API_KEY,
            stdin=secret + "\n", check=True)
    imported = time.monotonic()
    while True:
        try:
            entry = keyring.lookup(label)
            break
        except KeyNotFound:
            assert time.monotonic() - imported < 1.0, "an imported key stayed invisible for a second"
            time.sleep(0.05)
    assert keyring.hmac(entry, MESSAGE, "sha256") == _mac(secret)


def test_a_listed_key_revoked_by_another_process_is_refused_at_its_next_use(env, keyring: Keyring, label: str):
    _import(keyring, label)
    keyring.list_keys()
    entry = keyring.lookup(label)
    run_cli(env, "keys", "revoke", "--label", label, check=True)
    with pytest.raises(KeyRevoked):
        keyring.hmac(entry, MESSAGE, "sha256")
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)


def test_a_listed_key_rotated_by_another_process_signs_with_the_new_secret(env, keyring: Keyring, label: str):
    old = _import(keyring, label)
    keyring.list_keys()
    stale = keyring.lookup(label)
    assert keyring.hmac(stale, MESSAGE, "sha256") == _mac(old)
    run_cli(env, "keys", "revoke", "--label", label, check=True)
    new = new_secret(64)
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", API_KEY,
            stdin=new + "\n", check=True)
    with pytest.raises(KeyRevoked):  # the service then looks it up once more
        keyring.hmac(stale, MESSAGE, "sha256")
    assert keyring.hmac(keyring.lookup(label), MESSAGE, "sha256") == _mac(new)


def test_a_new_listing_drops_keys_revoked_meanwhile(env, keyring: Keyring, label: str):
    _import(keyring, label)
    keyring.list_keys()
    assert keyring.is_cached(label)
    run_cli(env, "keys", "revoke", "--label", label, check=True)
    keyring.list_keys()
    assert not keyring.is_cached(label)
    with pytest.raises(KeyNotFound):
        keyring.lookup(label)


def test_unregistered_keys_are_not_indexed(keyring: Keyring, label: str):
    keyring.generate_key(label=label, exchange="binance", key_type="ed25519")
    keyring.list_keys()
    assert not keyring.is_cached(label)
    assert not keyring.lookup(label).info.registered


def test_a_foreign_object_with_the_label_does_not_disturb_the_search(keyring: Keyring, label: str, scans: list):
    secret = _import(keyring, label)
    with keyring.session() as session:
        session.create_object({
            Attribute.CLASS: 0,  # CKO_DATA of another application, same label
            Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: label,
            Attribute.APPLICATION: "someone-else", Attribute.VALUE: b'{"api_key": "not ours"}',
        })
    keyring.forget_cached_handles()
    entry = keyring.lookup(label)
    assert entry.info.api_key == API_KEY
    assert keyring.hmac(entry, MESSAGE, "sha256") == _mac(secret)


# -- the bench's shortcut for filling a token writes what an import writes ---------------------


def _attributes(keyring: Keyring, label: str) -> list[dict]:
    readable = [Attribute.CLASS, Attribute.KEY_TYPE, Attribute.TOKEN, Attribute.PRIVATE, Attribute.MODIFIABLE,
                Attribute.COPYABLE, Attribute.DESTROYABLE, Attribute.SENSITIVE, Attribute.EXTRACTABLE,
                Attribute.SIGN, Attribute.VERIFY, Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP,
                Attribute.UNWRAP, Attribute.DERIVE, Attribute.VALUE_LEN, Attribute.ID, Attribute.APPLICATION,
                Attribute.VALUE]
    out = []
    with keyring.session() as session:
        for obj in session.get_objects({Attribute.LABEL: label}):
            attrs = {}
            for a in readable:
                try:
                    attrs[a] = obj[a]
                except Exception:  # not an attribute of this class, or sensitive
                    pass
            out.append(attrs)
    return sorted(out, key=lambda a: a[Attribute.CLASS])


def test_the_bench_fill_writes_the_objects_an_import_writes(keyring: Keyring, label: str):
    imported, filled = f"{label}-i", f"{label}-f"
    secret = new_secret(64)
    import_key(keyring, label=imported, exchange_id="binance", api_key=API_KEY, key_type="hmac",
               secret=secret.encode())
    assert fill(keyring, [(filled, secret.encode())]) == 1
    a, b = _attributes(keyring, imported), _attributes(keyring, filled)
    assert len(a) == len(b) == 2  # the key and its account
    for x, y in zip(a, b):
        if Attribute.ID in x:  # metadata: equal but for the creation time
            x[Attribute.ID] = x[Attribute.ID].split(b'"created"')[0]
            y[Attribute.ID] = y[Attribute.ID].split(b'"created"')[0]
        assert x == y
    info_i, info_f = keyring.lookup(imported).info, keyring.lookup(filled).info
    assert (info_f.exchange, info_f.api_key, info_f.key_type, info_f.fingerprint, info_f.options) == (
        info_i.exchange, info_i.api_key, info_i.key_type, info_i.fingerprint, info_i.options)
    assert keyring.hmac(keyring.lookup(filled), MESSAGE, "sha256") == _mac(secret)
