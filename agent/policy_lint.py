"""`policy check` warnings: a policy that parses but cannot do what its author meant.

The policy parser (agent.policy) refuses what is malformed. This module warns about what is
well-formed yet wrong for the key's exchange, so that an operator learns it before every request
fails:

  - an endpoint no catalogue of the exchange knows (a typo: `POST /api/v3/orders` for
    `/api/v3/order`), with the nearest known endpoint. The catalogue is ccxt's (every private
    endpoint of the exchange, turned into the request the agent would sign by the ccxt bridge);
    ccxt is a development / `ccxt`-extra dependency, and without it this check is skipped, saying so;
  - an endpoint the default-deny rules always refuse (a withdrawal in `endpoints` without its
    category in `allow`): agent.rules.inspect on a synthetic request for the endpoint;
  - a symbol written as ccxt's unified symbol (`BTC/USDT`) where requests carry the exchange's id
    (`BTCUSDT`); and, when a market list is given (`policy check --markets EXCHANGE=FILE`), a
    symbol the exchange does not list (`BTCUSTD`), with the nearest one. No market list is known
    offline, so without one the symbol check is skipped, saying so.

Nothing here refuses a policy: warnings only, each saying what to change.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from agent.policy import KeyPolicy, Policy
from signing_agent_client.request import METHODS, UnsignedRequest

PLACEHOLDER_SEGMENT = "X1"


@dataclass
class Report:
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # checks skipped, and why


@dataclass(frozen=True)
class Catalogue:
    """The private endpoints an exchange has, as (METHOD, path) with each path parameter as X1."""

    exchange: str
    endpoints: frozenset[tuple[str, str]]

    def known(self, pattern) -> bool:
        return any(pattern.matches(method, path) for method, path in self.endpoints)

    def nearest(self, text: str) -> str | None:
        shown = {f"{m} {p.replace('/' + PLACEHOLDER_SEGMENT, '/*')}" for m, p in self.endpoints}
        close = difflib.get_close_matches(text, sorted(shown), n=1, cutoff=0.8)
        return close[0] if close else None


def ccxt_available() -> bool:
    try:
        import ccxt  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=None)
def ccxt_catalogue(exchange_id: str) -> Catalogue | None:
    """ccxt's private endpoints of EXCHANGE_ID, as the agent would sign them; None where ccxt has no class
    (or ccxt is not installed)."""
    try:
        import ccxt
        from ccxt.base.types import Entry
    except ImportError:
        return None
    cls = getattr(ccxt, exchange_id, None)
    from signing_agent_client.ccxt_bridge import bridge_module

    try:
        bridge = bridge_module(exchange_id)
    except ValueError:  # no ccxt bridge for this exchange
        return None
    if cls is None:
        return None
    exchange = cls(dict(bridge.PLACEHOLDER))
    found: set[tuple[str, str]] = set()
    seen = set()
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if not isinstance(value, Entry):
                continue
            key = (tuple(value.api) if isinstance(value.api, list) else value.api, value.method, value.path)
            if key in seen:
                continue
            seen.add(key)
            params = {name: PLACEHOLDER_SEGMENT for name in re.findall(r"\{([^}]+)\}", value.path)}
            try:
                built = exchange.sign(value.path, value.api, value.method, params)
                unsigned = bridge.unsign(exchange, built, value.api)
            except Exception:  # noqa: BLE001 - retired API sections the agent cannot sign
                continue
            if unsigned is not None:
                found.add((unsigned.request.method, unsigned.request.path))
    return Catalogue(exchange_id, frozenset(found)) if found else None


def read_markets(path: Path) -> frozenset[str]:
    """Exchange symbols from FILE: a JSON list of ids (["BTCUSDT", ...]), or ccxt's `markets` / a list of
    ccxt market objects (each market's "id" is the exchange's own symbol), or one id per line."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return frozenset(line.strip().upper() for line in text.splitlines() if line.strip())
    items = data.values() if isinstance(data, dict) else data
    out = set()
    for item in items:
        if isinstance(item, str):
            out.add(item.upper())
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            out.add(item["id"].upper())
    return frozenset(out)


def _synthetic_paths(pattern) -> Iterable[tuple[str, str]]:
    methods = METHODS if pattern.method == "*" else (pattern.method,)
    _, _, path = pattern.text.partition(" ")
    path = path.strip().replace("**", PLACEHOLDER_SEGMENT).replace("*", PLACEHOLDER_SEGMENT)
    for method in methods:
        yield method, path


def always_refused(exchange_id: str, key: KeyPolicy, pattern) -> list[tuple[str, str]]:
    """The default-deny categories (and evidence) that refuse every request to PATTERN for this key;
    empty when some method of the pattern passes the categories."""
    from agent.exchanges import EXCHANGES
    from agent.rules import inspect
    from agent.schemes import RequestInvalid

    found: list[tuple[str, str]] | None = None
    for method, path in _synthetic_paths(pattern):
        try:
            facts = inspect(EXCHANGES[exchange_id], UnsignedRequest(method, path, (), None))
        except RequestInvalid:
            return []
        refused = [(c, why) for c, why in facts.violations if c not in key.allow]
        if not refused:
            return []
        found = found or refused
    return found or []


def lint(policy: Policy, exchanges: dict[str, str], *, markets: dict[str, frozenset[str]] | None = None,
         use_ccxt: bool = True) -> Report:
    """Warnings for POLICY, whose keys are on EXCHANGES (label -> exchange id)."""
    from agent.exchanges import EXCHANGES

    report = Report()
    markets = markets or {}
    have_ccxt = use_ccxt and ccxt_available()
    unknown_labels = sorted(label for label in policy.keys if label not in exchanges)
    if unknown_labels:
        report.notes.append(
            "exchange checks skipped for " + ", ".join(repr(k) for k in unknown_labels)
            + ": not in the token (import or generate the key, or say which exchange: "
            + "--exchange LABEL=EXCHANGE)")
    if not have_ccxt and len(unknown_labels) < len(policy.keys):
        report.notes.append("endpoint names not checked against the exchange's catalogue: ccxt is not installed "
                            "(pip install 'signing-agent[ccxt]')")
    no_markets: set[str] = set()
    for label, key in sorted(policy.keys.items()):
        exchange_id = exchanges.get(label)
        if exchange_id is None:
            continue
        if exchange_id not in EXCHANGES:
            report.warnings.append(f"key {label!r}: exchange {exchange_id!r} is not one the agent signs for")
            continue
        where = f"[keys.{label}]"
        catalogue = ccxt_catalogue(exchange_id) if have_ccxt else None
        if have_ccxt and catalogue is None:
            report.notes.append(f"{where}: endpoint names not checked: ccxt has no catalogue for {exchange_id}")
        for pattern in key.endpoints:
            refused = always_refused(exchange_id, key, pattern)
            if refused:
                category, why = refused[0]
                report.warnings.append(
                    f"{where} endpoint {pattern.text!r} is always refused ({why}: default-deny category "
                    f"{category!r}, not in this key's `allow`): remove it from `endpoints`")
                continue
            if catalogue is not None and not catalogue.known(pattern):
                near = catalogue.nearest(pattern.text)
                hint = f"did you mean {near!r}?" if near else "check the method and the path in the exchange's API docs"
                report.warnings.append(f"{where} endpoint {pattern.text!r} is not a private endpoint of {exchange_id} "
                                       f"(ccxt's catalogue): every request to it would be refused or fail; {hint}")
        if key.symbols is None:
            continue
        for symbol in sorted(key.symbols):
            if "/" in symbol:
                report.warnings.append(
                    f"{where} symbol {symbol!r} is ccxt's unified form; requests carry {exchange_id}'s own id "
                    f"(such as {symbol.replace('/', '').replace(':', '')!r} on Binance, "
                    f"{symbol.split(':')[0].replace('/', '-')!r} on OKX): write the id the exchange uses")
        known = markets.get(exchange_id)
        if known is None:
            no_markets.add(exchange_id)
            continue
        for symbol in sorted(key.symbols):
            if symbol.upper() not in known and "/" not in symbol:
                near = difflib.get_close_matches(symbol.upper(), sorted(known), n=1, cutoff=0.7)
                hint = f"did you mean {near[0]!r}?" if near else "check its spelling"
                report.warnings.append(f"{where} symbol {symbol!r} is not a {exchange_id} market: orders on it "
                                       f"cannot exist; {hint}")
    for exchange_id in sorted(no_markets):
        report.notes.append(f"symbols of {exchange_id} keys not checked against its markets: no market list "
                            f"(give one: --markets {exchange_id}=FILE, a JSON list of symbols or ccxt's markets)")
    return report
