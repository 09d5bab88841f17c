"""Guardrails over time (issue 17), against the real agent with two workers sharing one state dir:
the kill switch, notional budgets and order rates. Every refusal names its rule, is audited and
alerted; what stays inside the limits is signed unchanged.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from decimal import Decimal

import grpc
import pytest

from signing_agent_client._proto import signer_pb2
from agent.budgets import Ledgers
from agent.limits import Budget
from agent.workers import worker_socket
from support.deploy import Env, make_env, run_cli, start_agent, write_bots
from support.exchange_server import ExchangeServer
from support.leaks import new_secret, register_secret
from support.tickers import Tickers
from support.agent_calls import Receiver, read_audit, refused, sign_at

pytestmark = pytest.mark.e2e

ALICE = register_secret(f"sa1_alice_{secrets.token_urlsafe(24)}")
BOB = register_secret(f"sa1_bob_{secrets.token_urlsafe(24)}")

BN_ENDPOINTS = ('endpoints = ["GET /api/v3/account", "POST /api/v3/order", "DELETE /api/v3/order", '
                '"POST /api/v3/order/cancelReplace", "GET /api/v3/openOrders"]')
POLICY = f"""
[bots.alice]
keys = ["bn-freeze", "bn-other", "kc-freeze", "bn-budget", "bn-sym", "bn-rate", "bn-race"]

[bots.bob]
keys = ["bn-bob-1", "bn-bob-2"]
max_notional = {{ "1h" = "3000" }}

[keys.bn-freeze]
{BN_ENDPOINTS}

[keys.bn-other]
{BN_ENDPOINTS}

[keys.kc-freeze]
endpoints = ["POST /api/v1/orders", "DELETE /api/v1/orders/*", "GET /api/v1/accounts"]

[keys.bn-budget]
{BN_ENDPOINTS}
symbols = ["BTCUSDT", "ETHUSDT"]
max_notional = {{ "1m" = "2000", "1h" = "20000" }}

[keys.bn-sym]
{BN_ENDPOINTS}
max_notional_per_symbol = {{ "*" = {{ "1h" = "1000" }}, ETHUSDT = {{ "1h" = "300" }} }}

[keys.bn-rate]
{BN_ENDPOINTS}
max_orders_per_minute = 5
max_orders_per_minute_per_symbol = {{ "*" = 3 }}

[keys.bn-race]
{BN_ENDPOINTS}
max_notional = {{ "1h" = "2000" }}

[keys.bn-bob-1]
{BN_ENDPOINTS}

[keys.bn-bob-2]
{BN_ENDPOINTS}
"""


def order(symbol: str = "BTCUSDT", quantity: str = "0.01", price: str | None = "50000", side: str = "BUY",
          **extra: str) -> tuple[tuple[str, str], ...]:
    fields = [("symbol", symbol), ("side", side), ("type", "LIMIT" if price else "MARKET"), ("quantity", quantity)]
    if price:
        fields += [("timeInForce", "GTC"), ("price", price)]
    return (*fields, *extra.items())


class Workers:
    def __init__(self, env: Env, receiver: Receiver) -> None:
        self.env, self.receiver = env, receiver
        # Market orders under a budget are priced by Binance's ticker: the local exchange serves it.
        self.exchange = ExchangeServer()
        self.tickers = Tickers(self.exchange, "binance")
        self.config = env.write_config("gt", extra=f'[alerts]\nwebhook = "{receiver.url}"\n' + self.tickers.config())
        self.audit = env.root / "state" / "audit.jsonl"
        self.state = env.root / "state"

    def targets(self) -> list[str]:
        return [f"unix://{self.agent.socket}", f"unix://{worker_socket(self.agent.socket, 1)}"]

    def call(self, key: str, method: str, path: str, body=(), *, worker: int = 0, token: str = ALICE):
        msg = signer_pb2.SignRequest(key=key, method=method, path=path)
        params = [signer_pb2.Param(name=n, value=v) for n, v in body]
        if method in ("GET", "DELETE"):  # parameters in the query, as the exchanges read them there
            msg.query.extend(params)
        else:
            msg.fields.items.extend(params)
        return sign_at(self.targets()[worker], msg, token)

    def cli(self, *args: str):
        return run_cli(self.env, *args, config=self.config)

    def audit_lines(self) -> list[dict]:
        return read_audit(self.audit)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory):
    env = make_env(tmp_path_factory, "gtime")
    write_bots(env.root / "bots.toml", {"alice": ALICE, "bob": BOB})
    (env.root / "policy.toml").write_text(POLICY)
    d = Workers(env, Receiver())
    for label in ("bn-freeze", "bn-other", "bn-budget", "bn-sym", "bn-rate", "bn-race", "bn-bob-1", "bn-bob-2"):
        run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", f"id-{label}",
                "--type", "hmac", stdin=new_secret(64) + "\n", config=d.config, check=True)
    run_cli(env, "keys", "import", "--label", "kc-freeze", "--exchange", "kucoin", "--api-key", "id-kc",
            stdin=f"{new_secret(36)}\n{new_secret(12)}\n", config=d.config, check=True)
    d.agent = start_agent(env, d.config, "--workers", "2")
    deadline = time.monotonic() + 20
    while not worker_socket(d.agent.socket, 1).exists():
        assert time.monotonic() < deadline, "the second worker did not come up"
        time.sleep(0.05)
    yield d
    assert d.agent.stop() == 0, d.agent.log.read_text()
    d.receiver.server.shutdown()
    d.exchange.close()


def signed(result) -> None:
    code, details, reply = result
    assert code == grpc.StatusCode.OK and reply is not None, (code, details)


def used(dep: Workers, scope: str) -> dict[str, Decimal]:
    """What the agents' shared ledger says SCOPE has used, read as another process would."""
    ledgers = Ledgers(dep.state)
    try:
        return ledgers.used(scope, (Budget("1m", 60, Decimal(1)), Budget("1h", 3600, Decimal(1))), time.time())
    finally:
        ledgers.close()


def freeze_lifted(dep: Workers, worker: int) -> bool:
    """An order of a key with no limits is signed again on WORKER."""
    return dep.call("bn-other", "POST", "/api/v3/order", order(), worker=worker)[0] == grpc.StatusCode.OK


def until(predicate, what: str, timeout: float = 1.0) -> None:
    """The README promises 'within a second' (the state dir is polled every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# -- the kill switch ------------------------------------------------------------------------------


def test_freeze_a_key_stops_orders_on_every_worker_and_keeps_reads_and_cancels(dep: Workers):
    for worker in (0, 1):
        signed(dep.call("bn-freeze", "POST", "/api/v3/order", order(), worker=worker))
    done = dep.cli("freeze", "--key", "bn-freeze", "--reason", "drain suspected")
    assert done.returncode == 0, done.stderr
    assert "unfreeze --key bn-freeze" in done.stdout
    for worker in (0, 1):
        until(lambda: dep.call("bn-freeze", "POST", "/api/v3/order", order(), worker=worker)[0]
              == grpc.StatusCode.PERMISSION_DENIED, f"worker {worker} still signs orders a second after the freeze")
        details = refused(dep.call("bn-freeze", "POST", "/api/v3/order", order(), worker=worker),
                          grpc.StatusCode.PERMISSION_DENIED, "frozen")
        # Who froze it, when, why, and how to lift it.
        assert "frozen by" in details and "drain suspected" in details and "unfreeze --key bn-freeze" in details
        # Reads and cancels stay signed, so a person can see and flatten positions.
        signed(dep.call("bn-freeze", "GET", "/api/v3/account", worker=worker))
        signed(dep.call("bn-freeze", "GET", "/api/v3/openOrders", (("symbol", "BTCUSDT"),), worker=worker))
        signed(dep.call("bn-freeze", "DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("orderId", "42")),
                        worker=worker))
        # A cancel that places a new order is an order.
        refused(dep.call("bn-freeze", "POST", "/api/v3/order/cancelReplace",
                         order(cancelReplaceMode="STOP_ON_FAILURE", cancelOrderId="42"), worker=worker),
                grpc.StatusCode.PERMISSION_DENIED, "frozen")
    signed(dep.call("bn-other", "POST", "/api/v3/order", order()))  # another key is not frozen
    status = dep.cli("status", "--json")
    entries = json.loads(status.stdout)["frozen"]["entries"]
    assert [(e["scope"], e["name"], e["reason"]) for e in entries] == [("key", "bn-freeze", "drain suspected")]
    assert "frozen:  key bn-freeze" in dep.cli("status").stdout
    # Audited (the operator's action, and each refusal) and alerted (the freeze, and the refusals).
    lines = dep.audit_lines()
    assert any(line["event"] == "freeze" and line["name"] == "bn-freeze" and line["operator"] for line in lines)
    assert any(line["event"] == "sign" and line.get("rule") == "frozen" and line["decision"] == "refused"
               for line in lines)
    dep.receiver.wait_for(lambda a: a["kind"] == "freeze" and a.get("name") == "bn-freeze")
    dep.receiver.wait_for(lambda a: a["kind"] == "refusal" and a.get("rule") == "frozen")

    done = dep.cli("unfreeze", "--key", "bn-freeze")
    assert done.returncode == 0, done.stderr
    for worker in (0, 1):
        until(lambda: dep.call("bn-freeze", "POST", "/api/v3/order", order(), worker=worker)[0] == grpc.StatusCode.OK,
              f"worker {worker} still refuses a second after the unfreeze")
    assert any(line["event"] == "unfreeze" for line in dep.audit_lines())
    dep.receiver.wait_for(lambda a: a["kind"] == "unfreeze" and a.get("name") == "bn-freeze")
    again = dep.cli("unfreeze", "--key", "bn-freeze")
    assert again.returncode == 1 and "is not frozen" in again.stderr


def test_freeze_all_and_freeze_a_bot(dep: Workers):
    assert dep.cli("freeze", "--all").returncode == 0
    try:
        kc_order = (("clientOid", "c1"), ("side", "buy"), ("symbol", "BTC-USDT"), ("type", "limit"),
                    ("price", "50000"), ("size", "0.01"))
        for worker in (0, 1):
            until(lambda: dep.call("kc-freeze", "POST", "/api/v1/orders", kc_order, worker=worker)[0]
                  == grpc.StatusCode.PERMISSION_DENIED, f"freeze --all not in force on worker {worker}")
        details = refused(dep.call("bn-other", "POST", "/api/v3/order", order()), grpc.StatusCode.PERMISSION_DENIED,
                          "frozen")
        assert "every key frozen" in details and "unfreeze --all" in details
        signed(dep.call("kc-freeze", "DELETE", "/api/v1/orders/5c35c02703aa673ceec2a168", worker=1))
        signed(dep.call("kc-freeze", "GET", "/api/v1/accounts", worker=0))
    finally:
        assert dep.cli("unfreeze", "--all").returncode == 0
    for worker in (0, 1):
        until(lambda: dep.call("bn-other", "POST", "/api/v3/order", order(), worker=worker)[0] == grpc.StatusCode.OK,
              "unfreeze --all")

    assert dep.cli("freeze", "--bot", "bob").returncode == 0
    try:
        for worker in (0, 1):
            until(lambda: dep.call("bn-bob-1", "POST", "/api/v3/order", order(quantity="0.001"), token=BOB,
                                   worker=worker)[0] == grpc.StatusCode.PERMISSION_DENIED, "freeze --bot not in force")
        assert "bot 'bob' frozen" in refused(dep.call("bn-bob-2", "POST", "/api/v3/order", order(), token=BOB,
                                                      worker=1), grpc.StatusCode.PERMISSION_DENIED, "frozen")
        signed(dep.call("bn-other", "POST", "/api/v3/order", order()))  # alice is not frozen
    finally:
        assert dep.cli("unfreeze", "--bot", "bob").returncode == 0
    for worker in (0, 1):
        until(lambda: dep.call("bn-bob-1", "GET", "/api/v3/account", token=BOB, worker=worker)[0] == grpc.StatusCode.OK
              and freeze_lifted(dep, worker), "unfreeze --bot")


def test_a_damaged_freeze_file_freezes_everything(dep: Workers):
    (dep.state / "freeze.json").write_text("{not json")
    try:
        for worker in (0, 1):
            until(lambda: dep.call("bn-other", "POST", "/api/v3/order", order(), worker=worker)[0]
                  == grpc.StatusCode.PERMISSION_DENIED, "a damaged freeze file must fail closed")
        assert "unreadable" in refused(dep.call("bn-other", "POST", "/api/v3/order", order(), worker=1),
                                       grpc.StatusCode.PERMISSION_DENIED, "frozen")
        signed(dep.call("bn-other", "GET", "/api/v3/account"))
    finally:
        assert dep.cli("unfreeze", "--all").returncode == 0
    for worker in (0, 1):
        until(lambda: dep.call("bn-other", "POST", "/api/v3/order", order(), worker=worker)[0] == grpc.StatusCode.OK,
              "repaired")


# -- notional budgets -----------------------------------------------------------------------------


def test_a_notional_budget_holds_across_workers_and_names_its_window(dep: Workers):
    # 0.01 BTC at 50000 = 500 USDT: four fit in the 1m budget of 2000, alternating workers.
    for i in range(4):
        signed(dep.call("bn-budget", "POST", "/api/v3/order", order(), worker=i % 2))
    details = refused(dep.call("bn-budget", "POST", "/api/v3/order", order(quantity="0.00002"), worker=1),
                      grpc.StatusCode.PERMISSION_DENIED, "notional-budget")
    assert "1m notional budget of 2000" in details and "used 2000" in details and "adds 1" in details
    # A refusal by any rule spends nothing: an over-budget order refused, then a request refused by
    # the symbol rule, leave the ledger as it was (checked below by the 1h window's use).
    refused(dep.call("bn-budget", "POST", "/api/v3/order", order(symbol="SOLUSDT", quantity="1", price="1")),
            grpc.StatusCode.PERMISSION_DENIED, "symbol")
    assert used(dep, "key:bn-budget") == {"1m": Decimal("2000"), "1h": Decimal("2000")}
    # Reads and cancels are not orders: never counted, never refused by a budget.
    signed(dep.call("bn-budget", "GET", "/api/v3/account"))
    signed(dep.call("bn-budget", "DELETE", "/api/v3/order", (("symbol", "BTCUSDT"), ("orderId", "1"))))
    lines = [line for line in dep.audit_lines() if line.get("key") == "bn-budget" and line["event"] == "sign"]
    assert [line["rule"] for line in lines if line["decision"] == "refused"] == ["notional-budget", "symbol"]
    dep.receiver.wait_for(lambda a: a.get("rule") == "notional-budget" and a.get("key") == "bn-budget")


def test_a_budget_prices_market_orders_by_the_ticker_and_refuses_what_it_cannot_count(dep: Workers):
    # A market order by quantity counts at the best ask of Binance's own ticker: 0.01 x 3010 = 30.1,
    # here over the 1m budget already spent by the test above.
    dep.tickers.set("binance", "ETHUSDT", price="3000", quote_volume="1", bid="2990", ask="3010")
    details = refused(dep.call("bn-budget", "POST", "/api/v3/order", order(symbol="ETHUSDT", price=None)),
                      grpc.StatusCode.PERMISSION_DENIED, "notional-budget")
    assert "1m notional budget" in details and "adds 30.1" in details
    # Without a fresh ticker it cannot be counted: refused, saying what to send (fail closed).
    details = refused(dep.call("bn-budget", "POST", "/api/v3/order", order(symbol="BTCUSDT", price=None)),
                      grpc.StatusCode.PERMISSION_DENIED, "notional-budget")
    assert "no fresh binance ticker for BTCUSDT" in details and "send a limit price" in details
    # A stop-loss becomes a market order later, at a price nobody knows now: refused, naming what is unread.
    stop = (("symbol", "ETHUSDT"), ("side", "SELL"), ("type", "STOP_LOSS"), ("quantity", "1"), ("stopPrice", "2000"))
    details = refused(dep.call("bn-budget", "POST", "/api/v3/order", stop), grpc.StatusCode.PERMISSION_DENIED,
                      "notional-budget")
    assert "limit price and order type could not be read" in details
    # The same order sized in the quote asset is counted (and here over the 1m budget already spent).
    market_quote = (("symbol", "ETHUSDT"), ("side", "BUY"), ("type", "MARKET"), ("quoteOrderQty", "10"))
    assert "1m notional budget" in refused(dep.call("bn-budget", "POST", "/api/v3/order", market_quote),
                                           grpc.StatusCode.PERMISSION_DENIED, "notional-budget")


def test_a_budget_is_exact_under_concurrent_workers(dep: Workers):
    # 40 orders of 100 USDT race over both workers against a 2000 budget: exactly 20 are signed.
    results: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for _ in range(20):
            code = dep.call("bn-race", "POST", "/api/v3/order", order(quantity="0.002"), worker=worker)[0]
            with lock:
                results.append(code)

    threads = [threading.Thread(target=client, args=(w,)) for w in (0, 1, 0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count(grpc.StatusCode.OK) == 20, results
    assert results.count(grpc.StatusCode.PERMISSION_DENIED) == 60
    assert used(dep, "key:bn-race")["1h"] == Decimal("2000.000")


def test_a_bot_budget_counts_every_key_of_the_bot(dep: Workers):
    # Bob's 1h budget of 3000 over his two keys. The freeze test's probes may have spent some: top the
    # use up to exactly 1000 first, then 1000 per order (0.02 x 50000), alternating keys and workers.
    before = used(dep, "bot:bob")["1h"]
    assert before < 1000
    if before:
        signed(dep.call("bn-bob-2", "POST", "/api/v3/order", order(quantity=str((1000 - before) / 50000)),
                        token=BOB))
    else:
        signed(dep.call("bn-bob-2", "POST", "/api/v3/order", order(quantity="0.02"), token=BOB))
    signed(dep.call("bn-bob-1", "POST", "/api/v3/order", order(quantity="0.02"), token=BOB))
    signed(dep.call("bn-bob-2", "POST", "/api/v3/order", order(quantity="0.02"), token=BOB, worker=1))
    details = refused(dep.call("bn-bob-1", "POST", "/api/v3/order", order(quantity="0.00002"), token=BOB,
                               worker=1), grpc.StatusCode.PERMISSION_DENIED, "notional-budget")
    assert "bot 'bob' has used 3000 of its 1h notional budget of 3000; this request adds 1" in details


def test_a_per_symbol_budget_counts_each_symbol_on_its_own(dep: Workers):
    signed(dep.call("bn-sym", "POST", "/api/v3/order", order(symbol="ETHUSDT", quantity="0.1", price="3000")))
    details = refused(dep.call("bn-sym", "POST", "/api/v3/order", order(symbol="ETHUSDT", quantity="0.01",
                                                                        price="3000")),
                      grpc.StatusCode.PERMISSION_DENIED, "notional-budget")
    assert "on ETHUSDT has used 300 of its 1h notional budget of 300" in details
    signed(dep.call("bn-sym", "POST", "/api/v3/order", order(quantity="0.02")))  # BTCUSDT: 1000 of its own


# -- order rate -----------------------------------------------------------------------------------


def test_order_rate_per_symbol_and_per_key(dep: Workers):
    for i in range(3):
        signed(dep.call("bn-rate", "POST", "/api/v3/order", order(quantity="0.001"), worker=i % 2))
    details = refused(dep.call("bn-rate", "POST", "/api/v3/order", order(quantity="0.001"), worker=1),
                      grpc.StatusCode.RESOURCE_EXHAUSTED, "order-rate")
    assert "on BTCUSDT is over its 3 orders per minute" in details
    for _ in range(2):  # another symbol has its own 3, but the key as a whole has 5
        signed(dep.call("bn-rate", "POST", "/api/v3/order", order(symbol="ETHUSDT", quantity="0.01", price="3000")))
    assert "key 'bn-rate' is over its 5 orders per minute" in refused(
        dep.call("bn-rate", "POST", "/api/v3/order", order(symbol="SOLUSDT", quantity="1", price="100")),
        grpc.StatusCode.RESOURCE_EXHAUSTED, "order-rate")
    signed(dep.call("bn-rate", "GET", "/api/v3/account"))  # reads are not orders
    dep.receiver.wait_for(lambda a: a["kind"] == "rate-limit" and a.get("rule") == "order-rate")
