"""Initialise a PKCS#11 token: C_InitToken and C_InitPIN through ctypes.

Why ctypes: python-pkcs11 has no binding for C_InitToken, and softhsm2-util
takes PINs only from a terminal or from argv, where every user on the host can
read them. Token initialisation is a provisioning step for development tokens
(real HSMs are initialised with their vendor's tools), so it lives here, apart
from the custody code, and must run in a process that has not loaded the module
through python-pkcs11 (both would call C_Initialize).
"""

from __future__ import annotations

import ctypes
import os
import secrets
from pathlib import Path

CKR_OK = 0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_SERIAL_SESSION = 0x4
CKF_RW_SESSION = 0x2
CKU_SO = 0


class TokenInitError(RuntimeError):
    """The module refused to initialise the token; the message says which call."""


def _check(name: str, rv: int) -> None:
    if rv != CKR_OK:
        raise TokenInitError(f"{name} failed with CKR 0x{rv:08X}")


def _slot_with_free_token(lib: ctypes.CDLL) -> int:
    """Return a slot whose token is not initialised yet (SoftHSM2 always keeps one free)."""

    class CK_TOKEN_INFO(ctypes.Structure):
        _fields_ = [
            ("label", ctypes.c_char * 32),
            ("manufacturerID", ctypes.c_char * 32),
            ("model", ctypes.c_char * 16),
            ("serialNumber", ctypes.c_char * 16),
            ("flags", ctypes.c_ulong),
            ("rest", ctypes.c_ubyte * 256),  # fields we do not read; generous padding
        ]

    count = ctypes.c_ulong(0)
    _check("C_GetSlotList", lib.C_GetSlotList(1, None, ctypes.byref(count)))
    slots = (ctypes.c_ulong * max(count.value, 1))()
    _check("C_GetSlotList", lib.C_GetSlotList(1, slots, ctypes.byref(count)))
    CKF_TOKEN_INITIALIZED = 0x400
    for slot in slots[: count.value]:
        info = CK_TOKEN_INFO()
        _check("C_GetTokenInfo", lib.C_GetTokenInfo(slot, ctypes.byref(info)))
        if not info.flags & CKF_TOKEN_INITIALIZED:
            return int(slot)
    raise TokenInitError("the module has no slot with an uninitialised token")


def init_token(module: str, label: str, so_pin: bytes, user_pin: bytes) -> None:
    """Initialise a free token with LABEL, set its SO PIN and user PIN."""
    if len(label.encode()) > 32:
        raise TokenInitError("a token label is at most 32 bytes")
    lib = ctypes.CDLL(module)
    rv = lib.C_Initialize(None)
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        _check("C_Initialize", rv)
    try:
        slot = _slot_with_free_token(lib)
        padded_label = label.encode().ljust(32, b" ")
        _check(
            "C_InitToken",
            lib.C_InitToken(ctypes.c_ulong(slot), so_pin, ctypes.c_ulong(len(so_pin)), padded_label),
        )
        session = ctypes.c_ulong(0)
        _check(
            "C_OpenSession",
            lib.C_OpenSession(
                ctypes.c_ulong(slot),
                ctypes.c_ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION),
                None,
                None,
                ctypes.byref(session),
            ),
        )
        try:
            _check("C_Login", lib.C_Login(session, ctypes.c_ulong(CKU_SO), so_pin, ctypes.c_ulong(len(so_pin))))
            _check("C_InitPIN", lib.C_InitPIN(session, user_pin, ctypes.c_ulong(len(user_pin))))
            lib.C_Logout(session)
        finally:
            lib.C_CloseSession(session)
    finally:
        lib.C_Finalize(None)


def token_exists(module: str, label: str) -> bool:
    """Whether an initialised token labelled LABEL is present (ctypes; same process rules as init_token)."""

    class CK_TOKEN_INFO(ctypes.Structure):
        _fields_ = [("label", ctypes.c_char * 32), ("rest", ctypes.c_ubyte * 512)]

    lib = ctypes.CDLL(module)
    rv = lib.C_Initialize(None)
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        _check("C_Initialize", rv)
    try:
        count = ctypes.c_ulong(0)
        _check("C_GetSlotList", lib.C_GetSlotList(1, None, ctypes.byref(count)))
        slots = (ctypes.c_ulong * max(count.value, 1))()
        _check("C_GetSlotList", lib.C_GetSlotList(1, slots, ctypes.byref(count)))
        for slot in slots[: count.value]:
            info = CK_TOKEN_INFO()
            _check("C_GetTokenInfo", lib.C_GetTokenInfo(slot, ctypes.byref(info)))
            if bytes(info.label).rstrip(b" ").decode(errors="replace") == label:
                return True
        return False
    finally:
        lib.C_Finalize(None)


def write_private(path: Path, content: str) -> None:
    """Create PATH with mode 0600 from the first byte (never world-readable, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)


def init_softhsm_dir(directory: Path, label: str, module: str) -> list[str]:
    """Create a SoftHSM2 dev token under DIRECTORY if absent; returns what was done, for the operator.

    Layout: DIRECTORY/softhsm2.conf (absolute token path, so it works from any
    working directory), DIRECTORY/tokens/ (0700), DIRECTORY/user.pin and
    DIRECTORY/so.pin (random, 0600). Idempotent: an existing token is kept.
    """
    done: list[str] = []
    directory = directory.resolve()
    tokens = directory / "tokens"
    conf = directory / "softhsm2.conf"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = (
        "# Generated by `signing-agent token init-softhsm`: the dev token's SoftHSM2 config.\n"
        f"directories.tokendir = {tokens}/\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    # Rewritten when the project moved: the token directory is named by absolute path.
    if not conf.exists() or conf.read_text() != wanted:
        conf.write_text(wanted)
        done.append(f"wrote {conf}")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin_files = [directory / "user.pin", directory / "so.pin"]
    if token_exists(module, label):
        missing = [str(p) for p in pin_files if not p.exists()]
        if missing:
            raise TokenInitError(
                f"token {label!r} exists but {', '.join(missing)} is missing; its PIN cannot be recovered. "
                f"To start over: rm -rf {tokens} {directory}/*.pin"
            )
        done.append(f"token {label!r} exists already; kept")
        return done
    for path in pin_files:
        if not path.exists():
            write_private(path, secrets.token_hex(16) + "\n")
            done.append(f"generated {path} (mode 0600)")
    user_pin = (directory / "user.pin").read_text().strip().encode()
    so_pin = (directory / "so.pin").read_text().strip().encode()
    init_token(module, label, so_pin=so_pin, user_pin=user_pin)
    done.append(f"initialised token {label!r} in {tokens}")
    return done
