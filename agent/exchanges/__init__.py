"""The exchanges: one folder per exchange family, one record per exchange, one registry.

    agent/exchanges/<family>/
        __init__.py   EXCHANGES: the family's records (agent.exchanges.record.Exchange)
        scheme.py     the bytes signed (pure; shared basis in agent/schemes/)
        rules.py      what a request is, for the policy: symbol parameters, order readers,
                      default-deny endpoints and parameters, reads, body format
        template.py   the safe starting policy's endpoints

Its ccxt bridge (ccxt without the secret) is in the bot-side package, where bots get it without the agent:
clients/python/src/signing_agent_client/ccxt_bridge/<family>.py, named for each ccxt id in its BRIDGES.

Every family folder found here is loaded at import, and every record is complete (no field has a
default) and consistent (agent.exchanges.record), or the import fails: an exchange cannot be
registered with something left unsaid, to be discovered at run time as "nothing to check". The
registry checks that ids are unique and that each ccxt id has a bridge (the agent never imports ccxt).

Adding an exchange: a folder with these four files, its bridge in the client package (its vectors and
test reader in tests/).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable

from agent.exchanges.record import Exchange, RecordError, Template
from agent.schemes.spec import Scheme, UnknownExchange


def families() -> tuple[str, ...]:
    """The family folders (packages) under agent/exchanges/."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_")))


def build(records: Iterable[object]) -> dict[str, Exchange]:
    """The registry of RECORDS; RecordError when one is not a record, an id is declared twice or a
    ccxt id has no bridge in signing_agent_client.ccxt_bridge.BRIDGES (or its module does not exist)."""
    from signing_agent_client.ccxt_bridge import BRIDGES

    registry: dict[str, Exchange] = {}
    for record in records:
        if not isinstance(record, Exchange):
            raise RecordError(f"{record!r} is not an exchange record (agent.exchanges.record.Exchange)")
        if record.id in registry:
            raise RecordError(f"exchange {record.id!r} is declared twice")
        if record.ccxt_id is not None and not _module_exists(
                f"signing_agent_client.ccxt_bridge.{BRIDGES.get(record.ccxt_id, '-')}"):
            raise RecordError(f"exchange {record.id!r}: ccxt's {record.ccxt_id!r} has no bridge in "
                              "signing_agent_client.ccxt_bridge.BRIDGES")
        registry[record.id] = record
    return registry


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None  # finds it; does not run it
    except ModuleNotFoundError:
        return False


def _load() -> dict[str, Exchange]:
    records: list[object] = []
    for family in families():
        declared = getattr(importlib.import_module(f"{__name__}.{family}"), "EXCHANGES", None)
        if not isinstance(declared, tuple) or not declared:
            raise RecordError(f"agent/exchanges/{family}/__init__.py declares no EXCHANGES (a tuple of records)")
        records.extend(declared)
    return build(records)


EXCHANGES: dict[str, Exchange] = _load()


def exchange_for(exchange_id: str) -> Exchange:
    try:
        return EXCHANGES[exchange_id]
    except KeyError:
        raise UnknownExchange(
            f"unknown exchange {exchange_id!r}; supported: {', '.join(sorted(EXCHANGES))}"
        ) from None


def scheme_for(exchange_id: str) -> Scheme:
    return exchange_for(exchange_id).scheme


__all__ = ["EXCHANGES", "Exchange", "RecordError", "Template", "build", "exchange_for", "families", "scheme_for"]
