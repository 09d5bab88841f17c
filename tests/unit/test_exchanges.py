"""The exchange registry (agent.exchanges): one folder per family, one complete record per exchange.

A record with a field left out, or with a value that would make a check find "nothing to check"
(no symbol parameters, no order reader, an unbound path without parameter rules...), is refused
when it is built, which is at import: never at run time.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import agent.exchanges
from agent.exchanges import EXCHANGES, Exchange, RecordError, Template, build, exchange_for, families
from agent.exchanges.record import Rules
from agent.exchanges.record import required_fields
from agent.rules.forbidden import UnboundNote
from agent.schemes import UnknownExchange

ROOT = Path(__file__).resolve().parents[2]


def _fields_of(record: object) -> dict[str, object]:
    return {name: getattr(record, name) for name in required_fields(type(record))}


@pytest.mark.parametrize("record_class", [Exchange, Rules, Template])
def test_no_field_has_a_default(record_class: type):
    for field in dataclasses.fields(record_class):
        assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, field.name


@pytest.mark.parametrize("exchange_id", sorted(EXCHANGES))
def test_every_registered_exchange_has_a_complete_record(exchange_id: str):
    record = EXCHANGES[exchange_id]
    assert record.id == exchange_id and exchange_for(exchange_id) is record
    # Built again from their own fields: every one is there and passes the checks.
    assert Exchange(**_fields_of(record)) == record
    assert Rules(**_fields_of(record.rules)) == record.rules
    assert Template(**_fields_of(record.template)) == record.template
    assert record.rules.symbol_params and record.template.trading and callable(record.rules.read_orders)
    assert record.rules.path_bound or record.rules.param_rules


@pytest.mark.parametrize("record_class,missing", [(c, name) for c in (Exchange, Rules, Template)
                                                   for name in required_fields(c)])
def test_a_record_with_a_missing_field_is_refused(record_class: type, missing: str):
    okx = EXCHANGES["okx"]
    given = _fields_of({Exchange: okx, Rules: okx.rules, Template: okx.template}[record_class])
    del given[missing]
    with pytest.raises(TypeError, match=missing):
        record_class(**given)


REFUSED = {
    "symbol_params": frozenset(),  # symbol allow-lists would check nothing
    "read_orders": None,  # size caps would check nothing
    "read_amends": None,  # price bands would not see amends
    "reads": None,
    "explicit": None,
    "param_rules": None,
    "settings_rules": None,
    "path_bound": None,
    "body_format": "json",
    "json_rpc": "/api/v2/",
    "param_methods": frozenset(),
    "unbound_note": UnboundNote("{name} signs only the parameters", None),  # but the path is bound
}
REFUSED_IN_THE_RECORD = {
    "rules": None,
    "template": None,
    "key_types": ("hmac", "dsa"),
    "generated": ("rsa",),  # not among its key types
    "name": "",
    "id": "OKX",
}


@pytest.mark.parametrize("field,value", sorted(REFUSED.items()))
def test_rules_with_a_value_that_would_fail_open_are_refused(field: str, value: object):
    given = _fields_of(EXCHANGES["okx"].rules)
    given[field] = value
    with pytest.raises(RecordError, match=field):
        Rules(**given)


@pytest.mark.parametrize("field,value", sorted(REFUSED_IN_THE_RECORD.items()))
def test_a_record_with_a_wrong_value_is_refused(field: str, value: object):
    given = _fields_of(EXCHANGES["okx"])
    given[field] = value
    with pytest.raises(RecordError, match=field):
        Exchange(**given)


def test_an_unbound_path_needs_parameter_rules_and_says_why():
    given = _fields_of(EXCHANGES["okx"].rules)
    with pytest.raises(RecordError, match="unbound_note"):
        Rules(**{**given, "path_bound": False})
    note = UnboundNote("{name} signs only the parameters, so the path is not bound", None)
    with pytest.raises(RecordError, match="param_rules"):
        Rules(**{**given, "path_bound": False, "unbound_note": note, "param_rules": ()})
    assert not Rules(**{**given, "path_bound": False, "unbound_note": note}).path_bound


def test_a_template_needs_its_trading_endpoints():
    with pytest.raises(RecordError):
        Template(trading=(), settings=())
    with pytest.raises(RecordError):
        Template(trading=("/api/v5/trade/order",), settings=())
    with pytest.raises(TypeError):
        Template(trading=("POST /api/v5/trade/order",))  # type: ignore[call-arg]


def test_the_registry_refuses_duplicates_strangers_and_missing_bridges():
    okx = EXCHANGES["okx"]
    assert build([okx]) == {"okx": okx}
    with pytest.raises(RecordError, match="twice"):
        build([okx, okx])
    with pytest.raises(RecordError, match="not an exchange record"):
        build([okx, {"id": "new"}])
    with pytest.raises(RecordError, match="bridge"):
        build([dataclasses.replace(okx, ccxt_id="no_such_ccxt_class")])


def test_unknown_exchanges_are_named_with_the_supported_ones():
    with pytest.raises(UnknownExchange, match="unknown exchange 'nope'; supported: binance, "):
        exchange_for("nope")


def test_one_folder_per_family():
    folder = Path(agent.exchanges.__file__).parent
    assert set(families()) == {
        "binance", "okx", "kucoin", "bitget", "kraken", "bitfinex", "gemini", "bybit", "mexc", "coinbase",
        "bitstamp", "cryptocom", "deribit", "gate", "htx",
    }
    for family in families():
        for name in ("__init__.py", "scheme.py", "rules.py", "template.py"):
            assert (folder / family / name).is_file(), (family, name)
    # Each ccxt id's bridge is its family's module in the bot-side package, and only ccxt ids have one.
    from signing_agent_client.ccxt_bridge import BRIDGES

    for record in EXCHANGES.values():
        family = next(f for f in families() if record in getattr(agent.exchanges, f).EXCHANGES)
        if record.ccxt_id is not None:
            assert BRIDGES[record.ccxt_id] == family, record.id
    assert set(BRIDGES) == {r.ccxt_id for r in EXCHANGES.values() if r.ccxt_id is not None}
    # The per-exchange tables this registry replaced are gone, and the bridges live in the client
    # package only: one place per thing.
    old = [ROOT / "agent" / "ccxt_bridge", ROOT / "agent" / "client.py", ROOT / "agent" / "_proto",
           *(ROOT / "agent" / "exchanges" / f / "bridge.py" for f in families()),
           *(ROOT / "agent" / "schemes" / f"{f}.py" for f in families())]
    assert not any(path.exists() for path in old)


def test_the_agent_imports_no_ccxt_and_the_bridges_import_without_it():
    """The agent never imports ccxt (HTX's scheme shares its hosts with its bridge module, which
    does not import ccxt either); every bridge imports without ccxt."""
    code = (
        "import importlib, sys\n"
        "import agent.service, agent.exchanges\n"
        "assert 'ccxt' not in sys.modules\n"
        "from signing_agent_client.ccxt_bridge import BRIDGES, bridge_module\n"
        "for ccxt_id in BRIDGES: bridge_module(ccxt_id)\n"
        "assert 'ccxt' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def _exchange_ids_in_code(path: Path) -> list[str]:
    """The exchange ids written as string literals in PATH's code (docstrings aside)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in EXCHANGES
            and id(node) not in docstrings]


def test_the_shared_engines_name_no_exchange():
    """Per-exchange knowledge lives in the records: the shared code names no exchange id, so none can
    be missing from a table of its own."""
    shared = [*(ROOT / "agent" / "rules").glob("*.py"), *(ROOT / "agent" / "schemes").glob("*.py")]
    shared += [ROOT / "agent" / name for name in ("guard.py", "policy.py", "decision.py", "policy_templates.py",
                                                  "service.py", "provision.py")]
    for path in shared:
        assert not _exchange_ids_in_code(path), path
