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


def master_id(generation: int) -> bytes:
    return MASTER_ID_PREFIX + str(generation).encode()


def create_master_key(config: TokenSettings, *, generation: int = 1) -> bytes:
    """Generate master key GENERATION in the token (PyKCS11); returns its CKA_ID.

    Refuses when a master key of that generation exists: a second one would make blobs ambiguous.
    """
    import PyKCS11
    from PyKCS11 import LowLevel as ll  # noqa: F401  (PyKCS11 constants live on the package)

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
        key_id = master_id(generation)
        found = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_ID, key_id)])
        if found:
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
    finally:
        try:
            session.logout()
        except PyKCS11.PyKCS11Error:
            pass
        session.closeSession()


def _slot_of(lib: Any, label: str) -> Any:
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == label:
            return slot
    raise TokenUnavailable(f"no token labelled {label!r}")


def _reason(exc: Any) -> str:
    # PyKCS11Error's text is the CKR_ name; it never holds key material.
    return str(exc).strip() or type(exc).__name__
