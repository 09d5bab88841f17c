"""Several agents on one PostgreSQL: the key store, nonces, rate buckets, notional budgets and freezes they share, against a real cluster.

The cluster is a throw-away one started from the installed server binaries (tests/support/pg.py); every test has its
own database. Agents are real processes on the session's SoftHSM2 token (one HSM, several hosts).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from agent.custody import KeyExists
from agent.custody.store import PostgresKeyStore, StoreUnavailable, WrappedRecord
from agent.budgets import Charge
from agent.limits import Budget
from agent.shared_state import PostgresBuckets, PostgresLedgers, PostgresNonces
from agent.rates import SharedBuckets
from support.deploy import PERMISSIVE_POLICY, ROOT, Agent, Env, run_cli, start_agent
from support.leaks import new_secret
from support.pg import Cluster, host_config


def _record(label: str) -> WrappedRecord:
    return WrappedRecord(label=label, exchange="binance", api_key="AK", key_type="hmac", created="2026-12-05T00:00:00Z",
                         fingerprint="00" * 16, master=1, blob=b"\x01" * 72)


def test_store_rows_events_and_the_label_constraint(dsn: str):
    a, b = PostgresKeyStore(dsn), PostgresKeyStore(dsn)
    try:
        head = a.head()
        a.add(_record("k1"))
        with pytest.raises(KeyExists):  # the primary key refuses a second host's import of the same label
            b.add(_record("k1"))
        assert b.get("k1").blob == b"\x01" * 72 and b.count() == 1
        assert b.revoke("k1").label == "k1" and a.get("k1") is None and a.revoke("k1") is None
        labels, seq = b.events_since(head)
        assert labels == ["k1", "k1"] and seq > head
    finally:
        a.close()
        b.close()


NONCE_WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from agent.shared_state import PostgresNonces
store = PostgresNonces({dsn!r})
out = []
for _ in range({count}):
    out.append(store.next("kraken", "AKID-shared", int(time.time() * 1000)))
print(" ".join(map(str, out)))
"""


def test_two_processes_never_issue_the_same_nonce_and_each_sees_them_rise(dsn: str):
    PostgresNonces(dsn).close()  # the schema first, so both workers start at once
    script = NONCE_WORKER.format(root=str(ROOT), dsn=dsn, count=400)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [list(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for issued in results:
        assert len(issued) == 400 and all(x < y for x, y in zip(issued, issued[1:]))
    together = results[0] + results[1]
    assert len(set(together)) == 800


def test_the_database_refuses_to_move_a_nonce_back(dsn: str):
    store = PostgresNonces(dsn)
    try:
        first = store.next("kraken", "K", 10_000)
        assert store.next("kraken", "K", 5) == first + 1
        with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE nonces SET last = last - 100")
        assert store.next("kraken", "K", 0) == first + 2
    finally:
        store.close()


def test_rate_buckets_are_shared_by_hosts(dsn: str, tmp_path):
    hosts = [PostgresBuckets(dsn, local=SharedBuckets(tmp_path / f"h{i}" / "rates.bin")) for i in range(2)]
    try:
        # burst 6, refilled at 0.01/s: exactly 6 pass in all, whichever host they reach
        with ThreadPoolExecutor(8) as pool:
            allowed = list(pool.map(lambda i: hosts[i % 2].take("key:shared", 0.01, 6), range(40)))
        assert sum(allowed) == 6
        assert hosts[0].take("key:other", 0.01, 1) and not hosts[1].take("key:other", 0.01, 1)
    finally:
        for h in hosts:
            h.close()


def test_order_rate_takes_are_all_or_none_across_hosts(dsn: str, tmp_path):
    """Guardrails take a key's and a symbol's order buckets together (SharedBuckets.take_all): across hosts
    too, a take short on one bucket takes from none, and overlapping sets in any order never deadlock."""
    hosts = [PostgresBuckets(dsn, local=SharedBuckets(tmp_path / f"h{i}" / "rates.bin")) for i in range(2)]
    try:
        assert hosts[0].take_all([("orders:k", 0.001, 5, 3), ("orders:k:BTC", 0.001, 2, 2)]) is None
        # 2 left on orders:k, 0 on the symbol: short at index 1, and orders:k keeps its 2
        assert hosts[1].take_all([("orders:k", 0.001, 5, 1), ("orders:k:BTC", 0.001, 2, 1)]) == 1
        assert hosts[1].take_all([("orders:k", 0.001, 5, 2)]) is None
        assert hosts[0].take_all([("orders:k", 0.001, 5, 1)]) == 0
        # the same two buckets named in opposite orders from both hosts at once: every call returns
        pairs = [[("a", 50.0, 1000, 1), ("b", 50.0, 1000, 1)], [("b", 50.0, 1000, 1), ("a", 50.0, 1000, 1)]]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: hosts[i % 2].take_all(pairs[i % 2]), range(200)))
        assert results == [None] * 200
        with pytest.raises(ValueError):  # host-local audit buckets are never mixed into a shared transaction
            hosts[0].take_all([("audit:x", 1.0, 1, 1), ("orders:k", 1.0, 5, 1)])
    finally:
        for h in hosts:
            h.close()


def test_notional_ledgers_are_shared_by_hosts_exactly_and_all_or_none(dsn: str):
    """PostgresLedgers keeps agent.budgets.Ledgers' contract across hosts: concurrent charges from two hosts
    spend exactly the budget (Decimal tenths summing to it, no float), a refused charge writes nothing in any
    scope, and overlapping scopes named in opposite orders never deadlock."""
    hour = Budget("1h", 3600, Decimal("1.0"))
    minute = Budget("1m", 60, Decimal("100"))
    hosts = [PostgresLedgers(dsn) for _ in range(2)]
    try:
        key = lambda amount: Charge("key:k", "key 'k'", (hour, minute), Decimal(amount))  # noqa: E731
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: hosts[i % 2].charge([key("0.1")], time.time()), range(40)))
        assert sum(r is None for r in results) == 10  # 10 x 0.1 = 1.0 exactly; the 11th would overspend
        refusal = next(r for r in results if r is not None)
        assert refusal.budget == hour and refusal.used == Decimal("1.0")
        assert hosts[1].used("key:k", (hour, minute), 0) == {"1h": Decimal("1.0"), "1m": Decimal("1.0")}

        # All or none: the bot's budget has room, the symbol's does not; the bot is not charged either.
        bot = Charge("bot:b", "bot 'b'", (Budget("1h", 3600, Decimal("50")),), Decimal("7"))
        symbol = Charge("key:k2:symbol:BTC", "key 'k2' on BTC", (Budget("1h", 3600, Decimal("5")),), Decimal("7"))
        over = hosts[0].charge([bot, symbol], 0)
        assert over is not None and over.charge == symbol and over.used == 0
        assert hosts[1].used("bot:b", bot.budgets, 0) == {"1h": Decimal(0)}
        with psycopg.connect(dsn) as conn:  # exact in the database too: NUMERIC, summing to the budget
            rows = conn.execute("SELECT scope, window_seconds, sum(amount) FROM notional_ledgers "
                                "GROUP BY scope, window_seconds ORDER BY 2").fetchall()
        assert rows == [("key:k", 60, Decimal("1.0")), ("key:k", 3600, Decimal("1.0"))]

        big = (Budget("1h", 3600, Decimal("1e9")),)
        pairs = [[Charge("a", "a", big, Decimal(1)), Charge("b", "b", big, Decimal(1))],
                 [Charge("b", "b", big, Decimal(1)), Charge("a", "a", big, Decimal(1))]]
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda i: hosts[i % 2].charge(pairs[i % 2], 0), range(100))) == [None] * 100
        assert hosts[0].used("a", big, 0) == hosts[0].used("b", big, 0) == {"1h": Decimal(100)}
    finally:
        for h in hosts:
            h.close()


def test_notional_windows_follow_the_database_clock_and_forget_old_buckets(dsn: str):
    """Windows are the database's: a caller's NOW (a host's skewed wall clock) moves nothing. A bucket that has
    left its window stops counting and is deleted by the next charge of that scope."""
    ledgers = PostgresLedgers(dsn)
    minute = Budget("1m", 60, Decimal("10"))
    try:
        assert ledgers.charge([Charge("key:c", "key 'c'", (minute,), Decimal("6"))], now=0) is None
        assert ledgers.used("key:c", (minute,), now=10**10) == {"1m": Decimal("6")}
        with psycopg.connect(dsn, autocommit=True) as conn:  # the bucket as if written two minutes ago
            conn.execute("UPDATE notional_ledgers SET bucket = bucket - 120")
        assert ledgers.used("key:c", (minute,), now=0) == {"1m": Decimal(0)}
        assert ledgers.charge([Charge("key:c", "key 'c'", (minute,), Decimal("9"))], now=0) is None
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT amount FROM notional_ledgers").fetchall() == [(Decimal("9"),)]
    finally:
        ledgers.close()


def test_an_unreachable_database_is_unavailable_then_recovers(cluster: Cluster, dsn: str):
    store = PostgresKeyStore(dsn)
    try:
        store.add(_record("k"))
        cluster.stop()
        try:
            with pytest.raises(StoreUnavailable):
                store.get("k")
        finally:
            cluster.start()
        assert store.get("k") is not None  # a fresh connection, by itself
    finally:
        store.close()


@pytest.mark.parametrize("dsn_text, message", [
    ("host=db dbname=s user=u password=hunter2", "must not contain a password"),
    ("postgresql://u:hunter2@db/s", "must not contain a password"),
    ("postgresql://u@db/s?password=hunter2", "must not contain a password"),
    ("host=db hunter2", "is not a libpq connection string"),
])
def test_a_password_in_the_dsn_is_refused(env: Env, dsn_text: str, message: str):
    from agent.config import ConfigError, load_config

    config = env.write_config("pw", extra=f'[store]\nbackend = "postgres"\ndsn = "{dsn_text}"\n')
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(config)
    assert "hunter2" not in str(caught.value)


def test_postgres_without_a_dsn_is_refused(env: Env):
    from agent.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="needs dsn"):
        load_config(env.write_config("nodsn", extra='[store]\nbackend = "postgres"\n'))


# -- agents as hosts -------------------------------------------------------------------------------


def test_agents_on_one_database_share_keys_nonces_and_revocations(env: Env, cluster: Cluster, dsn: str, label: str):
    from signing_agent_client.client import KeyNotFoundError, SignerClient, AgentUnavailableError

    configs = [host_config(env, f"host{i}", dsn) for i in range(3)]
    init = run_cli(env, "store", "init", config=configs[0])
    assert init.returncode == 0, init.stderr
    moved = run_cli(env, "bots", "import-file", config=configs[0])  # the test bot: credentials live in the database
    assert moved.returncode == 0, moved.stderr
    secret = new_secret(64)
    import base64
    kraken_secret = base64.b64encode(secret.encode()).decode()
    from support.leaks import register_secret
    register_secret(kraken_secret)
    proc = run_cli(env, "keys", "import", "--wrapped", "--label", label, "--exchange", "kraken", "--api-key",
                   "AKID-kraken", stdin=kraken_secret + "\n", config=configs[1])
    assert proc.returncode == 0, proc.stderr
    agents = [start_agent(env, c) for c in configs]
    try:
        clients = [SignerClient(a.target) for a in agents]
        nonces: list[list[int]] = [[], [], []]
        failed: list[int] = []

        def sign(i: int) -> None:
            for n in range(60):
                if i == 2 and n == 20:
                    agents[2].proc.kill()  # a host dies mid-load; the others go on
                try:
                    got = clients[i].sign(label, "POST", "/0/private/Balance", body={})
                except AgentUnavailableError:
                    failed.append(i)
                    return
                nonces[i].append(int(re.search(r"nonce=(\d+)", got.body).group(1)))

        threads = [threading.Thread(target=sign, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert failed == [2] and len(nonces[2]) == 20
        assert len(nonces[0]) == len(nonces[1]) == 60
        for issued in nonces:
            assert all(x < y for x, y in zip(issued, issued[1:]))
        everything = nonces[0] + nonces[1] + nonces[2]
        assert len(set(everything)) == len(everything) == 140  # never the same nonce on two hosts
        with psycopg.connect(dsn) as conn:  # issued through the database, not each host's files
            (last,) = conn.execute("SELECT last FROM nonces").fetchone()
        assert last == max(everything)
        clients[2].close()
        agents[2].proc.wait(timeout=10)
        agents, clients = agents[:2], clients[:2]

        # Revoked through one host's CLI: every host refuses it within a second.
        assert run_cli(env, "keys", "revoke", "--label", label, "--yes", config=configs[0]).returncode == 0
        revoked_at = time.monotonic()
        refused = set()
        while len(refused) < 2:
            for i, client in enumerate(clients):
                try:
                    client.sign(label, "POST", "/0/private/Balance", body={})
                except KeyNotFoundError:
                    refused.add(i)
            assert time.monotonic() - revoked_at < 1.0, f"hosts {set(range(2)) - refused} still sign a revoked key"
            time.sleep(0.02)

        # The database goes away: UNAVAILABLE (not a stale signature), then the hosts recover by themselves.
        second = new_secret(64)
        kraken_second = register_secret(base64.b64encode(second.encode()).decode())
        assert run_cli(env, "keys", "import", "--wrapped", "--label", label + "b", "--exchange", "kraken",
                       "--api-key", "AKID-kraken-2", stdin=kraken_second + "\n", config=configs[0]).returncode == 0
        clients[0].sign(label + "b", "POST", "/0/private/Balance", body={})
        cluster.stop()
        try:
            with pytest.raises(AgentUnavailableError):
                clients[0].sign(label + "b", "POST", "/0/private/Balance", body={})
        finally:
            cluster.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                clients[0].sign(label + "b", "POST", "/0/private/Balance", body={})
                break
            except AgentUnavailableError:
                assert time.monotonic() < deadline, "the agent did not recover after the database returned"
                time.sleep(0.1)
        for c in clients:
            c.close()
    finally:
        for a in agents:
            assert a.stop() == 0, a.log.read_text()
    # Every host's audit chain is in the database, and one command verifies them all. host2 was killed
    # before its shipper's first tick: its lines wait in its file and ship when it comes back.
    assert start_agent(env, configs[2]).stop() == 0
    verified = run_cli(env, "audit", "verify", "--all", config=configs[0])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for i in range(3):
        assert re.search(rf"^host{i}: OK, [1-9][0-9]* lines, head [0-9a-f]{{64}}", verified.stdout, re.M), verified.stdout
    with psycopg.connect(dsn) as conn:  # one host's line edited in the database: that host's chain breaks
        edited = conn.execute(
            "UPDATE audit_lines SET line = convert_to(replace(convert_from(line, 'UTF8'), '\"ts\":\"2', '\"ts\":\"1'), "
            "'UTF8') WHERE id = (SELECT id FROM audit_lines WHERE host = 'host1' ORDER BY id OFFSET 3 LIMIT 1)")
        assert edited.rowcount == 1
    broken = run_cli(env, "audit", "verify", "--all", config=configs[0])
    assert broken.returncode == 1 and re.search(r"^host1: BROKEN", broken.stdout, re.M), broken.stdout
    assert re.search(r"^host0: OK", broken.stdout, re.M)


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}


def two_hosts(env: Env, dsn: str, label: str, key_policy: str) -> tuple[list[Path], list[Agent]]:
    """(configs, agents) of two agent hosts on one database, with the default bots and a Binance key LABEL
    under KEY_POLICY (TOML lines of its [keys.LABEL] table), imported through host A."""
    policy = env.root / f"policy-{label}.toml"
    policy.write_text(PERMISSIVE_POLICY + f"\n[keys.{label}]\n{key_policy}\n")
    configs = [host_config(env, f"{label}-{h}", dsn, policy) for h in "ab"]
    assert run_cli(env, "bots", "import-file", config=configs[0]).returncode == 0
    assert run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AKID-" + label,
                   stdin=new_secret(64) + "\n", config=configs[0]).returncode == 0
    return configs, [start_agent(env, c) for c in configs]


def test_two_agents_on_one_database_spend_a_notional_budget_exactly_once(env: Env, cluster: Cluster, dsn: str,
                                                                         label: str):
    """Concurrent orders through two agent hosts never take a key's budget past its limit in total: 2000 of
    budget, 50 an order, 60 orders sent at once through both hosts: exactly 40 are signed, each host refuses the
    rest naming the rule, and the database holds exactly 2000. Without the database, orders are not signed."""
    from signing_agent_client.client import AgentUnavailableError, RefusedError, SignerClient

    _, agents = two_hosts(env, dsn, label, 'endpoints = ["POST /api/v3/order"]\nmax_notional = { "1h" = "2000" }')
    clients = [SignerClient(a.target) for a in agents]
    try:
        def place(i: int) -> str:
            try:
                clients[i % 2].sign(label, "POST", "/api/v3/order", body=ORDER)
                return "signed"
            except RefusedError as exc:
                assert "'notional-budget'" in str(exc) and "of its 1h notional budget of 2000" in str(exc), exc
                return f"refused by host {i % 2}"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(place, range(60)))
        assert outcomes.count("signed") == 40
        assert {"refused by host 0", "refused by host 1"} <= set(outcomes)  # both hosts saw the shared budget
        with psycopg.connect(dsn) as conn:
            (spent,) = conn.execute("SELECT sum(amount) FROM notional_ledgers WHERE scope = %s",
                                    (f"key:{label}",)).fetchone()
        assert spent == Decimal("2000")
        for h in "ab":  # nothing went to the hosts' own files
            assert not list((env.root / f"state-{label}-{h}" / "budgets").glob("*.json"))
        with psycopg.connect(dsn, autocommit=True) as conn:  # room again, so only the outage can refuse
            conn.execute("DELETE FROM notional_ledgers")
        cluster.stop()  # the bot's credential outlives it by a second (agent.bots_db): the ledger is what fails
        try:
            with pytest.raises(AgentUnavailableError, match="unreachable"):
                clients[0].sign(label, "POST", "/api/v3/order", body=ORDER)
        finally:
            cluster.start()
    finally:
        for c in clients:
            c.close()
        for a in agents:
            assert a.stop() == 0, a.log.read_text()


def test_a_freeze_on_one_host_stops_orders_on_every_host_within_a_second(env: Env, dsn: str, label: str):
    """`freeze --key` run with host A's config: both hosts refuse the key's orders within a second (rule
    `frozen`, naming who froze it and how to lift it), reads are still signed; `unfreeze` run with host B's
    config: both sign orders again within a second. Nothing went to the hosts' own freeze files."""
    from signing_agent_client.client import RefusedError, SignerClient

    configs, agents = two_hosts(env, dsn, label, 'endpoints = ["POST /api/v3/order", "GET /api/v3/account"]')
    clients = [SignerClient(a.target) for a in agents]

    def order_outcome(client: SignerClient) -> str:
        try:
            client.sign(label, "POST", "/api/v3/order", body=ORDER)
            return "signed"
        except RefusedError as exc:
            assert "'frozen'" in str(exc) and f"unfreeze --key {label}" in str(exc), exc
            return "frozen"

    def on_every_host_within_a_second(wanted: str) -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(order_outcome(c) != wanted for c in clients):
            time.sleep(0.05)
        assert [order_outcome(c) for c in clients] == [wanted, wanted]

    try:
        assert [order_outcome(c) for c in clients] == ["signed", "signed"]
        froze = run_cli(env, "freeze", "--key", label, "--reason", "drain suspected", config=configs[0])
        assert froze.returncode == 0, froze.stderr
        on_every_host_within_a_second("frozen")
        for c in clients:  # a person can still see the account
            assert "signature=" in c.sign(label, "GET", "/api/v3/account").path
        again = run_cli(env, "freeze", "--key", label, config=configs[1])
        assert again.returncode == 0 and "already frozen" in again.stdout and "drain suspected" in again.stdout
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT scope, name, reason FROM freezes").fetchall()
        assert rows == [("key", label, "drain suspected")]
        shown = run_cli(env, "status", config=configs[1])
        assert f"frozen:  key {label} by " in shown.stdout, shown.stdout  # host B shows the freeze made on A
        lifted = run_cli(env, "unfreeze", "--key", label, config=configs[1])
        assert lifted.returncode == 0, lifted.stderr
        on_every_host_within_a_second("signed")
        missing = run_cli(env, "unfreeze", "--key", label, config=configs[0])
        assert missing.returncode != 0 and "is not frozen" in missing.stderr
        for h in "ab":
            assert not (env.root / f"state-{label}-{h}" / "freeze.json").exists()
    finally:
        for c in clients:
            c.close()
        for a in agents:
            assert a.stop() == 0, a.log.read_text()


def test_a_silent_freezes_table_freezes_every_key_until_it_answers(cluster: Cluster, dsn: str):
    """A brake must not be missed: while the table does not answer, every key is treated as frozen."""
    from agent.freeze_pg import STALE_SECONDS, PostgresFreezes, SharedFreezes

    writer = PostgresFreezes(dsn)
    shared = SharedFreezes(dsn)
    try:
        assert shared.current().find(bot="mm", key="k") is None
        writer.freeze("bot", "mm", by="ops")
        deadline = time.monotonic() + 1.0
        while shared.current().find(bot="mm", key="k") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shared.current().find(bot="mm", key="k").scope == "bot"
        assert shared.current().find(bot="other", key="k") is None
        cluster.stop()
        try:
            time.sleep(STALE_SECONDS + 0.5)
            frozen = shared.current().find(bot="other", key="k")
            assert frozen is not None and "has not answered" in frozen.reason
        finally:
            cluster.start()
        deadline = time.monotonic() + 5.0
        while shared.current().problem and time.monotonic() < deadline:
            time.sleep(0.1)
        assert shared.current().find(bot="other", key="k") is None  # recovered by itself
    finally:
        shared.close()
        writer.close()


def test_the_audit_shipper_follows_rotations_and_outages_and_never_ships_twice(cluster: Cluster, dsn: str, tmp_path):
    from agent.audit import AuditLog, rotate, verify
    from agent.audit_ship import AuditShipper, verify_all

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    shipper = AuditShipper(path, dsn, "h1")
    try:
        for i in range(5):
            log.append("sign", label=f"k{i}")
        assert shipper.ship_once() == 5 and shipper.ship_once() == 0
        rotate(path)  # the closing record in the old file, the continuing one in the new
        for i in range(3):
            log.append("sign", label=f"r{i}")
        assert shipper.ship_once() == 5
        cluster.stop()
        try:
            log.append("sign", label="while-down")
            assert shipper.ship_once() == 0  # nothing lost: read again once the database answers
        finally:
            cluster.start()
        log.append("sign", label="after")
        assert shipper.ship_once() == 2
    finally:
        shipper.stop()
        log.close()
    again = AuditShipper(path, dsn, "h1")  # a restart reads the file from its start: nothing twice
    again.ship_once()
    again.stop()
    (report,) = verify_all(dsn)
    assert (report.host, report.lines, report.problems) == ("h1", 12, [])
    assert report.head == verify(path).head  # the database's chain ends where the file does


def test_store_init_names_a_database_and_creates_every_table_agents_use(env: Env, dsn: str, label: str):
    bare = env.write_config("init-pg")  # no [store] table: the command names the database
    init = run_cli(env, "store", "init", "--postgres", dsn, config=bare)
    assert init.returncode == 0, init.stderr
    assert f"key store ready: postgres ({dsn})" in init.stdout
    snippet = init.stdout[init.stdout.index("[store]"):]
    assert snippet == f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\n'
    with psycopg.connect(dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"wrapped_keys", "key_events", "nonces", "rate_buckets", "notional_ledgers", "quorum_bundles",
                      "freezes"}
    # The printed [store] is all a config needs: a wrapped import lands in that database.
    config = env.write_config("init-pg-used", extra=snippet)
    run_cli(env, "keys", "import", "--wrapped", "--label", label, "--exchange", "binance", "--api-key", "AKID-i",
            stdin=new_secret() + "\n", config=config, check=True)
    assert PostgresKeyStore(dsn, create=False).get(label).master >= 1
    again = run_cli(env, "store", "init", "--postgres", dsn, config=config)  # idempotent; config names it already
    assert again.returncode == 0 and "holds a master key already" in again.stdout and "[store]" not in again.stdout


@pytest.mark.parametrize("dsn_text, code, message", [
    ("host=db dbname=s password=hunter2", 2, "--postgres must not contain a password"),
    ("dbname hunter2", 2, "--postgres is not a libpq connection string"),
    ("host=/nonexistent-socket-dir dbname=s connect_timeout=1", 4, "the key store database is unreachable"),
])
def test_store_init_refuses_a_database_it_cannot_use_with_a_clear_message(env: Env, dsn_text: str, code: int,
                                                                            message: str):
    init = run_cli(env, "store", "init", "--postgres", dsn_text, config=env.write_config("init-bad"))
    assert init.returncode == code and message in init.stderr, init.stderr
    assert "hunter2" not in init.stdout + init.stderr and "Traceback" not in init.stderr


def test_store_init_as_a_role_that_may_not_create_tables_says_so(env: Env, cluster: Cluster, dsn: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN")
    as_reader = dsn.replace("user=signing", "user=reader")
    init = run_cli(env, "store", "init", "--postgres", as_reader, config=env.write_config("init-reader"))
    assert init.returncode == 1, init.stderr
    assert "the database refused to create the store's tables (permission denied" in init.stderr
    assert "Traceback" not in init.stderr


def test_backup_of_a_postgres_store_restores_into_sqlite_and_back_over_existing_rows(env: Env, dsn: str, label: str):
    pg_config = host_config(env, "backup-pg", dsn)
    run_cli(env, "store", "init", config=pg_config, check=True)
    run_cli(env, "keys", "import", "--wrapped", "--label", label, "--exchange", "binance", "--api-key", "AKID-b",
            stdin=new_secret() + "\n", config=pg_config, check=True)
    original = PostgresKeyStore(dsn, create=False).get(label)
    out = env.root / f"{label}.json"
    run_cli(env, "store", "backup", "--out", str(out), config=pg_config, check=True)

    sqlite_config = env.write_config("backup-sqlite", extra=f'[store]\nbackend = "sqlite"\nsqlite_file = "state/{label}.db"\n')
    into_sqlite = run_cli(env, "store", "restore", str(out), config=sqlite_config)
    assert into_sqlite.returncode == 0 and "restored 1 of 1" in into_sqlite.stdout, into_sqlite.stderr

    # Back into the database, over its own row: the upsert replaces it in place and records the event.
    store = PostgresKeyStore(dsn, create=False)
    try:
        head = store.head()
        refused = run_cli(env, "store", "restore", str(out), config=pg_config)
        assert refused.returncode == 1 and "Nothing was restored" in refused.stderr
        replaced = run_cli(env, "store", "restore", "--replace", str(out), config=pg_config)
        assert replaced.returncode == 0 and "(1 replaced)" in replaced.stdout, replaced.stderr
        assert store.get(label) == original
        assert store.events_since(head)[0] == [label]
    finally:
        store.close()


def test_key_event_writers_commit_in_event_order(dsn: str):
    """A poller that has read event N must never meet event N-1 later (a revocation missed for good):
    writers draw their event number only once the writer before them has committed."""
    store = PostgresKeyStore(dsn)
    try:
        store.add(_record("first"))
        head = store.head()
        with psycopg.connect(dsn) as held:  # a writer mid-transaction, as the store's own writers lock
            held.execute("SELECT pg_advisory_xact_lock(hashtextextended('signing-agent key events', 0))")
            writer = threading.Thread(target=store.revoke, args=("first",))
            writer.start()
            time.sleep(0.3)
            assert writer.is_alive() and store.head() == head  # waiting, its event not drawn yet
            held.rollback()
        writer.join(timeout=5)
        assert not writer.is_alive() and store.head() > head and store.get("first") is None
    finally:
        store.close()
