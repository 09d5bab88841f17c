"""The leak guard's registry: every secret a test uses is registered here.

tests/conftest.py searches every test's output and failure report, and at the end every file the
agent and CLI processes wrote, for every registered secret (see its docstring).
"""

from __future__ import annotations

import secrets as _secrets
import string
from pathlib import Path

SECRETS: set[str] = set()
OUTPUT_DIRS: list[Path] = []  # deployments' directories, scanned at the end of the session
ALPHABET = string.ascii_letters + string.digits


def register_secret(secret: str) -> str:
    SECRETS.add(secret)
    return secret


def new_secret(length: int = 64, alphabet: str = ALPHABET) -> str:
    """A random exchange-style secret, registered with the leak guard."""
    return register_secret("".join(_secrets.choice(alphabet) for _ in range(length)))


def find_leaks(text: str) -> bool:
    return any(s in text for s in SECRETS)
