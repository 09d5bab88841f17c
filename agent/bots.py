"""Caller credentials: who is asking the agent to sign.

Each bot has its own credential, and the agent stores only what verifies it:
  - a bearer token (sent as gRPC metadata `authorization: Bearer <token>`), stored as its
    SHA-256; the token is 32 random bytes, so a plain hash is enough (nothing to brute-force);
  - or a client certificate over mTLS (TCP listeners), stored as the SHA-256 fingerprint of
    its DER encoding.

The credentials file (`bots.toml`, mode 0600) is written only by `signing-agent bots ...`,
atomically (temporary file, fsync, rename), and the running agent reloads it within a
second of a change: revoking a bot is removing its entry. What each bot may do (which keys,
how fast) is policy, in the policy file, not here. With `[store] backend = "postgres"` the same
credentials live in the database the agent hosts share instead (agent.bots_db); BotsFile here and
agent.bots_db.PostgresBots are the two registries the CLI writes through.

    [bots.mm-1]
    token_sha256 = "9f2c..."
    created = "2026-11-21T10:00:00Z"

    [bots.hedger]
    cert_sha256 = "4b1a..."
    created = "2026-11-21T10:05:00Z"
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from agent.names import NAME_RE
from agent.toml_schema import STR, TABLE, Field, Schema, Where

TOKEN_PREFIX = "sa1_"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class BotsError(Exception):
    """A change to the bot credentials was refused; the message says why and what to do."""


class BotsFileError(BotsError):
    """The credentials file is unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class BotCredential:
    name: str
    token_sha256: str | None
    cert_sha256: str | None
    created: str


@dataclass(frozen=True)
class Bots:
    """The credentials in force: lookups by token hash and by certificate fingerprint.

    UNAVAILABLE, when set, says why no credential can be trusted right now (the database holding them
    has not answered within its stale bound: agent.bots_db; or this host is behind the quorum's chain:
    agent.quorum); the guard then refuses every caller with it, naming UNAVAILABLE_RULE.
    """

    by_token: dict[str, BotCredential]
    by_cert: dict[str, BotCredential]
    names: tuple[str, ...]
    unavailable: str | None = None
    unavailable_rule: str = "bots-database"

    @classmethod
    def of(cls, credentials: list[BotCredential]) -> "Bots":
        return cls(
            by_token={c.token_sha256: c for c in credentials if c.token_sha256},
            by_cert={c.cert_sha256: c for c in credentials if c.cert_sha256},
            names=tuple(sorted(c.name for c in credentials)),
        )

    def by_bearer(self, token: str) -> BotCredential | None:
        # A dict lookup by the SHA-256 of a 256-bit random token: what is compared is a hash the
        # caller cannot steer byte by byte, so no constant-time comparison is needed on top.
        return self.by_token.get(hash_token(token))

    def by_certificate(self, fingerprint: str) -> BotCredential | None:
        return self.by_cert.get(fingerprint)


def validate_bot_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):  # the shape of key labels too
        raise BotsFileError(
            f"bot name {name[:80]!r} is invalid: 1-64 characters, letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def new_token() -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def cert_fingerprint(pem_or_der: bytes) -> str:
    """SHA-256 of a certificate's DER encoding (the form in bots.toml and in the audit)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(pem_or_der) if b"-----BEGIN" in pem_or_der else (
            x509.load_der_x509_certificate(pem_or_der))
    except ValueError:
        raise BotsFileError("not a PEM or DER X.509 certificate") from None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_bots(path: Path) -> Bots:
    """Read the credentials file. A missing file means no bots (every call is unauthenticated)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Bots.of([])
    except (OSError, UnicodeDecodeError) as exc:
        raise BotsFileError(f"cannot read bots file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BotsFileError(f"bots file {path} is not valid TOML: {exc}") from None
    return Bots.of(_parse(path, raw))


def parse_bots(text: str, *, source: str) -> Bots:
    """The credentials in TEXT (a bots file's content, e.g. from a published policy bundle)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BotsFileError(f"{source}: not valid TOML: {exc}") from None
    return Bots.of(_parse(Path(source), raw))


_HASH = "64 lowercase hex digits"
_ENTRY = Schema(
    Field("token_sha256", STR, check=_HEX64.match, expect=_HASH),
    Field("cert_sha256", STR, check=_HEX64.match, expect=_HASH),
    Field("created", default="", convert=str),
    one_of=[("token_sha256", "cert_sha256")],
)
_FILE = Schema(Field("bots", TABLE, default={}), hint=" (only [bots.NAME] tables)")


def _parse(path: Path, raw: dict) -> list[BotCredential]:
    where = Where(str(path), BotsFileError)
    out: list[BotCredential] = []
    seen_hashes: set[str] = set()
    for name, entry in _FILE.read(raw, where)["bots"].items():
        validate_bot_name(name)
        bot = where.sub("bots", name)
        e = _ENTRY.read(entry, bot)
        digest = e["token_sha256"] or e["cert_sha256"]
        if digest in seen_hashes:
            bot.fail("shares its credential with another bot")
        seen_hashes.add(digest)
        out.append(BotCredential(name=name, token_sha256=e["token_sha256"], cert_sha256=e["cert_sha256"],
                                 created=e["created"]))
    return out


def _render(credentials: list[BotCredential]) -> str:
    lines = ["# Bot credentials (hashes only). Managed by `signing-agent bots`; do not edit by hand.", ""]
    for c in sorted(credentials, key=lambda c: c.name):
        lines.append(f'[bots."{c.name}"]')
        if c.token_sha256:
            lines.append(f'token_sha256 = "{c.token_sha256}"')
        if c.cert_sha256:
            lines.append(f'cert_sha256 = "{c.cert_sha256}"')
        lines.append(f'created = "{c.created}"')
        lines.append("")
    return "\n".join(lines)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _current(path: Path) -> list[BotCredential]:
    bots = load_bots(path)
    return sorted({*bots.by_token.values(), *bots.by_cert.values()}, key=lambda c: c.name)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the bots file between CLI processes (a revoke must never be undone
    by a concurrent add that read the file before it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


BOT_EXISTS = "bot {name!r} exists; revoke it first to issue a new credential"
CERT_TAKEN = "this certificate already identifies another bot"


def new_credential(name: str, cert_pem: bytes | None) -> tuple[BotCredential, str | None]:
    """A new credential for bot NAME, and its bearer token (None for a certificate bot): what
    `bots add` registers, whichever registry holds it. The token exists only in what this returns."""
    validate_bot_name(name)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if cert_pem is not None:
        return BotCredential(name, None, cert_fingerprint(cert_pem), created), None
    token = new_token()
    return BotCredential(name, hash_token(token), None, created), token


def add_bot(path: Path, name: str, *, cert_pem: bytes | None = None,
            deliver: Callable[[str], None] | None = None) -> str | None:
    """Add a bot; returns its new bearer token (shown once), or None for a certificate bot.

    DELIVER, when given, receives the new token before the bots file is written: if it raises
    (the token file cannot be written), the bot is not registered and the exception propagates.
    """
    credential, token = new_credential(name, cert_pem)
    with _locked(path):
        current = _current(path)
        if any(c.name == name for c in current):
            raise BotsFileError(BOT_EXISTS.format(name=name))
        if credential.cert_sha256 and any(c.cert_sha256 == credential.cert_sha256 for c in current):
            raise BotsFileError(CERT_TAKEN)
        if token is not None and deliver is not None:
            deliver(token)
        _write_atomically(path, _render([*current, credential]))
    return token


def revoke_bot(path: Path, name: str) -> None:
    with _locked(path):
        current = _current(path)
        if not any(c.name == name for c in current):
            raise BotsFileError(f"no bot named {name!r} in {path}")
        _write_atomically(path, _render([c for c in current if c.name != name]))


def list_bots(path: Path) -> list[BotCredential]:
    return _current(path)


class BotsFile:
    """The bots file as a registry (the CLI's `bots add/list/revoke`), beside agent.bots_db.PostgresBots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def add(self, name: str, *, cert_pem: bytes | None = None,
            deliver: Callable[[str], None] | None = None) -> str | None:
        return add_bot(self.path, name, cert_pem=cert_pem, deliver=deliver)

    def revoke(self, name: str) -> None:
        revoke_bot(self.path, name)

    def list(self) -> list[BotCredential]:
        return list_bots(self.path)

    def close(self) -> None:
        pass
