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
import string
from dataclasses import dataclass
from pathlib import Path

CKR_OK = 0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_PIN_INCORRECT = 0xA0
CKR_HOST_MEMORY = 0x2
CKF_SERIAL_SESSION = 0x4
CKF_RW_SESSION = 0x2
CKU_SO = 0


class TokenInitError(RuntimeError):
    """The module refused to initialise the token; the message says which call."""


def _check(name: str, rv: int) -> None:
    if rv != CKR_OK:
        raise TokenInitError(f"{name} failed with CKR 0x{rv:08X}")


class _CK_TOKEN_INFO(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serialNumber", ctypes.c_char * 16),
        ("flags", ctypes.c_ulong),
        ("ulMaxSessionCount", ctypes.c_ulong),
        ("ulSessionCount", ctypes.c_ulong),
        ("ulMaxRwSessionCount", ctypes.c_ulong),
        ("ulRwSessionCount", ctypes.c_ulong),
        ("ulMaxPinLen", ctypes.c_ulong),
        ("ulMinPinLen", ctypes.c_ulong),
        ("rest", ctypes.c_ubyte * 256),  # fields we do not read; generous room
    ]


CKF_USER_PIN_INITIALIZED = 0x8
CKF_TOKEN_INITIALIZED = 0x400


@dataclass(frozen=True)
class TokenSlot:
    slot: int
    label: str
    flags: int
    max_pin_len: int
    min_pin_len: int

    @property
    def initialized(self) -> bool:
        return bool(self.flags & CKF_TOKEN_INITIALIZED)


def _token_slots(lib: ctypes.CDLL) -> list[TokenSlot]:
    """Every slot with a token present."""
    count = ctypes.c_ulong(0)
    _check("C_GetSlotList", lib.C_GetSlotList(1, None, ctypes.byref(count)))
    slots = (ctypes.c_ulong * max(count.value, 1))()
    _check("C_GetSlotList", lib.C_GetSlotList(1, slots, ctypes.byref(count)))
    found = []
    for slot in slots[: count.value]:
        info = _CK_TOKEN_INFO()
        _check("C_GetTokenInfo", lib.C_GetTokenInfo(slot, ctypes.byref(info)))
        found.append(TokenSlot(
            slot=int(slot), label=bytes(info.label).rstrip(b" ").decode(errors="replace"), flags=int(info.flags),
            max_pin_len=int(info.ulMaxPinLen), min_pin_len=int(info.ulMinPinLen),
        ))
    return found


def _tokens(lib: ctypes.CDLL) -> list[tuple[int, str, int]]:
    """(slot id, token label, token flags) for every slot with a token present."""
    return [(t.slot, t.label, t.flags) for t in _token_slots(lib)]


def _loaded(module: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(module)
    rv = lib.C_Initialize(None)
    if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
        _check("C_Initialize", rv)
    return lib


def init_token(module: str, label: str, so_pin: bytes, user_pin: bytes) -> None:
    """Initialise a free token with LABEL, set its SO PIN and user PIN."""
    if len(label.encode()) > 32:
        raise TokenInitError("a token label is at most 32 bytes")
    lib = _loaded(module)
    try:
        free = [slot for slot, _, flags in _tokens(lib) if not flags & CKF_TOKEN_INITIALIZED]
        if not free:
            raise TokenInitError("the module has no slot with an uninitialised token")
        slot = free[0]
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
    """Whether an initialised token labelled LABEL is present (same process rules as init_token)."""
    lib = _loaded(module)
    try:
        return any(name == label and flags & CKF_TOKEN_INITIALIZED for _, name, flags in _tokens(lib))
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


# -- opencryptoki ------------------------------------------------------------------------
#
# opencryptoki (IBM's PKCS#11 implementation; Debian package `opencryptoki`) differs from
# SoftHSM2 in three ways that shape this code:
#
# * Its library talks to a slot daemon, pkcsslotd, which must run (as root) before any
#   process loads the module; without it C_Initialize fails with CKR_HOST_MEMORY.
# * Each slot is one fixed token whose files live where the package put them (the software
#   token: /var/lib/opencryptoki/swtok). There is no per-user token directory to point at.
# * A token leaves the factory with the SO PIN 87654321, C_InitToken checks that PIN and
#   does not replace it: the SO PIN is changed afterwards with C_SetPIN. PINs are short
#   (the software token takes 4 to 8 characters), so they are drawn from letters and digits.

OCK_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"  # Debian/Ubuntu, amd64
OCK_FACTORY_SO_PIN = b"87654321"
# pkcsslotd's socket: opencryptoki 3.8 (Debian 12), and later releases.
OCK_SLOTD_SOCKETS = (Path("/var/run/pkcsslotd.socket"), Path("/run/opencryptoki/pkcsslotd.socket"))
PIN_ALPHABET = string.ascii_letters + string.digits
PIN_MAX_LEN = 32
OCK_CONFIG_FRAGMENT = "token.toml"
_RESET_ADVICE = (
    "Choose another slot with --slot, or reset this token to the factory state, which destroys its keys: "
    "stop every program using it, then remove NVTOK.DAT, MK_SO, MK_USER and TOK_OBJ/* from its directory "
    "(the software token's: /var/lib/opencryptoki/swtok)"
)


def random_pin(token: TokenSlot) -> str:
    """A random PIN as long as the token allows (at most PIN_MAX_LEN): 8 characters on opencryptoki."""
    length = token.max_pin_len if 0 < token.max_pin_len < PIN_MAX_LEN else PIN_MAX_LEN
    if length < max(token.min_pin_len, 4):
        raise TokenInitError(f"the token in slot {token.slot} allows PINs of at most {token.max_pin_len} characters")
    return "".join(secrets.choice(PIN_ALPHABET) for _ in range(length))


def slotd_running() -> bool:
    """Whether opencryptoki's slot daemon (pkcsslotd) runs: its socket exists and a live process has its name.

    Never by connecting: pkcsslotd 3.8 dies (SIGPIPE) when a client connects and closes
    without reading the slot table it sends.
    """
    if not any(path.exists() for path in OCK_SLOTD_SOCKETS):
        return False
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(pkcsslotd") and not rest.startswith(("Z", "X")):  # not a zombie
            return True
    return False


def _open_so_session(lib: ctypes.CDLL, slot: int, so_pin: bytes) -> ctypes.c_ulong:
    session = ctypes.c_ulong(0)
    flags = ctypes.c_ulong(CKF_SERIAL_SESSION | CKF_RW_SESSION)
    _check("C_OpenSession", lib.C_OpenSession(ctypes.c_ulong(slot), flags, None, None, ctypes.byref(session)))
    rv = lib.C_Login(session, ctypes.c_ulong(CKU_SO), so_pin, ctypes.c_ulong(len(so_pin)))
    if rv != CKR_OK:
        lib.C_CloseSession(session)
        _check("C_Login (SO)", rv)
    return session


def _init_ock_token(lib: ctypes.CDLL, token: TokenSlot, label: str, so_pin: bytes, user_pin: bytes) -> None:
    """C_InitToken with the factory SO PIN, then the SO PIN and the user PIN set to ours.

    A token that an interrupted run left half done (our label, no user PIN) is completed
    without C_InitToken: on opencryptoki 3.8, C_InitToken with any SO PIN but the factory one
    leaves a token whose SO can no longer log in (CKR_FUNCTION_FAILED).
    """
    if not token.initialized:
        padded_label = label.encode().ljust(32, b" ")
        pin = OCK_FACTORY_SO_PIN
        rv = lib.C_InitToken(ctypes.c_ulong(token.slot), pin, ctypes.c_ulong(len(pin)), padded_label)
        if rv == CKR_PIN_INCORRECT:
            raise TokenInitError(
                f"the token in slot {token.slot} does not take opencryptoki's factory SO PIN: it was set up "
                f"before. {_RESET_ADVICE}"
            )
        _check("C_InitToken", rv)
        session = _open_so_session(lib, token.slot, pin)
    else:  # ours, half done: its SO PIN is ours already, or still the factory one
        try:
            session, pin = _open_so_session(lib, token.slot, so_pin), so_pin
        except TokenInitError:
            session, pin = _open_so_session(lib, token.slot, OCK_FACTORY_SO_PIN), OCK_FACTORY_SO_PIN
    try:
        if pin != so_pin:
            _check("C_SetPIN (SO)", lib.C_SetPIN(session, pin, ctypes.c_ulong(len(pin)),
                                                 so_pin, ctypes.c_ulong(len(so_pin))))
        _check("C_InitPIN", lib.C_InitPIN(session, user_pin, ctypes.c_ulong(len(user_pin))))
        lib.C_Logout(session)
    finally:
        lib.C_CloseSession(session)


def _choose_slot(tokens: list[TokenSlot], label: str, slot: int | None) -> TokenSlot:
    if slot is not None:
        chosen = [t for t in tokens if t.slot == slot]
        if not chosen:
            present = ", ".join(str(t.slot) for t in tokens) or "none"
            raise TokenInitError(f"no token in slot {slot} (slots with a token: {present}; see `pkcsconf -t`)")
        token = chosen[0]
        if token.initialized and token.label != label:
            raise TokenInitError(f"slot {slot} holds token {token.label!r} already. {_RESET_ADVICE}")
        return token
    free = [t for t in tokens if not t.initialized or t.label == label]
    listing = "; ".join(f"slot {t.slot}: {t.label!r}{'' if t.initialized else ' (free)'}" for t in tokens)
    if not free:
        raise TokenInitError(f"no free opencryptoki token ({listing or 'no slots'}). {_RESET_ADVICE}")
    if len(free) > 1:
        raise TokenInitError(f"more than one free opencryptoki token ({listing}); name one with --slot")
    return free[0]


def init_opencryptoki(directory: Path, label: str, module: str = OCK_MODULE, slot: int | None = None) -> list[str]:
    """Initialise a free opencryptoki token as LABEL with random PINs; returns what was done.

    Writes DIRECTORY/user.pin and DIRECTORY/so.pin (mode 0600, before the token is touched,
    so an interrupted run can be completed) and DIRECTORY/token.toml, the agent's [token]
    table for it. Idempotent: a token that is already LABEL with both PIN files is kept.
    Must run in a process that has not loaded the module through python-pkcs11.
    """
    if len(label.encode()) > 32:
        raise TokenInitError("a token label is at most 32 bytes")
    if not slotd_running():
        raise TokenInitError(
            "opencryptoki's slot daemon is not running: start it as root (`pkcsslotd`, or "
            "`systemctl start pkcsslotd`), then run this again"
        )
    done: list[str] = []
    directory = directory.resolve()
    user_file, so_file = directory / "user.pin", directory / "so.pin"
    lib = _loaded(module)
    try:
        token = _choose_slot(_token_slots(lib), label, slot)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if token.initialized and token.label == label and token.flags & CKF_USER_PIN_INITIALIZED:
            missing = [str(p) for p in (user_file, so_file) if not p.exists()]
            if missing:
                raise TokenInitError(
                    f"token {label!r} (slot {token.slot}) exists but {', '.join(missing)} is missing; its PIN "
                    f"cannot be recovered. {_RESET_ADVICE}"
                )
            done.append(f"token {label!r} exists already in slot {token.slot}; kept")
        else:
            for path in (user_file, so_file):
                if not path.exists():
                    write_private(path, random_pin(token) + "\n")
                    done.append(f"generated {path} (mode 0600)")
            user_pin = user_file.read_text().strip().encode()
            so_pin = so_file.read_text().strip().encode()
            for name, pin in (("user", user_pin), ("SO", so_pin)):
                if not max(token.min_pin_len, 1) <= len(pin) <= (token.max_pin_len or PIN_MAX_LEN):
                    raise TokenInitError(
                        f"the {name} PIN in {directory} is {len(pin)} characters; this token takes "
                        f"{token.min_pin_len} to {token.max_pin_len}: remove the PIN files to draw new ones"
                    )
            _init_ock_token(lib, token, label, so_pin=so_pin, user_pin=user_pin)
            done.append(f"initialised token {label!r} in opencryptoki slot {token.slot}")
    finally:
        lib.C_Finalize(None)
    fragment = directory / OCK_CONFIG_FRAGMENT
    wanted = (
        "# Generated by `signing-agent token init-opencryptoki`: the agent's [token] table for this\n"
        "# token; copy it into the agent's config. The PINs are in user.pin and so.pin (mode 0600).\n"
        f'[token]\nmodule = "{module}"\nlabel = "{label}"\npin_file = "{user_file}"\n'
    )
    if not fragment.exists() or fragment.read_text() != wanted:
        fragment.write_text(wanted)
        done.append(f"wrote {fragment}")
    return done
