"""What custody raises. Messages name what went wrong and never contain key material.

The service maps them to statuses (agent.service._status_for), the CLI to exit codes:
KeyNotFound is NOT_FOUND, TokenUnavailable UNAVAILABLE (retry), the rest FAILED_PRECONDITION.
"""

from __future__ import annotations


class CustodyError(Exception):
    """Base class. Messages name what went wrong and never contain key material."""


class TokenUnavailable(CustodyError):
    """The module or token cannot be reached right now; a later call may succeed."""


class TokenLoginError(CustodyError):
    """The token refused the PIN (wrong, locked, expired); retrying will not help."""


class KeyNotFound(CustodyError):
    """No key with that label (never imported, or revoked)."""


class KeyRevoked(KeyNotFound):
    """The cached handle died since lookup: revoked, or the session was reopened. Look it up again."""


class KeyExists(CustodyError):
    """A key with that label exists already; labels are never overwritten."""


class MechanismUnsupported(CustodyError):
    """The token lacks a mechanism this key type needs; the message names it and what to do instead."""


class InvalidKeyMaterial(CustodyError, ValueError):
    """The label, API key id or secret given to an import is malformed; nothing was written."""
