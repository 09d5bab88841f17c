"""What a key label, a bot name and an exchange API key id may look like.

A leaf module (no pkcs11, no custody): the signing path checks a request's key label
here without loading the token code, the CLI checks its arguments before it opens the
token, and custody checks again before it writes anything.

Each layer refuses a bad name in its own terms, so the validators take the exception
to raise: InvalidName by default, custody's InvalidKeyMaterial inside custody (the CLI
maps every CustodyError), the service turns InvalidName into INVALID_ARGUMENT.
"""

from __future__ import annotations

import re

# Key labels and bot names: 1-64 characters, safe in policy tables, audit records, logs and
# file names. Used with fullmatch.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The id an exchange issues for a key: printable ASCII without spaces (it is sent in headers).
API_KEY_RE = re.compile(r"[\x21-\x7e]{1,256}")


class InvalidName(ValueError):
    """A label or API key id is malformed; the message says what is allowed."""


def validate_label(label: str, error: type[Exception] = InvalidName) -> None:
    if not NAME_RE.fullmatch(label):
        raise error(
            "a key label is 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def validate_api_key(api_key: str, error: type[Exception] = InvalidName) -> None:
    if not API_KEY_RE.fullmatch(api_key):
        raise error("the API key id must be 1-256 printable ASCII characters without spaces")
