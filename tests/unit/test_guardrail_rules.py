"""The guardrails' pure parts and their state file, without an agent: what a freeze lets through on
each kind of exchange, how a notional is read, the ledger's windows and Decimal arithmetic, and the
policy settings' errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agent import freeze
from agent.budgets import Charge, LedgerDamaged, Ledgers
from agent.exchanges import exchange_for
from agent.limits import Budget
from agent.policy import PolicyError, parse_policy
from agent.rules import facts_of
from agent.rules.facts import OrderFacts
from agent.rules.view import view
from signing_agent_client.request import RawBody, UnsignedRequest


def allows(exchange: str, method: str, path: str, query=(), body=None) -> bool:
    v = view(exchange_for(exchange), UnsignedRequest(method, path, query=query, body=body).validated())
    return freeze.frozen_allows(v, facts_of(v))


@pytest.mark.parametrize("exchange, method, path, query, body", [
    ("binance", "GET", "/api/v3/account", (), None),
    ("binance", "DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("orderId", "1")), None),
    ("binance", "DELETE", "/api/v3/openOrders", (("symbol", "BTCUSDT"),), None),
    ("kucoin", "DELETE", "/api/v1/orders/5c35c02703aa673ceec2a168", (), None),
    ("okx", "POST", "/api/v5/trade/cancel-order", (), RawBody('{"instId":"BTC-USDT","ordId":"1"}')),
    ("kraken", "POST", "/0/private/CancelOrder", (), (("txid", "OABC"),)),
    ("kraken", "POST", "/0/private/Balance", (), ()),
    ("kraken", "POST", "/0/private/OpenOrders", (), ()),
    ("kraken", "POST", "/0/private/QueryOrders", (), (("txid", "OABC"),)),
    ("gemini", "POST", "/v1/mytrades", (), RawBody('{"request":"/v1/mytrades","nonce":"1"}')),
    ("cryptocom", "POST", "/exchange/v1/private/get-open-orders", (), RawBody('{"params":{}}')),
    ("deribit", "GET", "/api/v2/private/cancel", (("order_id", "1"),), None),
    ("deribit", "GET", "/api/v2/private/get_positions", (("currency", "BTC"),), None),
])
def test_a_freeze_lets_reads_and_cancels_through(exchange, method, path, query, body):
    assert allows(exchange, method, path, query, body)


@pytest.mark.parametrize("exchange, method, path, query, body", [
    # New orders, on every kind of exchange.
    ("binance", "POST", "/api/v3/order", (), (("symbol", "BTCUSDT"), ("side", "BUY"), ("quantity", "1"))),
    ("kraken", "POST", "/0/private/AddOrder", (), (("pair", "XBTUSD"), ("type", "buy"), ("volume", "1"))),
    ("deribit", "GET", "/api/v2/private/buy", (("instrument_name", "BTC-PERPETUAL"), ("amount", "10")), None),
    # Amends of the price only carry no size, so the rules report no order: a freeze still stops them.
    ("okx", "POST", "/api/v5/trade/amend-order", (), RawBody('{"instId":"BTC-USDT","ordId":"1","newPx":"99999"}')),
    ("deribit", "GET", "/api/v2/private/edit", (("order_id", "1"), ("price", "99999")), None),
    ("kraken", "POST", "/0/private/EditOrder", (), (("txid", "OABC"), ("price", "99999"))),
    # Cancel-and-replace places an order; so does a "cancel" path carrying order parameters.
    ("binance", "POST", "/api/v3/order/cancelReplace", (),
     (("symbol", "BTCUSDT"), ("side", "BUY"), ("quantity", "1"), ("cancelOrderId", "1"))),
    # Anything else that writes (not a read, not a cancel) is refused: fail closed.
    ("okx", "POST", "/api/v5/account/set-leverage", (), RawBody('{"instId":"BTC-USDT-SWAP","lever":"5"}')),
])
def test_a_freeze_stops_orders_amends_and_other_writes(exchange, method, path, query, body):
    assert not allows(exchange, method, path, query, body)


def test_a_freeze_covers_all_then_the_key_then_the_bot(tmp_path: Path):
    assert freeze.read(tmp_path).find(bot="b", key="k") is None
    entry, new = freeze.freeze(tmp_path, "bot", "b", by="ops", reason="why")
    assert new and freeze.read(tmp_path).find(bot="b", key="other") == entry
    assert freeze.read(tmp_path).find(bot="c", key="k") is None
    assert freeze.freeze(tmp_path, "bot", "b", by="someone else") == (entry, False)  # the first freeze stays
    freeze.freeze(tmp_path, "all", "", by="ops")
    assert freeze.read(tmp_path).find(bot="c", key="k").scope == "all"
    assert freeze.unfreeze(tmp_path, "all", "").scope == "all"
    assert freeze.unfreeze(tmp_path, "all", "") is None
    assert freeze.unfreeze(tmp_path, "bot", "b") == entry
    assert freeze.read(tmp_path).entries == ()
    assert (tmp_path / freeze.FILE).stat().st_mode & 0o077 == 0


def test_a_damaged_freeze_file_freezes_everything_until_unfreeze_all(tmp_path: Path):
    (tmp_path / freeze.FILE).write_text('{"freezes": [{"scope": "planet", "name": "", "by": "", "at": ""}]}')
    found = freeze.read(tmp_path).find(bot="b", key="k")
    assert found is not None and "unreadable" in found.reason and found.undo() == "signing-agent unfreeze --all"
    assert freeze.unfreeze(tmp_path, "all", "") is not None
    assert freeze.read(tmp_path).find(bot="b", key="k") is None


# -- notionals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("facts, notional", [
    (OrderFacts("BTCUSDT", Decimal("0.01"), None, Decimal("50000")), Decimal("500")),
    (OrderFacts("BTCUSDT", None, Decimal("25")), Decimal("25")),  # sized in the quote asset
    (OrderFacts("BTCUSDT", Decimal("1"), None), None),  # a market order by quantity: no price
    (OrderFacts("BTCUSDT", None, None, Decimal("5")), None),  # no size at all
    # A size whose unit is unsure is given in both fields: the larger reading counts.
    (OrderFacts("X", Decimal("2"), Decimal("2"), Decimal("100")), Decimal("200")),
    (OrderFacts("X", Decimal("2"), Decimal("2"), None), None),
])
def test_an_orders_notional(facts, notional):
    assert facts.notional == notional


def test_binance_and_kucoin_readers_give_price_and_side():
    def orders(exchange, path, body):
        v = view(exchange_for(exchange), UnsignedRequest("POST", path, body=body).validated())
        return facts_of(v).orders

    (o,) = orders("binance", "/api/v3/order", (("symbol", "BTCUSDT"), ("side", "SELL"), ("quantity", "0.5"),
                                                ("price", "60000")))
    assert (o.side, o.notional) == ("sell", Decimal("30000"))
    (o,) = orders("kucoin", "/api/v1/orders", RawBody('{"symbol":"BTC-USDT","side":"buy","price":"50000",'
                                                      '"size":"0.1","type":"limit","clientOid":"1"}'))
    assert (o.side, o.notional) == ("buy", Decimal("5000"))
    # KuCoin futures count lots of an unknown multiplier: no notional from the price, only from valueQty.
    (o,) = orders("kucoinfutures", "/api/v1/orders", RawBody('{"symbol":"XBTUSDTM","side":"buy","price":"50000",'
                                                             '"size":"3","leverage":"5","clientOid":"1"}'))
    assert o.notional is None


# -- the ledger ---------------------------------------------------------------------------------------


def charge(ledgers: Ledgers, amount: str, now: float, *budgets: Budget, scope: str = "key:k"):
    return ledgers.charge([Charge(scope, "key 'k'", budgets, Decimal(amount))], now)


def test_the_ledger_is_exact_in_decimals(tmp_path: Path):
    ledgers = Ledgers(tmp_path)
    minute = Budget("1m", 60, Decimal("0.3"))
    assert charge(ledgers, "0.1", 1000.0, minute) is None
    assert charge(ledgers, "0.2", 1000.5, minute) is None  # 0.1 + 0.2 is 0.3 exactly: inside
    over = charge(ledgers, "0.0000001", 1001.0, minute)
    assert over is not None and over.used == Decimal("0.3") and over.budget == minute


def test_an_order_leaves_the_window_after_it_and_at_most_one_bucket_more(tmp_path: Path):
    ledgers = Ledgers(tmp_path)
    hour = Budget("1h", 3600, Decimal("100"))  # buckets of 60 s
    assert charge(ledgers, "100", 10_000.0, hour) is None  # in the bucket [9960, 10020)
    assert charge(ledgers, "1", 10_000.0 + 3599, hour) is not None  # still inside the hour
    assert charge(ledgers, "1", 10_000.0 + 3610, hour) is not None  # its bucket still overlaps the hour: refused
    assert charge(ledgers, "1", 10_020.0 + 3600, hour) is None  # its bucket left the hour: gone
    assert ledgers.used("key:k", (hour,), 10_020.0 + 3600) == {"1h": Decimal("1")}


def test_a_refused_charge_writes_nothing_in_any_scope(tmp_path: Path):
    ledgers = Ledgers(tmp_path)
    roomy, tight = Budget("1h", 3600, Decimal("1000")), Budget("1h", 3600, Decimal("10"))
    over = ledgers.charge([Charge("key:k", "key 'k'", (roomy,), Decimal("50")),
                           Charge("bot:b", "bot 'b'", (tight,), Decimal("50"))], 5000.0)
    assert over is not None and over.charge.scope == "bot:b"
    assert ledgers.used("key:k", (roomy,), 5000.0) == {"1h": Decimal(0)}


def test_a_damaged_journal_refuses_every_budgeted_order_naming_the_file(tmp_path: Path):
    ledgers = Ledgers(tmp_path, sync=False)
    assert charge(ledgers, "1", 1.0, Budget("1m", 60, Decimal(10))) is None
    with ledgers.path.open("ab") as journal:  # a damaged line, then a whole one after it: not a torn tail
        journal.write(b'[["key:k",60,0,"x"]]\n[["key:k",60,0,"1"]]\n')
    for scope in ("key:k", "key:other"):  # one journal: no scope can be trusted once it is damaged
        with pytest.raises(LedgerDamaged, match=f"{ledgers.path} is unreadable .*removing it forgets"):
            charge(ledgers, "1", 1.0, Budget("1m", 60, Decimal(10)), scope=scope)
    ledgers.path.unlink()  # the operator's way out: forget, and go on
    assert charge(ledgers, "1", 1.0, Budget("1m", 60, Decimal(10))) is None


def test_a_torn_last_line_was_never_charged_and_the_next_charge_cuts_it_off(tmp_path: Path):
    minute = Budget("1m", 60, Decimal(10))
    writer = Ledgers(tmp_path, sync=False)
    assert charge(writer, "4", 100.0, minute) is None
    with writer.path.open("ab") as journal:  # a process killed in the middle of its append
        journal.write(b'[["key:k",60,100,"5"')
    reader = Ledgers(tmp_path, sync=False)
    assert reader.used("key:k", (minute,), 100.0) == {"1m": Decimal(4)}
    assert charge(reader, "6", 100.0, minute) is None  # 4 + 6: the torn 5 was never spent
    assert writer.used("key:k", (minute,), 100.0) == {"1m": Decimal(10)}
    assert writer.path.read_bytes().count(b"\n") == 2 and writer.path.read_bytes().endswith(b"\n")


def test_charges_from_another_process_are_seen_and_compaction_keeps_only_live_buckets(tmp_path: Path, monkeypatch):
    import agent.budgets

    monkeypatch.setattr(agent.budgets, "COMPACT_BYTES", 2_000)
    minute, day = Budget("1m", 60, Decimal(10**6)), Budget("24h", 86400, Decimal(10**6))
    a, b = Ledgers(tmp_path), Ledgers(tmp_path)
    for i in range(200):  # one bucket of the minute a second, alternating writers: several compactions
        assert charge(a if i % 2 else b, "0.5", 1000.0 + i, minute, day) is None
    entries = [e for line in a.path.read_text().splitlines() for e in json.loads(line)]
    minute_buckets = [bucket for _, seconds, bucket, _ in entries if seconds == 60]
    assert len(entries) < 400 and min(minute_buckets) > 1010  # compacted: the first buckets, out of the minute, are gone
    for ledgers in (a, b, Ledgers(tmp_path)):
        # the minute holds the last 61 buckets (one more than the window, as it errs), the day everything
        assert ledgers.used("key:k", (minute, day), 1199.0) == {"1m": Decimal("30.5"), "24h": Decimal(100)}


def test_an_earlier_versions_ledger_files_become_the_journal(tmp_path: Path):
    hour = Budget("1h", 3600, Decimal(100))
    (tmp_path / "budgets").mkdir()
    (tmp_path / "budgets" / "0a1b.json").write_text('{"scope":"key:k","windows":{"3600":{"166":"40.5"}}}')
    ledgers = Ledgers(tmp_path)
    assert ledgers.used("key:k", (hour,), 10_000.0) == {"1h": Decimal("40.5")}
    assert not list((tmp_path / "budgets").glob("*.json"))
    over = charge(ledgers, "60", 10_000.0, hour)
    assert over is not None and over.used == Decimal("40.5")


def test_an_unreadable_earlier_ledger_refuses_budgeted_orders_and_is_kept(tmp_path: Path):
    (tmp_path / "budgets").mkdir()
    old = tmp_path / "budgets" / "0a1b.json"
    old.write_text("{")
    ledgers = Ledgers(tmp_path)
    with pytest.raises(LedgerDamaged, match=f"{old} .*unreadable"):
        charge(ledgers, "1", 1.0, Budget("1m", 60, Decimal(10)))
    assert old.exists() and not ledgers.path.exists()


# -- the settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, message", [
    ('max_notional = { "1y" = "10" }', "write <n>s, <n>m, <n>h or <n>d"),
    ('max_notional = { "1m" = "0" }', "positive decimal string"),
    ('max_notional = { "1m" = 10 }', "must be a decimal string"),
    ('max_notional = { "60s" = "1", "1m" = "2" }', "twice"),
    ("max_notional = {}", "at least one window"),
    ("max_orders_per_minute = 0", "max_orders_per_minute must be an integer from 1"),
    ('max_orders_per_minute_per_symbol = { "*" = "3" }', "must be an integer from 1 to 100000"),
    ('max_notional_per_symbol = { BTCUSDT = { "1d" = "x" } }', "positive decimal string"),
])
def test_bad_guardrail_settings_are_refused_with_the_fix(setting: str, message: str):
    with pytest.raises(PolicyError, match=message):
        parse_policy(f"[keys.k]\nendpoints = []\n{setting}\n".encode())


# -- the templates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", ["binance", "binanceusdm", "kucoin", "okx", "kraken", "deribit", "kucoinfutures"])
def test_templates_propose_the_guardrails(exchange: str):
    from agent.policy_templates import default_policy

    text = default_policy(exchange, "k")
    limits = parse_policy(text.encode()).keys["k"].limits
    assert limits.max_orders_per_minute == 120  # on by default: no trading bot needs more
    assert '# max_notional = { "1m" = "2000"' in text
    band = '# price_band_pct = "2"' in text
    assert band == (exchange in ("binance", "binanceusdm", "kucoin", "okx", "kraken"))  # where a ticker reads prices
    floor = '# min_quote_volume_24h = "1000000"' in text
    assert floor == (exchange != "kucoinfutures")  # Deribit: the floor only (its orders' prices are unread)
    # Uncommented, the proposals are a valid policy.
    enabled = parse_policy(text.replace("# max_notional =", "max_notional =").replace(
        "# price_band_pct =", "price_band_pct =").replace("# min_quote_volume_24h =", "min_quote_volume_24h =").encode())
    assert enabled.keys["k"].limits.budgets


# -- order patterns -----------------------------------------------------------------------------------


def test_an_order_flow_that_changes_shape_is_alerted_and_audited():
    from agent.guardrails import OrderPatterns

    alerts: list[dict] = []
    audited: list[tuple[str, dict]] = []
    patterns = OrderPatterns(lambda kind, **f: alerts.append({"kind": kind, **f}),
                             lambda event, **f: audited.append((event, f)) or True)
    buy = OrderFacts("BTCUSDT", Decimal("0.01"), None, Decimal("50000"), "buy")  # 500
    for _ in range(OrderPatterns.WARM):
        patterns.note("k", "b", (buy,))
    assert alerts == []  # the usual flow, and nothing before it is known
    patterns.note("k", "b", (OrderFacts("BTCUSDT", Decimal("0.011"), None, Decimal("50000"), "buy"),))
    assert alerts == []  # a little larger is not unusual
    patterns.note("k", "b", (OrderFacts("BTCUSDT", Decimal("0.2"), None, Decimal("50000"), "buy"),))  # 10000
    assert "over 10 times the median 500" in alerts[-1]["reason"] and alerts[-1]["kind"] == "order-pattern"
    patterns.note("k", "b", (OrderFacts("BTCUSDT", Decimal("0.01"), None, Decimal("50000"), "sell"),))
    assert "a first sell after 22 orders" in alerts[-1]["reason"]
    assert [event for event, _ in audited] == ["order.pattern", "order.pattern"]
    patterns.note("other", "b", (OrderFacts("X", Decimal("1000"), None, Decimal("1"), "sell"),))
    assert len(alerts) == 2  # another key has its own flow, not warmed up yet
