"""Looking at a token's objects from a test, under the keyring's lock (the module's own errors left as they are)."""

from __future__ import annotations

from pkcs11 import Attribute

from agent.custody import Keyring


def in_token(keyring: Keyring, fn):
    """Run FN(session) under the keyring's lock, with the module's own errors left as they are."""
    with keyring.session() as session:
        return fn(session)


def handle_of(keyring: Keyring, label: str):
    return keyring.lookup(label).handle


def objects_labelled(keyring: Keyring, label: str) -> list:
    return in_token(keyring, lambda s: list(s.get_objects({Attribute.LABEL: label})))


def object_count(keyring: Keyring) -> int:
    return in_token(keyring, lambda s: len(list(s.get_objects())))
