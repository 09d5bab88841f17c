"""The session with the token: loading the module, logging in, one call at a time, reconnecting,
and what differs between modules (SoftHSM2, opencryptoki, HSMs).

python-pkcs11 initialises the module with C_Initialize(NULL), so the module does no locking
of its own: two threads inside it at once fail (SoftHSM2: CKR_GENERAL_ERROR). Every token
call holds the one lock of TokenSession, and runs through `_call`, which turns a lost device
or session into TokenUnavailable and starts the module afresh at the next call.

Module differences handled here: attributes a PKCS#11 v2.20 module does not know
(opencryptoki 3.8), mechanisms a token lacks (named, with what to do instead), RSA signing
where CKM_SHA256_RSA_PKCS is missing, opencryptoki's slot daemon.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, Self

import pkcs11
from pkcs11 import Attribute, Mechanism
from pkcs11 import exceptions as p11err

from agent.custody.errors import CustodyError, KeyNotFound, MechanismUnsupported, TokenLoginError, TokenUnavailable
from agent.custody.tokencall import TokenCall

# Errors after which the session (or the module) must be reopened.
SESSION_LOST = (
    p11err.SessionHandleInvalid,
    p11err.SessionClosed,
    p11err.DeviceRemoved,
    p11err.DeviceError,
    p11err.DeviceMemory,
    p11err.TokenNotPresent,
    p11err.TokenNotRecognised,
    p11err.GeneralError,
    p11err.UserNotLoggedIn,
    p11err.FunctionFailed,
)
HANDLE_GONE = (p11err.ObjectHandleInvalid, p11err.KeyHandleInvalid)

# PKCS#11 v2.40 attributes. Modules implementing v2.20 (opencryptoki 3.8) refuse any template naming
# them (CKR_ATTRIBUTE_TYPE_INVALID), so they are left out there: such a token lets any object be copied
# and destroyed, and a copy of a key keeps it sensitive and non-extractable.
V2_40_ATTRIBUTES = (Attribute.COPYABLE, Attribute.DESTROYABLE)
# PKCS#1 v1.5 signing over SHA-256 where the module lacks CKM_SHA256_RSA_PKCS: CKM_RSA_PKCS over
# DigestInfo(SHA-256) || hash gives the identical signature (the hash involves no secret).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# What each key type needs from the token, and what to do when it is missing.
KEY_TYPE_ADVICE = {
    "ed25519": "use an RSA key where the exchange takes one, or a token with Ed25519 (SoftHSM2 2.6 or later)",
    "ec-p256": "use a token with ECDSA on P-256 (SoftHSM2 has it)",
    "rsa": "use a token with RSA PKCS#1 v1.5 signatures",
}


class TokenSettings(Protocol):
    """Which module and token, and the PIN: what custody needs of the agent's [token] table.

    agent.config.TokenConfig is one; custody does not import the agent's configuration.
    """

    @property
    def module(self) -> Path: ...

    @property
    def label(self) -> str: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    def read_pin(self) -> str: ...


def load_module(config: TokenSettings) -> Any:
    """Load the PKCS#11 module named in the config (once per process)."""
    # Module-specific environment (SOFTHSM2_CONF...) must be set before the module loads.
    for name, value in config.env.items():
        os.environ[name] = value
    if not config.module.exists():
        raise TokenUnavailable(f"PKCS#11 module {config.module} does not exist (is the HSM's library installed?)")
    try:
        return pkcs11.lib(str(config.module))
    except p11err.PKCS11Error as exc:
        hint = ""
        if "opencryptoki" in config.module.name:
            # Its library needs the slot daemon; without it C_Initialize says CKR_HOST_MEMORY.
            hint = " (opencryptoki needs its slot daemon: is pkcsslotd running? Start it as root: `pkcsslotd`)"
        detail = str(exc) or f"the module failed to initialise ({type(exc).__name__})"
        raise TokenUnavailable(f"cannot load PKCS#11 module {config.module}: {detail}{hint}") from None


class TokenSession:
    """One logged-in session on one token, used one call at a time; the base of Keyring."""

    def __init__(self, config: TokenSettings) -> None:
        self._config = config
        self._pin = config.read_pin()
        self._lock = threading.Lock()
        self._lib: Any = None
        self._session: Any = None
        self._reinitialize = False
        self._generation = 0
        self._closed = False
        self._mechanisms: frozenset[Any] | None = None  # the token's, read at login
        # C_SignInit + C_Sign through ctypes for the signing loop (agent.custody.tokencall); None:
        # the module does not export them, and python-pkcs11 signs.
        self._token_call: TokenCall | None = None
        self._pkcs11_only = False  # python_pkcs11_signing() in force
        self._omit: tuple[Attribute, ...] = ()  # attributes the module does not know (V2_40_ATTRIBUTES)

    @classmethod
    def open(cls, config: TokenSettings, **kwargs: Any) -> Self:
        """Load the module and log in; raises TokenLoginError or TokenUnavailable with a clear message."""
        keyring = cls(config, **kwargs)
        with keyring._lock:
            keyring._ensure_session()
        return keyring

    def _ensure_session(self) -> Any:
        if self._session is not None:
            return self._session
        if self._closed:
            raise TokenUnavailable("the agent is shutting down")
        if self._lib is None:
            self._lib = load_module(self._config)
            self._token_call = TokenCall.load(str(self._config.module))
        elif self._reinitialize:
            # After a device loss the module keeps a dead view of the token (SoftHSM2: the slot
            # list fails with CKR_GENERAL_ERROR even once the token is back): start it afresh.
            try:
                self._lib.reinitialize()
            except p11err.PKCS11Error as exc:
                raise TokenUnavailable(f"cannot reinitialise module {self._config.module} ({type(exc).__name__})") from None
        label = self._config.label
        try:
            token = self._lib.get_token(token_label=label)
        except p11err.NoSuchToken:
            raise TokenUnavailable(
                f"no token labelled {label!r} in module {self._config.module}: check [token] label; if the "
                "token existed, its files may be damaged (SoftHSM2 rewrites token.object at every login: "
                "restore it from a backup before creating anything); a new dev token: `make token`"
            ) from None
        except p11err.MultipleTokensReturned:
            raise TokenUnavailable(f"more than one token is labelled {label!r}; labels must be unique") from None
        except SESSION_LOST as exc:
            raise TokenUnavailable(f"token {label!r} is unreachable ({type(exc).__name__})") from None
        try:
            self._session = token.open(rw=True, user_pin=self._pin)
        except p11err.PinIncorrect:
            raise TokenLoginError(f"token {label!r} rejected the PIN (wrong PIN; check the configured PIN source)") from None
        except p11err.PinLocked:
            raise TokenLoginError(f"the user PIN of token {label!r} is locked; the security officer must reset it") from None
        except p11err.PinExpired:
            raise TokenLoginError(f"the user PIN of token {label!r} has expired; set a new one") from None
        except (p11err.PinLenRange, p11err.PinInvalid):
            raise TokenLoginError(f"token {label!r} rejected the PIN as malformed (length or characters)") from None
        except p11err.UserPinNotInitialized:
            raise TokenLoginError(f"token {label!r} has no user PIN set; initialise it first") from None
        except SESSION_LOST as exc:
            raise TokenUnavailable(f"cannot open a session on token {label!r} ({type(exc).__name__})") from None
        # Only now: until a session is open, every attempt starts the module afresh. A module that
        # initialised while the token was missing keeps that view, and would never see it return.
        self._reinitialize = False
        try:
            self._mechanisms = frozenset(token.slot.get_mechanisms())
        except p11err.PKCS11Error:
            self._mechanisms = None  # unknown: every mechanism is tried, and the token's refusal reported
        self._omit = () if self._lib.cryptoki_version >= (2, 40) else V2_40_ATTRIBUTES
        self._generation += 1
        self._session_changed()
        return self._session

    def _lose_session(self) -> None:
        """Forget the session after a device error; the next call reinitialises the module and logs in again."""
        self._session = None
        self._reinitialize = True
        self._generation += 1
        self._session_changed()

    def _token_present(self) -> bool:
        """Ask the module afresh whether our token is there (C_GetSlotList, C_GetTokenInfo).

        A vanished token and a missing key look alike to C_FindObjects (both find
        nothing), so every "not found" is confirmed here before it is believed.
        """
        try:
            return any(
                slot.get_token().label == self._config.label for slot in self._lib.get_slots(token_present=True)
            )
        except p11err.PKCS11Error:
            return False

    def _not_found(self, error: KeyNotFound) -> KeyNotFound:
        """ERROR if the token is healthy; otherwise drop the session and raise TokenUnavailable."""
        if self._token_present():
            return error
        self._lose_session()
        raise TokenUnavailable(f"token {self._config.label!r} is unreachable (not present in the module)")

    @property
    def label(self) -> str:
        return self._config.label

    def probe(self) -> bool:
        """Does the token answer now? Logs in again if it can: the agent recovers by itself.

        Cheap (C_GetSlotList, C_GetTokenInfo, C_GenerateRandom), so health checks can call it
        twice a second; it never scans objects.
        """
        with self._lock:
            try:
                session = self._ensure_session()
            except CustodyError:  # unreachable, or a PIN it refuses: not serving either way
                return False
            try:
                session.generate_random(64)
            except p11err.PKCS11Error:
                self._lose_session()
                return False
            if not self._token_present():
                self._lose_session()
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._session is not None:
                try:
                    self._session.close()
                except p11err.PKCS11Error:
                    pass
                self._session = None
            self._session_changed(closed=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session_changed(self, *, closed: bool = False) -> None:
        """Called under the lock when the session changes (a new generation) or closes.

        Whatever was learned through the old session is stale then; Keyring drops its caches.
        """

    # -- the public seam for tools and tests ----------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lock every token call takes: no call of this keyring runs until the block ends.

        For tools that reach the module by other means meanwhile (bench/soak.py's hooks call
        C_GetSessionInfo and C_Finalize through ctypes): the module must never see two calls at once.
        """
        with self._lock:
            yield

    @property
    def lean_token_calls(self) -> bool:
        """Do MACs and signatures go through the ctypes token call (agent.custody.tokencall)? False
        when the module does not export C_SignInit and C_Sign, or inside `python_pkcs11_signing()`."""
        return self._lean_call() is not None

    def _lean_call(self) -> TokenCall | None:
        return None if self._pkcs11_only else self._token_call

    @contextmanager
    def python_pkcs11_signing(self) -> Iterator[None]:
        """Sign through python-pkcs11 in the block, as before the ctypes call: for tests that compare
        the two paths' outputs, and for the bench, which measures both."""
        with self._lock:
            self._pkcs11_only = True
        try:
            yield
        finally:
            with self._lock:
                self._pkcs11_only = False

    @contextmanager
    def session(self) -> Iterator[Any]:
        """The logged-in python-pkcs11 session, under the lock, for code that must handle raw objects.

        Tests inspect or damage what an import wrote; bench/deploy.py fills a token. Logs in first
        if needed (TokenLoginError, TokenUnavailable); inside the block the module's own errors are
        left as they are: nothing is translated, and a lost session is not noticed.
        """
        with self._lock:
            yield self._ensure_session()

    # -- calls -----------------------------------------------------------------------------

    def _call(self, fn: Any) -> Any:
        """Run FN(session) under the lock, turning device errors into TokenUnavailable."""
        with self._lock:
            session = self._ensure_session()
            try:
                return fn(session)
            except SESSION_LOST as exc:
                self._lose_session()
                raise TokenUnavailable(f"token {self._config.label!r} is unreachable ({type(exc).__name__})") from None
            except p11err.PKCS11Error as exc:
                if type(exc) is p11err.PKCS11Error:
                    # python-pkcs11 raises the bare base class for CKR_CRYPTOKI_NOT_INITIALIZED (the
                    # module was finalized under us) and the few codes it has no class for: start afresh.
                    self._lose_session()
                    raise TokenUnavailable(f"token {self._config.label!r} is unreachable (module not initialised)") from None
                # Anything else the module refuses (a mechanism it lacks, a read-only token...):
                # name it, so an operator can act, rather than let it surface as a crash.
                raise CustodyError(f"token {self._config.label!r} refused the operation ({type(exc).__name__})") from None

    def _fit(self, template: dict[Attribute, Any]) -> dict[Attribute, Any]:
        """TEMPLATE without the attributes this module does not know."""
        return {k: v for k, v in template.items() if k not in self._omit}

    def _create(self, session: Any, template: dict[Attribute, Any]) -> Any:
        return session.create_object(self._fit(template))

    def _require(self, mechanism: Mechanism, what: str, advice: str) -> None:
        """Raise MechanismUnsupported, naming the mechanism, if the token does not list it."""
        if self._mechanisms is not None and mechanism not in self._mechanisms:
            raise MechanismUnsupported(
                f"token {self._config.label!r} does not support {what} (CKM_{mechanism.name}): {advice}"
            )

    def _signer(self, key_type: str) -> tuple[Mechanism, Any]:
        """(mechanism, message -> data to sign) for KEY_TYPE on this token, or MechanismUnsupported."""
        advice = KEY_TYPE_ADVICE.get(key_type, "")
        if key_type == "ed25519":
            self._require(Mechanism.EDDSA, "Ed25519 signatures", advice)
            return Mechanism.EDDSA, lambda m: m
        if key_type == "ec-p256":
            self._require(Mechanism.ECDSA, "ECDSA signatures", advice)
            return Mechanism.ECDSA, lambda m: hashlib.sha256(m).digest()
        if key_type == "rsa":
            if self._mechanisms is None or Mechanism.SHA256_RSA_PKCS in self._mechanisms:
                return Mechanism.SHA256_RSA_PKCS, lambda m: m
            self._require(Mechanism.RSA_PKCS, "RSA PKCS#1 v1.5 signatures", advice)
            return Mechanism.RSA_PKCS, lambda m: SHA256_DIGEST_INFO + hashlib.sha256(m).digest()
        raise CustodyError(f"keys of type {key_type!r} make no signatures")

