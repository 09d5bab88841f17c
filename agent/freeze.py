"""The kill switch: `signing-agent freeze --key K | --bot B | --all` and `unfreeze`.

Why a file in the state dir: every agent process on the host (workers, or agents sharing the state
dir) already polls the policy files every RELOAD_INTERVAL; the freeze file is polled the same way,
so a freeze is in force on every worker within that interval, survives restarts, and needs no RPC
(an operator stopping a drain must not depend on the agent answering them). Several hosts sharing a
PostgreSQL store share a table instead (agent.freeze_pg), read beside this file. The CLI writes it under
an exclusive flock, to a temporary file then `os.replace`, so a worker reads the old or the new list
whole.

What a freeze stops: every request that could open or enlarge exposure, i.e. anything that is not a
read or a cancel (new orders, amends of price or size, anything the rules cannot tell apart), and
any request carrying an order, whatever its path or method. Reads and cancels stay signed so a person
can see and flatten positions. Fail closed: a freeze file that cannot be read or parsed freezes
everything until it is fixed (or removed by `unfreeze --all`).

The file:  {"version": 1, "freezes": [{"scope": "all"|"key"|"bot", "name": ..., "by": ..., "at": ..., "reason": ...}]}
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from agent.rules.forbidden import is_read, words
from agent.rules.facts import RequestFacts
from agent.rules.view import View, path_key

FILE = "freeze.json"
SCOPES = ("all", "key", "bot")


class FreezeFileError(Exception):
    """The freeze file cannot be written (the CLI says so and changes nothing)."""


@dataclass(frozen=True)
class Freeze:
    scope: str  # "all", "key" or "bot"
    name: str  # the key label or bot name; "" for "all"
    by: str  # the operator's user name
    at: str  # when, ISO 8601 UTC
    reason: str = ""

    def describe(self) -> str:
        what = "every key" if self.scope == "all" else f"{self.scope} {self.name!r}"
        why = f" ({self.reason[:200]})" if self.reason else ""
        return f"{what} frozen by {self.by} at {self.at}{why}"

    def undo(self) -> str:
        return "signing-agent unfreeze " + ("--all" if self.scope == "all" else f"--{self.scope} {self.name}")


@dataclass(frozen=True)
class Freezes:
    entries: tuple[Freeze, ...]
    problem: str = ""  # the file could not be read: everything is frozen (fail closed)

    def find(self, *, bot: str, key: str) -> Freeze | None:
        """The freeze that covers a request of BOT with KEY: --all first, then the key, then the bot."""
        if self.problem:
            return Freeze("all", "", "(unreadable freeze file)", "", self.problem)
        for scope, name in (("all", ""), ("key", key), ("bot", bot)):
            for entry in self.entries:
                if entry.scope == scope and entry.name == name:
                    return entry
        return None


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE


def read(state_dir: Path) -> Freezes:
    """The freezes in force; no file is no freeze; a damaged file freezes everything (fail closed)."""
    path = path_in(state_dir)
    try:
        data = json.loads(path.read_bytes())
        entries = tuple(Freeze(**{k: str(e[k]) for k in ("scope", "name", "by", "at")},
                               reason=str(e.get("reason", ""))) for e in data["freezes"])
        if any(e.scope not in SCOPES for e in entries):
            raise ValueError("unknown scope")
    except FileNotFoundError:
        return Freezes(())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return Freezes((), problem=f"freeze file {path} is unreadable ({type(exc).__name__}); every key stays "
                                   "frozen until it is fixed or `signing-agent unfreeze --all` replaces it")
    return Freezes(entries)


def _write(state_dir: Path, entries: Iterable[Freeze]) -> None:
    path = path_in(state_dir)
    tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"version": 1, "freezes": [asdict(e) for e in entries]}, indent=1).encode())
        os.fsync(fd)  # a freeze must survive a power loss: it is the operator's brake
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _Locked:
    """The freeze file's writers take this flock, so two operators' changes do not overwrite each other."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(state_dir / ".freeze.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing releases the lock


def freeze(state_dir: Path, scope: str, name: str, *, by: str, reason: str = "") -> tuple[Freeze, bool]:
    """Add a freeze; (the freeze in force, whether it is new). Freezing what is frozen keeps the first."""
    try:
        with _Locked(state_dir):
            current = read(state_dir)
            entries = list(current.entries)
            for entry in entries:
                if (entry.scope, entry.name) == (scope, name):
                    return entry, False
            entry = Freeze(scope, name, by, datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), reason)
            _write(state_dir, [*entries, entry])
            return entry, True
    except OSError as exc:
        raise FreezeFileError(f"cannot write {path_in(state_dir)}: {exc.strerror}") from None


def unfreeze(state_dir: Path, scope: str, name: str) -> Freeze | None:
    """Lift one freeze; the freeze lifted, or None when there was none. `unfreeze --all` also replaces an
    unreadable file (its freezes are lost: the operator is told to check the others)."""
    try:
        with _Locked(state_dir):
            current = read(state_dir)
            if current.problem and scope == "all":
                _write(state_dir, [])
                return Freeze("all", "", "(unreadable freeze file)", "", current.problem)
            kept = [e for e in current.entries if (e.scope, e.name) != (scope, name)]
            if len(kept) == len(current.entries):
                return None
            _write(state_dir, kept)
            return next(e for e in current.entries if (e.scope, e.name) == (scope, name))
    except OSError as exc:
        raise FreezeFileError(f"cannot write {path_in(state_dir)}: {exc.strerror}") from None


class FileFreezes:
    """This host's freeze file, with the methods of agent.freeze_pg.PostgresFreezes (the CLI uses either)."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir

    def freeze(self, scope: str, name: str, *, by: str, reason: str = "") -> tuple[Freeze, bool]:
        return freeze(self._state_dir, scope, name, by=by, reason=reason)

    def unfreeze(self, scope: str, name: str) -> Freeze | None:
        return unfreeze(self._state_dir, scope, name)

    def read(self) -> Freezes:
        return read(self._state_dir)

    def close(self) -> None:
        pass


# -- what a freeze lets through (pure) --------------------------------------------------------------


def is_cancel(v: View) -> bool:
    """A request that only cancels: DELETE, or a path (or every JSON-RPC method it names) with the
    word "cancel". Together with `frozen_allows`'s order check, a cancel-and-replace is not one."""
    if v.method == "DELETE":
        return True
    # The original path (words split camelCase: Kraken's CancelOrder), except Deribit's JSON-RPC root,
    # which names no method itself; and every method a JSON-RPC body names.
    root = v.exchange.rules.json_rpc
    names = [name for name in (v.path, *v.rpc_methods) if not (root and path_key(name) == root)]
    return bool(names) and all("cancel" in words(name) for name in names)


# Reads where every request is a POST (Kraken, Bitfinex, Crypto.com, Gemini...): the exchanges' read
# endpoints by name, as the last path segment (or JSON-RPC method) without separators. The default-deny
# rules' `is_read` knows only the reads of forbidden families there. A name that starts like a write is
# never a read, whatever it ends with.
_WRITE_NAME = re.compile(r"(set|update|edit|amend|modify|replace|place|add|create|close|submit|transfer|withdraw)")
_READ_NAME = re.compile(r"(get|query|list|fetch).*|.*(balance|balances|balanceex|history|ledgers|trades|mytrades"
                        r"|positions|openorders|closedorders|tradevolume|status|fees|summary)")


def is_named_read(v: View) -> bool:
    root = v.exchange.rules.json_rpc
    names = [name for name in (v.path, *v.rpc_methods) if not (root and path_key(name) == root)]
    lasts = [re.sub(r"[^a-z0-9]", "", name.rstrip("/").rsplit("/", 1)[-1].lower()) for name in names]
    return bool(lasts) and all(_READ_NAME.fullmatch(n) and not _WRITE_NAME.match(n) for n in lasts)


def frozen_allows(v: View | None, facts: RequestFacts | None) -> bool:
    """Whether a frozen key may still sign this request: a read or a cancel that places no order.
    Unsure (not read yet) is no."""
    if v is None or facts is None or facts.orders:
        return False
    return is_read(v) or is_named_read(v) or is_cancel(v)
