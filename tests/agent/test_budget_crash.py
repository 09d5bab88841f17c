"""Notional budgets survive a process killed mid-flow (agent.budgets' journal): SIGKILL at any point leaves a
readable ledger in which every order that was signed is counted (at most the one in flight more, which errs
towards refusing). A power loss is what `[state] sync_budgets` covers; it cannot be tested here."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest

from agent.budgets import Ledgers
from agent.limits import Budget
from support.deploy import PERMISSIVE_POLICY, ROOT, make_env, run_cli, start_agent
from support.leaks import new_secret

HOUR = Budget("1h", 3600, Decimal(10**9))

WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from decimal import Decimal
import agent.budgets
from agent.budgets import Charge, Ledgers
from agent.limits import Budget
agent.budgets.COMPACT_BYTES = 3_000   # compactions every few dozen charges: a kill lands in one sooner or later
ledgers = Ledgers(__import__("pathlib").Path({state!r}))
budgets = (Budget("1m", 60, Decimal(10**9)), Budget("1h", 3600, Decimal(10**9)))
while True:
    assert ledgers.charge([Charge("key:k", "k", budgets, Decimal("0.001")),
                           Charge("bot:b", "b", budgets[1:], Decimal("0.001"))], time.time()) is None
    print("charged", flush=True)   # only after charge() returned: this one must be counted
"""


def test_a_writer_killed_at_any_point_leaves_every_returned_charge_counted(tmp_path):
    state = tmp_path / "state"
    script = WRITER.format(root=str(ROOT), state=str(state))
    returned = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        target = 150 + 37 * round_  # a different point in the compaction cycle each time
        for _ in range(target):
            assert proc.stdout.readline() == "charged\n"
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate(timeout=30)[0]
        returned += target + rest.count("charged\n")
        ledgers = Ledgers(state)
        try:
            used = ledgers.used("key:k", (HOUR,), time.time())["1h"]
            bot = ledgers.used("bot:b", (HOUR,), time.time())["1h"]
        finally:
            ledgers.close()
        # Every returned charge counted, plus at most the one in flight (appended, killed before it printed).
        assert returned * Decimal("0.001") <= used <= (returned + 1) * Decimal("0.001")
        assert bot == used  # both scopes of one charge are one line: never one without the other
        returned = int(used / Decimal("0.001"))  # the in-flight one, if written, counts from now on


@pytest.mark.e2e
def test_an_agent_killed_while_signing_orders_has_counted_every_signed_one(tmp_path_factory):
    from signing_agent_client.client import SignerClient

    env = make_env(tmp_path_factory, "budget-crash")
    (env.root / "policy.toml").write_text(PERMISSIVE_POLICY + '\n[keys.bn-crash]\nendpoints = ["POST /api/v3/order"]\n'
                                                              'max_notional = { "1h" = "1000000000" }\n')
    run_cli(env, "keys", "import", "--label", "bn-crash", "--exchange", "binance", "--api-key", "AKID-crash",
            stdin=new_secret(64) + "\n", check=True)
    agent = start_agent(env, env.config)
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
             "price": "50000"}  # 50 each
    signed = 0
    stop = threading.Event()

    def trade() -> None:
        nonlocal signed
        with SignerClient(agent.target) as client:
            while not stop.is_set():
                try:
                    client.sign("bn-crash", "POST", "/api/v3/order", body=order)
                except Exception:  # noqa: BLE001 - the agent is gone: what it signed is what counts
                    return
                signed += 1

    thread = threading.Thread(target=trade)
    thread.start()
    deadline = time.monotonic() + 30
    while signed < 100:
        assert time.monotonic() < deadline and thread.is_alive(), "the agent signed too few orders"
        time.sleep(0.01)
    agent.stop(signal.SIGKILL)
    stop.set()
    thread.join(timeout=30)
    ledgers = Ledgers(env.root / "state")
    try:
        used = ledgers.used("key:bn-crash", (HOUR,), time.time())["1h"]
    finally:
        ledgers.close()
    assert signed * 50 <= used <= (signed + 1) * 50, (signed, used)
    # and a restarted agent goes on from there, on the same journal
    again = start_agent(env, env.config)
    try:
        with SignerClient(again.target) as client:
            client.sign("bn-crash", "POST", "/api/v3/order", body=order)
    finally:
        assert again.stop() == 0, again.log.read_text()
    ledgers = Ledgers(env.root / "state")
    try:
        assert ledgers.used("key:bn-crash", (HOUR,), time.time())["1h"] == used + 50
    finally:
        ledgers.close()
