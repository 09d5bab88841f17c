"""A quorum's published bundles in the PostgreSQL database agent hosts share: agent.quorum_pg.

Two real agent processes on the session's SoftHSM2 token (one HSM, two hosts), each with its own state
directory, config and audit, on one throw-away cluster (tests/support/pg.py). Operators use only the CLI
of host A; host B learns everything from the database. The attacks are rows written by SQL, as someone
with the database's write access (its owner) would: every host refuses them itself.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.custody.store import StoreUnavailable
from agent.quorum import Bundle, InForce, Operators, QuorumError, QuorumSource, judge, new_proposal
from agent.quorum_pg import POLL_SECONDS, STALE_SECONDS, PostgresBundles
from signing_agent_client._proto import signer_pb2
from support.agent_calls import sign_at
from support.deploy import Env, run_cli, start_agent, write_bots
from support.leaks import new_secret, register_secret
from support.pg import Cluster, host_config

MM = register_secret(f"sa1_mm_{secrets.token_urlsafe(24)}")
MM2 = register_secret(f"sa1_mm2_{secrets.token_urlsafe(24)}")
OPEN_ORDERS = "GET /api/v3/openOrders"


def _policy(label: str, *extra_endpoints: str) -> str:
    endpoints = ", ".join(f'"{e}"' for e in ("GET /api/v3/account", *extra_endpoints))
    return f'[bots.mm]\nkeys = ["{label}"]\n\n[keys.{label}]\nendpoints = [{endpoints}]\ntimestamps = "any"\n'


class Hosts:
    """Operators alice, bob and carol (2 of 3 to loosen), hosts A and B on one database."""

    def __init__(self, env: Env, dsn: str, label: str) -> None:
        self.env, self.dsn, self.label = env, dsn, label
        self.keys: dict[str, Path] = {}
        lines = []
        for name in ("alice", "bob", "carol"):
            self.keys[name] = env.root / f"{label}-{name}.key"
            out = run_cli(env, "operator", "keygen", name, "--out", str(self.keys[name]), check=True)
            lines.append(out.stdout.split("#")[0].strip())
        quorum = (f'[quorum]\nthreshold = 2\nbundles = "bundles-{label}"\n[quorum.operators]\n'
                  + "\n".join(lines) + "\n")
        self.names = [f"{label}-a", f"{label}-b"]
        self.configs = [host_config(env, name, dsn, extra=quorum) for name in self.names]
        self.bots = env.root / f"bots-{label}.toml"
        write_bots(self.bots, {"mm": MM})
        self.draft = env.root / f"draft-{label}.toml"
        self.agents: list = []

    def cli(self, *args: str, host: int = 0):
        return run_cli(self.env, *args, config=self.configs[host])

    def propose(self, policy: str, proposer: str, bots: Path | None = None) -> Path:
        self.draft.write_text(policy)
        done = self.cli("policy", "propose", "--proposer", proposer, "--key", str(self.keys[proposer]),
                        "--policy", str(self.draft), "--bots", str(bots or self.bots))
        assert done.returncode == 0, done.stderr
        return Path(done.stderr.split("written to ")[1].split()[0])

    def approve(self, proposal: Path, name: str) -> None:
        done = self.cli("policy", "approve", str(proposal), "--operator", name, "--key", str(self.keys[name]),
                        "--digest", Bundle.read(proposal).digest)
        assert done.returncode == 0, done.stderr

    def publish(self, proposal: Path) -> float:
        done = self.cli("policy", "publish", str(proposal))
        assert done.returncode == 0, done.stderr
        assert "quorum_bundles" in done.stderr, done.stderr  # said where it went: the database
        return time.monotonic()

    def sign(self, host: int, endpoint: str = "GET /api/v3/account", token: str = MM) -> grpc.StatusCode:
        return self.sign_answer(host, endpoint, token)[0]

    def sign_answer(self, host: int, endpoint: str = "GET /api/v3/account",
                    token: str = MM) -> tuple[grpc.StatusCode, str]:
        """The status of a Sign call on HOST, and its message ("" when it signed)."""
        method, path = endpoint.split()
        msg = signer_pb2.SignRequest(key=self.label, method=method, path=path)
        msg.query.extend([signer_pb2.Param(name="timestamp", value=str(int(time.time() * 1000)))])
        code, details, _ = sign_at(self.agents[host].target, msg, token)
        return code, details

    def audit(self, host: int, event: str = "policy.bundle") -> list[dict]:
        path = self.env.root / f"state-{self.names[host]}" / "audit.jsonl"
        return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("event") == event]

    def sql(self, statement: str, params: tuple = (), *, as_owner: bool = False) -> list:
        """A statement on the shared database, outside the agent: AS_OWNER with the table's triggers off,
        as its owner or a superuser can (the attacker the hosts must not trust)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            with conn.transaction():
                if as_owner:
                    conn.execute("SET LOCAL session_replication_role = replica")
                cur = conn.execute(statement, params)
                return cur.fetchall() if cur.description else []


def _until(what: str, within: float, since: float, attempt) -> float:
    """Call ATTEMPT until it returns true; fail unless that happened within WITHIN s of SINCE; the time taken."""
    while not attempt():
        assert time.monotonic() - since < within, f"{what} not within {within:g} s"
        time.sleep(0.02)
    return time.monotonic() - since


def _insert(hosts: Hosts, bundle_text: str, version: int, digest: str, previous: str) -> None:
    """A row written by SQL, columns chosen by the writer (they are not what agents read)."""
    hosts.sql("INSERT INTO quorum_bundles (version, digest, previous, bundle, published_by) "
              "VALUES (%s, %s, %s, %s, 'sql')", (version, digest, previous, bundle_text))


def _refusals(hosts: Hosts, host: int, since: int) -> str:
    return " | ".join(r["reason"] for r in hosts.audit(host)[since:] if r["decision"] == "refused")


@pytest.fixture
def hosts(env: Env, dsn: str, label: str):
    h = Hosts(env, dsn, label)
    imported = run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AKID-" + label,
                       stdin=new_secret(64) + "\n", config=h.configs[0])
    assert imported.returncode == 0, imported.stderr
    yield h
    for agent in h.agents:
        agent.stop()


def test_two_hosts_enforce_one_chain_from_the_database_and_refuse_what_sql_writes_there(hosts: Hosts):
    # -- v1: the first policy, 2 of 3, published through host A ---------------------------------
    first = hosts.propose(_policy(hosts.label), "alice")
    hosts.approve(first, "bob")
    hosts.publish(first)
    assert hosts.sql("SELECT version, published_by FROM quorum_bundles")[0][0] == 1
    hosts.agents = [start_agent(hosts.env, c) for c in hosts.configs]
    for host in (0, 1):
        assert hosts.sign(host) == grpc.StatusCode.OK
        assert hosts.sign(host, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED
    status = hosts.cli("policy", "status", host=1)
    assert "in force: v1" in status.stdout and "published in: the quorum_bundles table" in status.stdout, status.stdout

    # -- a loosening with k-1 signatures: publish refuses it; written by SQL, both hosts refuse it ----
    wider = hosts.propose(_policy(hosts.label, OPEN_ORDERS), "carol")
    refused = hosts.cli("policy", "publish", str(wider))
    assert refused.returncode == 1 and "needs 2 approvals of 3 operators, it has 1" in refused.stderr
    assert len(hosts.sql("SELECT 1 FROM quorum_bundles")) == 1  # nothing was inserted
    seen = [len(hosts.audit(h)) for h in (0, 1)]
    one_approval = Bundle.read(wider)
    _insert(hosts, one_approval.to_json(), 2, one_approval.digest, one_approval.body["previous"])
    for host in (0, 1):
        _until(f"host {host} refusing the one-approval loosening", 1.0, time.monotonic(),
               lambda: "needs 2 approvals" in _refusals(hosts, host, seen[host]))
        assert hosts.sign(host, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED  # v1 still decides
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        hosts.sql("DELETE FROM quorum_bundles WHERE version = 2")  # the table's own guard
    hosts.sql("DELETE FROM quorum_bundles WHERE version = 2", as_owner=True)

    # -- with k signatures: in force on both hosts within a second of the publish ------------------
    hosts.approve(wider, "alice")
    published_at = hosts.publish(wider)
    # Measured from the publishing transaction (the database's clock is this machine's), not from the CLI's
    # exit: the CLI spends time after its commit, during which the hosts may have applied the bundle already.
    (committed,) = hosts.sql("SELECT extract(epoch FROM published_at)::float8 FROM quorum_bundles WHERE version = 2")[0]
    in_force_at = []
    for host in (0, 1):
        _until(f"host {host} signing under v2", 1.0, published_at,
               lambda h=host: hosts.sign(h, OPEN_ORDERS) == grpc.StatusCode.OK)
        in_force_at.append(time.time())
    print(f"v2 (a loosening, 2 of 3) in force on both hosts {max(in_force_at) - committed:.3f} s after its commit")
    assert max(in_force_at) - committed < 1.0
    for host in (0, 1):
        (applied,) = [r for r in hosts.audit(host) if r["decision"] == "applied" and r["version"] == 2]
        assert sorted(a.split(":")[0] for a in applied["approvers"]) == ["alice", "carol"], applied
        assert applied["change"] == "loosening"

    # -- one operator tightens: at once, on both ------------------------------------------------------
    narrower = hosts.propose(_policy(hosts.label), "bob")
    published_at = hosts.publish(narrower)
    for host in (0, 1):
        _until(f"host {host} applying bob's tightening", 1.0, published_at,
               lambda h=host: hosts.sign(h, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED)
    v3 = Bundle.from_json(hosts.sql("SELECT bundle FROM quorum_bundles WHERE version = 3")[0][0], source="v3")

    # -- an older bundle put back by SQL, its columns lying: refused, audited, v3 stays ---------------
    v1_text = hosts.sql("SELECT bundle FROM quorum_bundles WHERE version = 1")[0][0]
    seen = [len(hosts.audit(h)) for h in (0, 1)]
    _insert(hosts, v1_text, 1000, "f" * 64, v3.digest)
    # -- a forged approval: carol's loosening again, "approved" by a key that is not bob's -------------
    again = hosts.propose(_policy(hosts.label, OPEN_ORDERS), "carol")
    forged = Bundle.read(again).approved_by("bob", Ed25519PrivateKey.generate())
    _insert(hosts, forged.to_json(), 1001, forged.digest, forged.body["previous"])
    for host in (0, 1):
        _until(f"host {host} refusing the replay and the forgery", 1.0, time.monotonic(),
               lambda h=host: "not newer" in _refusals(hosts, h, seen[h])
               and "'bob' does not verify" in _refusals(hosts, h, seen[h]))
        assert hosts.sign(host, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED
        assert hosts.sign(host) == grpc.StatusCode.OK
    # publish will not chain onto a row it did not write: the newest row (by its version column) is the forgery
    hosts.approve(again, "alice")
    blocked = hosts.cli("policy", "publish", str(again))
    assert blocked.returncode == 1 and "not published by `policy publish`" in blocked.stderr, blocked.stderr
    hosts.sql("DELETE FROM quorum_bundles WHERE version >= 1000", as_owner=True)
    again.unlink()

    # -- a rollback: v3 deleted by SQL. Each running host says so and keeps enforcing v3 -----------------
    seen = [len(hosts.audit(h)) for h in (0, 1)]
    hosts.sql("DELETE FROM quorum_bundles WHERE version = 3", as_owner=True)
    for host in (0, 1):
        _until(f"host {host} reporting the rollback", 1.0, time.monotonic(),
               lambda h=host: "is gone from the quorum_bundles table" in _refusals(hosts, h, seen[h]))
    time.sleep(3 * POLL_SECONDS)
    for host in (0, 1):
        assert hosts.sign(host, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED  # not back to v2
        assert len([r for r in hosts.audit(host)[seen[host]:] if "is gone" in r.get("reason", "")]) == 1  # once
    # A host restarted on the rolled-back table does not start ...
    assert hosts.agents[1].stop() == 0
    restarted = start_agent(hosts.env, hosts.configs[1], wait=False)
    assert restarted.proc.wait(timeout=30) != 0
    log = restarted.log.read_text()
    assert "is missing from the quorum_bundles table" in log and "Traceback" not in log, log
    # ... until the bundle is put back (by anyone: it is the same signed content)
    _insert(hosts, v3.to_json(), 3, v3.digest, v3.body["previous"])
    hosts.agents[1] = start_agent(hosts.env, hosts.configs[1])
    assert hosts.sign(1, OPEN_ORDERS) == grpc.StatusCode.PERMISSION_DENIED and hosts.sign(1) == grpc.StatusCode.OK

    # -- one operator revokes the bot: refused on both hosts within a second --------------------------
    empty = hosts.env.root / f"no-bots-{hosts.label}.toml"
    empty.write_text("")
    published_at = hosts.publish(hosts.propose(_policy(hosts.label), "carol", bots=empty))
    for host in (0, 1):
        _until(f"host {host} refusing the revoked bot", 1.0, published_at,
               lambda h=host: hosts.sign(h) == grpc.StatusCode.UNAUTHENTICATED)

    # -- the audit: each host's chain verifies, and every bundle it applied is proven by the database ---
    for host in (0, 1):
        verify = hosts.cli("audit", "verify", host=host)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "every one verified against the operators' signatures" in verify.stdout, verify.stdout
    for agent in hosts.agents:
        assert agent.stop() == 0
    hosts.agents = []
    everything = hosts.cli("audit", "verify", "--all")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert all(name in everything.stdout for name in hosts.names), everything.stdout
    # Both hosts' applied bundles (v1 to v4 each, v3 twice on host B: its restart replayed it), from the shipped audit
    shipped = int(everything.stdout.split("policy bundles: ")[1].split()[0])
    assert shipped >= 8 and "every one verified" in everything.stdout, everything.stdout
    # A bundle rewritten in the table after it applied (same version, other content): audit verify says so.
    v1 = Bundle.from_json(v1_text, source="v1")
    swapped = Bundle(body={**v1.body, "summary": "swapped"}, approvals=v1.approvals)
    hosts.sql("UPDATE quorum_bundles SET bundle = %s WHERE version = 1", (swapped.to_json(),), as_owner=True)
    verify = hosts.cli("audit", "verify", host=1)
    assert verify.returncode == 1 and "bundle v1" in verify.stdout and "not verified" in verify.stdout, verify.stdout
    everything = hosts.cli("audit", "verify", "--all")
    assert everything.returncode == 1 and f"host {hosts.names[0]} row" in everything.stdout, everything.stdout


def test_a_silent_database_refuses_callers_after_the_stale_bound_and_the_host_recovers(
        hosts: Hosts, cluster: Cluster):
    first = hosts.propose(_policy(hosts.label), "alice")
    hosts.approve(first, "bob")
    hosts.publish(first)
    hosts.agents = [start_agent(hosts.env, hosts.configs[0])]
    assert hosts.sign(0) == grpc.StatusCode.OK
    with cluster.hung():
        hung_at = time.monotonic()
        assert hosts.sign(0) == grpc.StatusCode.OK  # the last answer is younger than the bound
        _until("UNAVAILABLE", STALE_SECONDS + POLL_SECONDS + 0.5, hung_at,
               lambda: hosts.sign(0) == grpc.StatusCode.UNAVAILABLE)
    _until("recovery once the database answers", 10, time.monotonic(), lambda: hosts.sign(0) == grpc.StatusCode.OK)
    log = hosts.agents[0].log.read_text()
    assert "policy bundle database has not answered for over 1 s" in log, log[-2000:]


def test_published_files_left_in_the_directory_and_an_unreachable_database_stop_the_start(
        hosts: Hosts, tmp_path: Path):
    directory = hosts.env.root / f"bundles-{hosts.label}"
    directory.mkdir(exist_ok=True)
    (directory / "v000001-0123456789abcdef.json").write_text("{}")
    for args in (("policy", "status"), ("serve",)):
        done = hosts.cli(*args)
        assert done.returncode == 2, done.stderr
        assert "read published bundles only from the quorum_bundles table" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    (directory / "v000001-0123456789abcdef.json").unlink()
    socket_dir = tmp_path / "no-server"
    socket_dir.mkdir()
    down = hosts.configs[0].read_text().replace(hosts.dsn, f"host={socket_dir} port=5 dbname=x user=signing")
    (hosts.env.root / f"{hosts.label}-down.toml").write_text(down)
    for args in (("policy", "status"), ("serve",)):
        done = run_cli(hosts.env, *args, config=hosts.env.root / f"{hosts.label}-down.toml")
        assert done.returncode == 4 and "database is unreachable" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    status = run_cli(hosts.env, "status", config=hosts.env.root / f"{hosts.label}-down.toml")
    assert "quorum:  unreadable:" in status.stdout and "database is unreachable" in status.stdout, status.stdout
    assert "Traceback" not in status.stderr


def test_two_operators_publishing_at_once_land_one_bundle(dsn: str, tmp_path: Path):
    """The lock and UNIQUE(version): two valid v2, each published from its own connection at the same
    moment; one lands, the other is refused with the reason, and the table holds one chain."""
    keys = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob")}
    operators = Operators({n: k.public_key().public_bytes_raw() for n, k in keys.items()}, 1)
    now = datetime.now(timezone.utc)

    def proposal(in_force: InForce, proposer: str, policy: str) -> Bundle:
        return new_proposal(in_force, policy_text=policy, bots_text="", proposer=proposer, summary="",
                            expires_in=timedelta(hours=1), now=now).approved_by(proposer, keys[proposer])

    first = proposal(InForce.genesis(operators), "alice", _policy("k1", OPEN_ORDERS))
    publishers = [PostgresBundles(dsn, tmp_path), PostgresBundles(dsn, tmp_path)]
    try:
        publishers[0].publish(first, by="test")
        v1 = judge(first, InForce.genesis(operators), now).in_force
        rivals = [proposal(v1, "alice", _policy("k1")), proposal(v1, "bob", _policy("k1", "GET /api/v3/myTrades"))]
        start, outcomes = threading.Barrier(2), [None, None]

        def publish(i: int) -> None:
            start.wait()
            try:
                outcomes[i] = publishers[i].publish(rivals[i], by=f"publisher {i}")
            except QuorumError as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=publish, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        refused = [o for o in outcomes if isinstance(o, QuorumError)]
        assert len(refused) == 1 and "nothing was published" in str(refused[0]).lower(), outcomes
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT version, digest, previous FROM quorum_bundles ORDER BY id").fetchall()
        winner = rivals[outcomes.index(next(o for o in outcomes if isinstance(o, str)))]
        assert rows == [(1, first.digest, first.body["previous"]), (2, winner.digest, first.digest)]
        # A database that answers with an error (the table renamed away) is one that says nothing: the
        # watch counts it as an outage (the stale bound, then UNAVAILABLE), never a dead thread.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE quorum_bundles RENAME TO quorum_bundles_away")
        with pytest.raises(StoreUnavailable, match="quorum_bundles table .* cannot be read"):
            publishers[1].refresh()
    finally:
        for p in publishers:
            p.close()


def _signed_bundle(in_force: InForce, keys: dict, proposer: str, *approvers: str, policy: str, bots: str,
                   created: datetime, valid_for: timedelta) -> Bundle:
    """A bundle as operators made it at CREATED (possibly long ago): proposed, then approved by APPROVERS."""
    bundle = new_proposal(in_force, policy_text=policy, bots_text=bots, proposer=proposer, summary="",
                          expires_in=valid_for, now=created).approved_by(proposer, keys[proposer])
    for name in approvers:
        bundle = bundle.approved_by(name, keys[name])
    return bundle


def test_the_chain_walk_excuses_an_expired_link_only_under_a_fresh_accepted_one(dsn: str, tmp_path: Path):
    """A host that reads the table after its links expired (its clock 40 days on): an expired link that
    verifies is not applied, and the host is behind (its callers refused), until a link accepted fresh
    chains on top; then every link under it applies. A forged fresh link on top excuses nothing."""
    keys = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob")}
    operators = Operators({n: k.public_key().public_bytes_raw() for n, k in keys.items()}, 2)
    now = datetime.now(timezone.utc)
    later = now + timedelta(days=40)
    first = _signed_bundle(InForce.genesis(operators), keys, "alice", "bob", policy=_policy("k1", OPEN_ORDERS),
                           bots="", created=now, valid_for=timedelta(hours=1))
    v1 = judge(first, InForce.genesis(operators), now).in_force
    brake = _signed_bundle(v1, keys, "bob", policy=_policy("k1"), bots="", created=now, valid_for=timedelta(hours=1))
    v2 = judge(brake, v1, now).in_force
    table = PostgresBundles(dsn, tmp_path / "proposals")
    (tmp_path / "late").mkdir()
    late = None
    try:
        table.publish(first, by="test")  # in time: `policy publish` judges the dates (tested with the agents)
        table.publish(brake, by="test")
        late = QuorumSource(PostgresBundles(dsn, tmp_path / "proposals"), operators, tmp_path / "late",
                            clock=lambda: later)
        events = late.start()
        assert late.chain.in_force.version == 0 and not late.policy.keys  # signs nothing, v1 or v2
        assert late.chain.behind == (0, 1)
        assert [(e.decision, e.version) for e in events] == [("refused", 1)], events
        assert "v0 is in force here, v1 is published" in events[0].reason, events[0].reason
        refusal = late.stale_bots()
        assert refusal is not None and refusal.unavailable_rule == "quorum-behind"
        assert "publish a fresh bundle on top" in refusal.unavailable and "quorum-head.json" in refusal.unavailable

        # A fresh v3 "approved" by a key that is not bob's: it chains, its dates are fresh, it excuses nothing.
        forged = _signed_bundle(v2, keys, "alice", policy=_policy("k1"), bots="", created=later,
                                valid_for=timedelta(hours=1)).approved_by("bob", Ed25519PrivateKey.generate())
        table.publish(forged, by="test")
        late.chain.dir.refresh()
        assert late.poll() == [] and late.chain.in_force.version == 0 and late.chain.behind == (0, 1)
        assert late.stale_bots() is refusal  # the same outage: audited once, the same refusal object
        # A rival v1, fresh and signed by both, written by SQL beside the late v1 (its version column
        # lying): the late link counts as the other branch of a fork, so the rival is never applied here.
        rival = _signed_bundle(InForce.genesis(operators), keys, "alice", "bob", policy=_policy("k1", OPEN_ORDERS),
                               bots="", created=later, valid_for=timedelta(hours=1))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO quorum_bundles (version, digest, previous, bundle, published_by) "
                         "VALUES (999, %s, %s, %s, 'sql')", (rival.digest, rival.body["previous"], rival.to_json()))
        late.chain.dir.refresh()
        events = late.poll()
        assert [(e.decision, e.version) for e in events] == [("refused", 1)] and "a fork" in events[0].reason, events
        assert late.chain.in_force.version == 0 and late.chain.behind == (0, 1)
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("DELETE FROM quorum_bundles WHERE version IN (3, 999)")

        # A fresh tightening on top of v2 by one operator: v1 and v2 apply under it (their expiry
        # excused, their signatures checked), then v3; the host serves again.
        top = _signed_bundle(v2, keys, "bob", policy=_policy("k1"), bots="", created=later,
                             valid_for=timedelta(hours=1))
        table.publish(top, by="test")
        late.chain.dir.refresh()
        events = late.poll()
        assert [(e.decision, e.version) for e in events] == [("applied", 1), ("applied", 2), ("applied", 3)], events
        assert late.chain.in_force.digest == top.digest and late.chain.behind is None
        assert late.stale_bots() is None
        assert [p.text for p in late.policy.for_key("k1").endpoints] == ["GET /api/v3/account"]
    finally:
        table.close()
        if late is not None:
            late.close()


def test_a_host_added_after_a_bundle_expired_refuses_callers_until_a_fresh_bundle_lands_on_top(
        hosts: Hosts, tmp_path: Path):
    """v1 grants bot mm for a day; v2, published an hour ago and expired a minute ago, revokes it (one
    operator's brake). Host B starts later with a fresh state directory: under v1 it would sign for the
    revoked bot; it refuses every caller UNAVAILABLE, saying it is behind, until operators publish v3."""
    from agent.quorum import load_operator_key

    keys = {name: load_operator_key(path) for name, path in hosts.keys.items()}
    operators = Operators({n: k.public_key().public_bytes_raw() for n, k in keys.items()}, 2)
    now = datetime.now(timezone.utc)
    policy, mm_only = _policy(hosts.label), hosts.bots.read_text()
    first = _signed_bundle(InForce.genesis(operators), keys, "alice", "bob", policy=policy, bots=mm_only,
                           created=now - timedelta(hours=1), valid_for=timedelta(days=1))
    revoke = _signed_bundle(judge(first, InForce.genesis(operators), now).in_force, keys, "bob", policy=policy,
                            bots="", created=now - timedelta(hours=1), valid_for=timedelta(minutes=59))
    table = PostgresBundles(hosts.dsn, tmp_path)
    try:
        table.publish(first, by="test")
        # `policy publish` judges the dates first: the expired brake is refused, nothing inserted ...
        late_file = tmp_path / "v2-late.json"
        late_file.write_text(revoke.to_json())
        refused = hosts.cli("policy", "publish", str(late_file))
        assert refused.returncode == 1 and "expired at" in refused.stderr, refused.stderr
        assert len(hosts.sql("SELECT 1 FROM quorum_bundles")) == 1
        # ... so a row that verifies but expired was published in time (here: an hour ago, as it was made).
        table.publish(revoke, by="test")
    finally:
        table.close()

    hosts.agents = [start_agent(hosts.env, hosts.configs[1])]
    code, message = hosts.sign_answer(0)
    assert code == grpc.StatusCode.UNAVAILABLE, (code, message)  # not OK: v1 would sign for the revoked bot
    assert "this host is behind the published policy chain: v1 is in force here, v2 is published" in message, message
    assert "publish a fresh bundle on top" in message
    assert hosts.sign_answer(0, token=MM2)[0] == grpc.StatusCode.UNAVAILABLE  # every caller, known or not
    behind = [r for r in hosts.audit(1) if r["decision"] == "refused"]
    assert len(behind) == 1 and "behind the published policy chain" in behind[0]["reason"], behind

    # The operators publish v3 on top of v2 from host A's CLI (host A's state is fresh too: its commands
    # work on the published head and say so): mm gets a new token, a loosening, 2 of 3.
    new_bots = hosts.env.root / f"bots-{hosts.label}-v3.toml"
    write_bots(new_bots, {"mm": MM2})
    proposal = hosts.propose(policy, "carol", bots=new_bots)
    assert Bundle.read(proposal).body["previous"] == revoke.digest
    hosts.approve(proposal, "alice")
    published_at = hosts.publish(proposal)
    _until("host B serving under v3", 2.0, published_at,
           lambda: hosts.sign(0, token=MM2) == grpc.StatusCode.OK)
    assert hosts.sign(0) == grpc.StatusCode.UNAUTHENTICATED  # mm's old token: revoked by v2, still
    applied = [(r["version"], r.get("change")) for r in hosts.audit(1) if r["decision"] == "applied"]
    assert applied == [(1, "loosening"), (2, "tightening"), (3, "loosening")], applied
    assert len([r for r in hosts.audit(1) if r["decision"] == "refused"]) == 1  # the one outage, said once
    status = hosts.cli("policy", "status", host=1)
    assert "in force: v3" in status.stdout and "behind" not in status.stderr, status.stdout + status.stderr
    verify = hosts.cli("audit", "verify", host=1)  # v1 and v2 applied late are proven by their signatures
    assert verify.returncode == 0 and "every one verified" in verify.stdout, verify.stdout + verify.stderr
