"""`policy template --merge FILE`: add one key's safe start (and its grant to a bot) to a policy file.

The operator's file keeps its text and comments: the key's table is appended, and the bot's grant
goes into its existing `[bots.NAME]` table (its `keys` list gains the key) or into a new table; a
second `[bots.NAME]` table would make the file invalid TOML. A key that already has a table is
refused, never overwritten. The result is validated as the agent would read it, then written in
one step (temporary file, fsync, rename), so a running agent never reads half of it.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from agent.policy import PolicyError, parse_policy
from agent.policy_templates import BOT_TEMPLATE, default_policy


class MergeError(Exception):
    """The merge is refused; the message says why and what to do."""


def _header(kind: str, name: str) -> re.Pattern[str]:
    quoted = re.escape(name)
    return re.compile(
        rf"""^[ \t]*\[[ \t]*{kind}[ \t]*\.[ \t]*(?:"{quoted}"|'{quoted}'|{quoted})[ \t]*\][ \t]*(?:#.*)?$""",
        re.MULTILINE,
    )


_ANY_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)


def _array_end(text: str, start: int) -> int:
    """The index just past the TOML array opening at text[start] ('['), skipping strings and comments."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c in "\"'":
            triple = text[i:i + 3] == c * 3
            quote = c * 3 if triple else c
            i += len(quote)
            while i < len(text) and not text.startswith(quote, i):
                i += 2 if (c == '"' and text[i] == "\\") else 1
            i += len(quote)
            continue
        if c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise MergeError("unterminated array")


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def merged_text(text: str, exchange: str, key: str, bot: str | None) -> tuple[str, str]:
    """TEXT with KEY's safe start added (and BOT granted it); and a sentence saying what changed."""
    try:
        current = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MergeError(f"it is not valid TOML ({exc}); fix it first (signing-agent policy check)") from None
    if key in (current.get("keys") or {}):
        raise MergeError(f"it already has a table for key {key!r}; edit that table, or revoke the key and choose "
                         "another label")
    template = default_policy(exchange, key)  # UnknownExchange propagates
    done = f"added key {key!r} ({exchange})"
    bots = current.get("bots") or {}
    if bot is not None and bot in bots:
        granted = bots[bot].get("keys") if isinstance(bots[bot], dict) else None
        match = _header("bots", bot).search(text)
        if match is None:
            raise MergeError(f"bot {bot!r} is defined without a [bots.{bot}] header; add {key!r} to its keys by hand")
        section_end = _ANY_HEADER.search(text, match.end())
        end = section_end.start() if section_end else len(text)
        section = text[match.end():end]
        if granted is not None and "*" in granted:
            done += f"; bot {bot!r} already has every key (\"*\")"
        elif granted is not None and key in granted:
            done += f"; bot {bot!r} already has it"
        else:
            keys_line = re.search(r"^[ \t]*keys[ \t]*=[ \t]*", section, re.MULTILINE)
            new_keys = [*(granted or []), key]
            rendered = "[" + ", ".join(_toml_str(k) for k in new_keys) + "]"
            if keys_line is None:
                section = "\nkeys = " + rendered + section
            else:
                array_start = keys_line.end()
                if section[array_start:array_start + 1] != "[":
                    raise MergeError(f"bot {bot!r}'s keys are not written as an array; add {key!r} by hand")
                array_end = _array_end(section, array_start)
                section = section[:array_start] + rendered + section[array_end:]
            text = text[:match.end()] + section + text[end:]
            done += f"; bot {bot!r} may use {', '.join(new_keys)}"
    elif bot is not None:
        template += BOT_TEMPLATE.format(bot=bot, key=key)
        done += f"; new bot table [bots.{bot}] granting it"
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "\n" + template, done


def merge_into(path: Path, exchange: str, key: str, bot: str | None) -> str:
    """Merge into the policy file PATH (created when missing), atomically; returns what changed."""
    path = Path(os.path.realpath(path))  # a symlinked policy file stays a symlink
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        text, mode = "", 0o644
    except (OSError, UnicodeDecodeError) as exc:
        raise MergeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        parse_policy(text.encode("utf-8"), source=str(path))
    except PolicyError as exc:
        raise MergeError(f"{path} is refused as it is ({exc}); fix it first") from None
    new, done = merged_text(text, exchange, key, bot)
    try:
        parse_policy(new.encode("utf-8"), source=str(path))
    except PolicyError as exc:  # never write a file the agent would reject
        raise MergeError(f"the merged policy would be refused ({exc}); nothing was written") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, new.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise MergeError(f"cannot write {path}: {exc.strerror or exc}; it is unchanged") from None
    return f"{path}: {done}"
