"""The signing loop's token call, C_SignInit + C_Sign, through ctypes: the rest stays python-pkcs11's.

Why: python-pkcs11 spends about 20 µs of Python per signature around a token call that costs
SoftHSM2 about 6 µs (its operation objects, mechanism wrappers, buffer sizing by a first C_Sign);
measured on a 110-byte HMAC: python-pkcs11 35,000/s, these two ctypes calls with buffers kept
between calls 150,000/s per process. ctypes also releases the GIL around each call, so the
agent's gRPC threads run while the token works.

What it is not: a second session or a second initialisation. It calls the module python-pkcs11
loaded (dlopen gives the same library, so the same module state) on python-pkcs11's own session
and object handles, under custody's one lock (agent.custody.session: the module was initialised
without locking, and SoftHSM2 serialises its calls anyway, so more sessions in one process would
gain nothing; workers are processes). A return value other than CKR_OK is raised as the exception
python-pkcs11 raises for it, so custody's handling (a dead handle evicts the key: KeyRevoked; a
lost device or session: TokenUnavailable) is the same on both paths.

Only mechanisms without parameters go through here (HMAC, EdDSA, ECDSA, RSA PKCS#1 v1.5): the ones
custody signs with.
"""

from __future__ import annotations

import ctypes
from typing import Any

from pkcs11 import exceptions as p11err

CK_ULONG = ctypes.c_ulong
CKR_OK = 0
CKR_BUFFER_TOO_SMALL = 0x150
# The return values custody tells apart, as python-pkcs11 names them (its own map is C-only). Any other
# is a bare PKCS11Error, as python-pkcs11 raises for a code it does not map: custody then starts the
# module afresh.
_ERRORS: dict[int, type[p11err.PKCS11Error]] = {
    0x005: p11err.GeneralError,
    0x006: p11err.FunctionFailed,
    0x007: p11err.ArgumentsBad,
    0x030: p11err.DeviceError,
    0x031: p11err.DeviceMemory,
    0x032: p11err.DeviceRemoved,
    0x021: p11err.DataLenRange,
    0x020: p11err.DataInvalid,
    0x002: p11err.HostMemory,
    0x054: p11err.FunctionNotSupported,
    0x060: p11err.KeyHandleInvalid,
    0x062: p11err.KeySizeRange,
    0x063: p11err.KeyTypeInconsistent,
    0x070: p11err.MechanismInvalid,
    0x071: p11err.MechanismParamInvalid,
    0x082: p11err.ObjectHandleInvalid,
    0x090: p11err.OperationActive,
    0x091: p11err.OperationNotInitialized,
    0x0B0: p11err.SessionClosed,
    0x0B3: p11err.SessionHandleInvalid,
    0x0E0: p11err.TokenNotPresent,
    0x0E1: p11err.TokenNotRecognised,
    0x101: p11err.UserNotLoggedIn,
}
# Large enough for every signature custody makes (RSA-4096: 512 bytes); grown if a module says otherwise.
OUT_BYTES = 1024


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", CK_ULONG)]


def error_for(rv: int) -> p11err.PKCS11Error:
    """The exception python-pkcs11 raises for return value RV."""
    cls = _ERRORS.get(rv)
    return cls() if cls is not None else p11err.PKCS11Error(f"Unmapped error code {hex(rv)}")


class TokenCall:
    """C_SignInit + C_Sign of one loaded module, with buffers kept between calls.

    Not thread-safe by itself: the caller holds custody's lock (the buffers are shared, and the
    module was initialised without locking).
    """

    def __init__(self, module: str) -> None:
        lib = ctypes.CDLL(module)  # the library python-pkcs11 loaded: dlopen returns the same one
        self._sign_init = lib.C_SignInit
        self._sign_init.argtypes = [CK_ULONG, ctypes.POINTER(CK_MECHANISM), CK_ULONG]
        self._sign_init.restype = CK_ULONG
        self._sign = lib.C_Sign
        self._sign.argtypes = [CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_void_p, ctypes.POINTER(CK_ULONG)]
        self._sign.restype = CK_ULONG
        self._mechanism = CK_MECHANISM(0, None, 0)
        self._mechanism_ref = ctypes.byref(self._mechanism)
        self._out = ctypes.create_string_buffer(OUT_BYTES)
        self._out_len = CK_ULONG(0)
        self._out_len_ref = ctypes.byref(self._out_len)

    @classmethod
    def load(cls, module: str) -> "TokenCall | None":
        """The binding for MODULE; None when the module does not export C_SignInit and C_Sign (the
        standard requires only C_GetFunctionList): python-pkcs11 then signs, as before."""
        try:
            return cls(module)
        except (OSError, AttributeError):
            return None

    def sign(self, session: int, key: int, mechanism: int, data: bytes) -> bytes:
        """The signature (or MAC) of DATA by object KEY in SESSION, with a mechanism without parameters."""
        self._mechanism.mechanism = mechanism
        rv = self._sign_init(session, self._mechanism_ref, key)
        if rv != CKR_OK:
            raise error_for(rv)
        self._out_len.value = len(self._out)
        rv = self._sign(session, data, len(data), self._out, self._out_len_ref)
        if rv == CKR_BUFFER_TOO_SMALL:
            # The operation stays active and the module has said the length it needs: call again.
            self._out = ctypes.create_string_buffer(self._out_len.value)
            rv = self._sign(session, data, len(data), self._out, self._out_len_ref)
        if rv != CKR_OK:
            raise error_for(rv)
        return ctypes.string_at(self._out, self._out_len.value)


def raw_handles(obj: Any) -> tuple[int, int]:
    """(session handle, object handle) of a python-pkcs11 key object."""
    return obj.session.handle, obj.handle
