"""Declarative checks for the agent's TOML files (signing-agent.toml, policy.toml, bots.toml).

A `Schema` lists the `Field`s one table may hold; `Schema.read(table, where)` checks the table
and returns {field name: value} with defaults filled in and converters applied, or raises the
file's own exception (`where.error`) with a message that names the file, the table and the key,
says what is wrong and what to write instead:

    KEY = Schema(
        Field("endpoints", TEXTS, required="the allow-list; [] refuses everything"),
        Field("timestamps", STR, default="skew", choices=("skew", "agent", "any")),
        Field("timestamp_skew_ms", INT, default=5000, low=0, high=60_000),
    )
    values = KEY.read(raw["keys"]["k"], Where("policy.toml", PolicyError).sub("keys", "k"))
    # PolicyError: policy.toml: [keys.k] timestamp_skew_ms must be an integer from 0 to 60000, not 600000

A field may be a sub-table read with its own schema (`Field("tls", schema=TLS)`), or a table of
any names with values of one kind (`table_of(STR)`, e.g. [token.env]). Keys a schema does not
list are refused, with a did-you-mean where one is close. A string value is never echoed (a
secret pasted in the wrong place must not reach a log) unless the field takes a few fixed words;
numbers, booleans and the type of anything else are. A converter may raise `Invalid("what is
wrong")`: the reader puts the place in front of it. Cross-field rules beyond "exactly one of"
stay in the loaders.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, NoReturn


class Invalid(Exception):
    """Raised by a converter: what is wrong with the value, written to follow the key's name."""


@dataclass(frozen=True)
class Kind:
    """A TOML type: what it is called in messages ("an integer") and the test a value must pass."""

    expect: str
    test: Callable[[Any], bool]
    table: bool = False  # named as a sub-table ([server.tls]) in messages
    each: Kind | None = None  # a list, or a table of any keys, whose every value is of this kind


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


ANY = Kind("a value", lambda v: True)
STR = Kind("a string", lambda v: isinstance(v, str))
TEXT = Kind("a non-empty string", lambda v: isinstance(v, str) and v != "")
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
INT = Kind("an integer", _is_int)
NUMBER = Kind("a number", lambda v: _is_int(v) or isinstance(v, float))
TEXTS = Kind("a list of non-empty strings", lambda v: isinstance(v, list), each=TEXT)
TABLE = Kind("a table", lambda v: isinstance(v, dict), table=True)


def table_of(kind: Kind, expect: str | None = None) -> Kind:
    """A table of any keys whose values are all of KIND (e.g. [token.env])."""
    return Kind(expect or f"a table of NAME = {kind.expect.removeprefix('a ').removeprefix('an ')}",
                lambda v: isinstance(v, dict), table=True, each=kind)


@dataclass(frozen=True)
class Field:
    """One key of a table.

    required: False, or why the key must be there (shown in the message); default: the value when
    the key is absent (not converted); low/high: inclusive bounds of a number; choices: the values
    allowed; check/expect: any other test and what it asks for; convert: value -> result, may raise
    Invalid; schema: the key is a sub-table read with this schema (absent: its defaults, or None
    when it has required keys).
    """

    name: str
    kind: Kind = ANY
    required: bool | str = False
    default: Any = None
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], bool] | None = None
    expect: str | None = None
    convert: Callable[[Any], Any] | None = None
    schema: Schema | None = None

    def expectation(self) -> str:
        if self.expect:
            return self.expect
        if self.choices:
            return "one of " + ", ".join(map(_show, self.choices))
        if self.low is not None and self.high is not None:
            return f"{self.kind.expect} from {self.low} to {self.high}"
        return self.kind.expect


@dataclass(frozen=True)
class Where:
    """A table of a TOML file, for messages; `error` is the exception the file's loader raises."""

    file: str
    error: type[Exception]
    table: tuple[str, ...] = ()

    def sub(self, *names: str) -> Where:
        return Where(self.file, self.error, (*self.table, *names))

    def __str__(self) -> str:
        return f"{self.file}: [{'.'.join(map(toml_key, self.table))}]" if self.table else f"{self.file}:"

    def fail(self, problem: str, key: str | None = None) -> NoReturn:
        """Raise the file's error: '<file>: [<table>] <key> <problem>'."""
        raise self.error(f"{self} {problem}" if key is None else f"{self} {key} {problem}")


class Schema:
    """The keys one table may hold (see the module docstring)."""

    def __init__(self, *fields: Field, one_of: Iterable[tuple[str, ...]] = (), refused: Mapping[str, str] = {},
                 hint: str = "") -> None:
        self.fields = fields
        self.one_of = tuple(one_of)  # groups of keys of which exactly one must be given
        self.refused = dict(refused)  # key -> why it must never be written
        self.hint = hint  # added to the unknown-key message, e.g. what the table holds

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def read(self, raw: Any, where: Where, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check RAW (a TOML table) and return every field's value. DEFAULTS (e.g. a [defaults] table
        already read) replace the fields' own defaults for keys RAW does not have."""
        if not isinstance(raw, dict):
            where.fail(f"must be a table, not {_show(raw)}")
        for key, why in self.refused.items():
            if key in raw:
                where.fail(f"is refused: {why}", key)
        unknown = sorted(set(raw) - set(self.names))
        if unknown:
            where.fail(f"{'has ' if where.table else ''}unknown setting(s) {unknown}"
                       f"{did_you_mean(unknown[0], self.names)}; known: {sorted(self.names)}{self.hint}")
        for group in self.one_of:
            if sum(k in raw for k in group) != 1:
                where.fail("needs exactly one of " + " or ".join(f"'{k}'" for k in group))
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name in raw:
                out[f.name] = _value(f, raw[f.name], where)
            elif f.required:
                why = f" ({f.required})" if isinstance(f.required, str) else ""
                if f.schema is not None or f.kind.table:
                    where.sub(f.name).fail(f"is required{why}")
                where.fail(f"'{f.name}' is required{why}")
            elif defaults is not None and f.name in defaults:
                out[f.name] = defaults[f.name]
            elif f.schema is not None:
                out[f.name] = None if any(g.required for g in f.schema.fields) else f.schema.read({}, where.sub(f.name))
            else:
                out[f.name] = f.default
        return out


def _value(f: Field, value: Any, where: Where) -> Any:
    if f.schema is not None:
        return f.schema.read(value, where.sub(f.name))
    place, key = (where.sub(f.name), None) if f.kind.table else (where, f.name)
    typed = f.kind.test(value)
    if not (typed and (not f.choices or value in f.choices) and (f.low is None or value >= f.low)
            and (f.high is None or value <= f.high) and (f.check is None or f.check(value))):
        place.fail(f"must be {f.expectation()}{_not(value, echo=bool(f.choices), typed=typed)}"
                   f"{did_you_mean(value, f.choices)}", key)
    each = f.kind.each
    if each is not None:
        items = ((toml_key(k), v) for k, v in value.items()) if isinstance(value, dict) else (
            (f"{f.name} entry {i}", v) for i, v in enumerate(value, 1))
        for name, item in items:
            if not each.test(item):
                place.fail(f"must be {each.expect}{_not(item)}", name)
    try:
        return value if f.convert is None else f.convert(value)
    except Invalid as exc:
        place.fail(str(exc), key)


def _not(value: Any, *, echo: bool = False, typed: bool = False) -> str:
    """', not <value>' for a message. A string is shown only when ECHO (one among fixed words, maybe a
    typo), and omitted when of the right type: it may be a secret written in the wrong place."""
    if isinstance(value, str) and not echo:
        return "" if typed else ", not a string" if value else ", not an empty string"
    return f", not {_show(value)}"


def _show(value: Any) -> str:
    """A value as a message shows it: numbers, booleans and strings as written, else their type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return repr(value[:40]) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)
    for kind, name in ((datetime, "a date-time"), (date, "a date"), (time, "a time"), (list, "an array"),
                       (dict, "a table")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def did_you_mean(word: Any, known: Iterable[Any]) -> str:
    """' (did you mean 'x'?)' when one of KNOWN is close to WORD, else ''."""
    names = [k for k in known if isinstance(k, str)]
    if not isinstance(word, str) or not names:
        return ""
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.75) or [
        n for n in names if len(word) >= 3 and (n.startswith(word) or word.startswith(n))]
    return f" (did you mean {close[0]!r}?)" if close else ""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(name: str) -> str:
    """NAME as it is written in a TOML table header: bare, or quoted ("*", names with dots)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
