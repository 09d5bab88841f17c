"""Operator keys kept in the operator's own PKCS#11 token (agent.quorum approvals).

An operator who has a token (a YubiHSM2, a smart card, a SoftHSM2 on their own machine) keeps
their Ed25519 approval key in it: generated there, sensitive and never extractable, so no file
on any disk holds it. This is the operator's token, not the agent's: the agent never sees the
private half, only the public key in its config.
"""

from __future__ import annotations

from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from agent.custody.errors import KeyExists, KeyNotFound
from agent.custody.objects import ED25519_PARAMS, KEY_COMMON, PRIVATE_HALF, public_key_of
from agent.custody.session import TokenSession

LABEL_PREFIX = "signing-agent-operator-"


def operator_label(name: str) -> str:
    return LABEL_PREFIX + name


def _objects(session: Any, label: str, kind: ObjectClass) -> list[Any]:
    return list(session.get_objects({Attribute.CLASS: kind, Attribute.LABEL: label}))


def generate_in_token(token: TokenSession, name: str) -> bytes:
    """A new Ed25519 key pair for operator NAME inside TOKEN; the raw public key."""
    label = operator_label(name)

    def build(session: Any) -> bytes:
        token._require(Mechanism.EC_EDWARDS_KEY_PAIR_GEN, "Ed25519 key generation", "use a token with Ed25519")
        token._signer("ed25519")
        if _objects(session, label, ObjectClass.PRIVATE_KEY) or _objects(session, label, ObjectClass.PUBLIC_KEY):
            raise KeyExists(f"the token already holds an operator key {label!r}: an operator key is never replaced "
                            "(destroy it with the token's own tools first, if that is what you mean)")
        public_t = token._fit({**KEY_COMMON, Attribute.LABEL: label, Attribute.VERIFY: True,
                               Attribute.EC_PARAMS: ED25519_PARAMS})
        private_t = token._fit({**PRIVATE_HALF, Attribute.LABEL: label})
        public, private = session.generate_keypair(KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                                                   store=True, public_template=public_t,
                                                   private_template=private_t)
        key = public_key_of(public, "ed25519")
        signature = bytes(private.sign(b"self-test", mechanism=Mechanism.EDDSA))
        key.verify(signature, b"self-test")  # the token signs what its public half verifies
        return key.public_bytes_raw()

    return token._call(build)


class TokenOperatorKey:
    """An operator's approval key in their token: signs inside it (quorum.Bundle.approved_by)."""

    def __init__(self, token: TokenSession, name: str) -> None:
        self._token, self._label = token, operator_label(name)

    def _one(self, session: Any, kind: ObjectClass) -> Any:
        found = _objects(session, self._label, kind)
        if not found:
            raise KeyNotFound(f"token {self._token.label} holds no operator key {self._label!r} (made by "
                              "`signing-agent operator keygen NAME --token-config FILE`): is this your token and name?")
        if len(found) > 1:
            raise KeyNotFound(f"token {self._token.label} holds {len(found)} objects labelled {self._label!r} of class "
                              f"{kind.name}; an operator key is one pair: remove the others with the token's tools")
        return found[0]

    def public_bytes_raw(self) -> bytes:
        return self._token._call(
            lambda s: public_key_of(self._one(s, ObjectClass.PUBLIC_KEY), "ed25519").public_bytes_raw())

    def sign(self, data: bytes) -> bytes:
        return self._token._call(lambda s: bytes(self._one(s, ObjectClass.PRIVATE_KEY).sign(
            data, mechanism=Mechanism.EDDSA)))
