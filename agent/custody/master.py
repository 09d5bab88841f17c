"""The master key of wrapped keys: one AES-256 key in the token under which every stored secret is wrapped.

Created once per token (`signing-agent store init`), never extractable, never modifiable or copyable,
and unable to encrypt, decrypt, sign or derive: it can only wrap and unwrap. Its CKA_UNWRAP_TEMPLATE is
what makes a stored blob harmless outside the agent: the token applies it to every key unwrapped with
the master key, so a blob becomes only a sensitive, non-extractable key that can sign, never a readable
one, whoever holds the PIN. Without that template a PIN holder could unwrap a blob as extractable and
read the secret, so creating the master key without it is not an option here.

python-pkcs11 0.10 crashes (segfault) packing an attribute-array attribute such as CKA_UNWRAP_TEMPLATE,
so this one call goes through PyKCS11. It runs in a process of its own (the CLI command), because two
wrappers cannot both initialise the module in one process; everything else stays on python-pkcs11.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.custody.errors import CustodyError, KeyExists, TokenLoginError, TokenUnavailable
from agent.custody.session import TokenSettings

MASTER_LABEL = "signing-agent/master"
# CKA_ID of master keys: marks the object as ours, and names the generation (rotation writes v2, v3...).
MASTER_ID_PREFIX = b"signing-agent/master/"

# What every key unwrapped under a master key is, enforced by the token (see the module docstring):
# a session object that signs (HMAC) and does nothing else, and cannot be read or exported.
UNWRAPPED_FORCED = {
    "CKA_SENSITIVE": True,
    "CKA_EXTRACTABLE": False,
    "CKA_DERIVE": False,
    "CKA_ENCRYPT": False,
    "CKA_DECRYPT": False,
    "CKA_WRAP": False,
    "CKA_UNWRAP": False,
}


# Why `store rotate-master` re-wraps no blob (measured on SoftHSM2 2.6, tests/agent/test_store_ops.py): the way
# out of a blob is an unwrap, which the template above makes non-extractable, and the token wraps no
# non-extractable key, nor lets one be made extractable or copied as such. The standard way round, a wrapping
# key marked CKA_TRUSTED for keys marked CKA_WRAP_WITH_TRUSTED, needs the SO to set CKA_TRUSTED, and the SO
# cannot create private objects: a trusted key would be a public one, usable without the PIN and kept
# unencrypted in the token's files. Loosening the template would let a PIN holder read every secret.
NO_IN_TOKEN_REWRAP = (
    "the token cannot re-wrap a blob under another master key without making its secret readable: a blob "
    "unwraps only into a non-extractable key (the master key's unwrap template), which the token will not wrap "
    "again, and a CKA_TRUSTED wrapping key can be made only by the SO, as a public object that needs no PIN"
)


def master_id(generation: int) -> bytes:
    return MASTER_ID_PREFIX + str(generation).encode()


@contextmanager
def _logged_in(config: TokenSettings) -> Iterator[tuple[Any, Any]]:
    """(PyKCS11, a logged-in R/W session on the token): for this module's calls, in a process of their own."""
    import PyKCS11

    for name, value in config.env.items():
        os.environ[name] = value
    if not config.module.exists():
        raise TokenUnavailable(f"PKCS#11 module {config.module} does not exist")
    lib = PyKCS11.PyKCS11Lib()
    try:
        lib.load(str(config.module))
        slot = _slot_of(lib, config.label)
        session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    except PyKCS11.PyKCS11Error as exc:
        raise TokenUnavailable(f"cannot open token {config.label!r} ({exc})") from None
    try:
        try:
            session.login(config.read_pin())
        except PyKCS11.PyKCS11Error as exc:
            raise TokenLoginError(f"token {config.label!r} rejected the PIN ({_reason(exc)})") from None
        yield PyKCS11, session
    finally:
        try:
            session.logout()
        except PyKCS11.PyKCS11Error:
            pass
        session.closeSession()


def _masters(pk: Any, session: Any) -> dict[int, Any]:
    """Generation -> object handle of every master key in the token."""
    found = {}
    for obj in session.findObjects([(pk.CKA_CLASS, pk.CKO_SECRET_KEY), (pk.CKA_LABEL, MASTER_LABEL)]):
        key_id = bytes(session.getAttributeValue(obj, [pk.CKA_ID], allAsBinary=True)[0])
        if key_id.startswith(MASTER_ID_PREFIX) and key_id[len(MASTER_ID_PREFIX):].isdigit():
            found[int(key_id[len(MASTER_ID_PREFIX):])] = obj
    return found


def master_generations(config: TokenSettings) -> list[int]:
    """The generations of the master keys the token holds, oldest first."""
    with _logged_in(config) as (pk, session):
        return sorted(_masters(pk, session))


def destroy_master_key(config: TokenSettings, generation: int) -> None:
    """Destroy master key GENERATION: every blob wrapped under it becomes useless, here and in any copy.

    The caller checks first that no row of the store names it (`store rotate-master --retire-old`).
    """
    with _logged_in(config) as (pk, session):
        handle = _masters(pk, session).get(generation)
        if handle is None:
            return
        try:
            session.destroyObject(handle)
        except pk.PyKCS11Error as exc:
            raise CustodyError(f"token {config.label!r} refused to destroy master key generation {generation} "
                               f"({_reason(exc)})") from None


def create_master_key(config: TokenSettings, *, generation: int = 1) -> bytes:
    """Generate master key GENERATION in the token (PyKCS11); returns its CKA_ID.

    Refuses when a master key of that generation exists: a second one would make blobs ambiguous.
    """
    with _logged_in(config) as (PyKCS11, session):
        key_id = master_id(generation)
        if generation in _masters(PyKCS11, session):
            raise KeyExists(f"token {config.label!r} holds master key generation {generation} already")
        unwrap_template = [(getattr(PyKCS11, name), value) for name, value in UNWRAPPED_FORCED.items()]
        template = [
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
            (PyKCS11.CKA_VALUE_LEN, 32),
            (PyKCS11.CKA_TOKEN, True),
            (PyKCS11.CKA_PRIVATE, True),
            (PyKCS11.CKA_SENSITIVE, True),
            (PyKCS11.CKA_EXTRACTABLE, False),
            (PyKCS11.CKA_MODIFIABLE, False),
            (PyKCS11.CKA_COPYABLE, False),
            (PyKCS11.CKA_ENCRYPT, False),
            (PyKCS11.CKA_DECRYPT, False),
            (PyKCS11.CKA_SIGN, False),
            (PyKCS11.CKA_VERIFY, False),
            (PyKCS11.CKA_DERIVE, False),
            (PyKCS11.CKA_WRAP, True),
            (PyKCS11.CKA_UNWRAP, True),
            (PyKCS11.CKA_LABEL, MASTER_LABEL),
            (PyKCS11.CKA_ID, key_id),
            (PyKCS11.CKA_UNWRAP_TEMPLATE, unwrap_template),
        ]
        try:
            session.generateKey(template, PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN, None))
        except PyKCS11.PyKCS11Error as exc:
            raise CustodyError(f"token {config.label!r} refused to create the master key ({_reason(exc)})") from None
        return key_id


def _slot_of(lib: Any, label: str) -> Any:
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == label:
            return slot
    raise TokenUnavailable(f"no token labelled {label!r}")


def _reason(exc: Any) -> str:
    # PyKCS11Error's text is the CKR_ name; it never holds key material.
    return str(exc).strip() or type(exc).__name__
