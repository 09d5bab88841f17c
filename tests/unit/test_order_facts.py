"""What the guardrails read of an order, exchange by exchange: symbol, side, order type, limit price,
size and notional, from the recorded request shapes of tests/vectors/orders/<exchange>.json (each
with its source). An order whose price or side cannot be read must come out unread (None), never
guessed: the guardrails then refuse it on a key that needs them (fail closed)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agent.exchanges import EXCHANGES, exchange_for
from agent.rules import inspect
from support.vectors import request_of

ORDERS = Path(__file__).resolve().parents[1] / "vectors" / "orders"


def _cases():
    for path in sorted(ORDERS.glob("*.json")):
        data = json.loads(path.read_text())
        assert data["_source"]
        for case in data["cases"]:
            yield pytest.param(path.stem, case, id=f"{path.stem}-{case['name']}")


def _number(text):
    return None if text is None else Decimal(text)


@pytest.mark.parametrize("exchange, case", list(_cases()))
def test_each_recorded_order_reads_as_the_exchange_reads_it(exchange: str, case: dict):
    assert case["source"]
    facts = inspect(exchange_for(exchange), request_of(case["request"]).validated())
    got = [{"symbol": o.symbol, "side": o.side, "order_type": o.order_type, "price": o.price,
            "quantity": o.quantity, "quote_quantity": o.quote_quantity, "notional": o.notional} for o in facts.orders]
    want = [{**{k: _number(v) if k in ("price", "quantity", "quote_quantity", "notional") else v
                for k, v in o.items() if k != "base_sized"}} for o in case["orders"]]
    assert got == want
    # Amends of the price only (the band reads their new price): none where the case records none.
    amends = [{"symbol": a.symbol, "side": a.side, "price": a.price} for a in facts.amends]
    assert amends == [{**a, "price": _number(a["price"])} for a in case.get("amends", [])]
    for order, expected in zip(facts.orders, case["orders"]):
        if "base_sized" in expected:  # a market order by quantity is priced by the ticker only when base-sized
            assert order.base_sized is expected["base_sized"]


def test_every_exchange_family_with_orders_has_recorded_shapes():
    # One file per family (its first id); a new family must bring its shapes.
    families = {record.rules.read_orders.__module__.split(".")[2] for record in EXCHANGES.values()}
    assert families <= {path.stem for path in ORDERS.glob("*.json")}
