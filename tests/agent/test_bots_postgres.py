"""Bot credentials in PostgreSQL ([store] backend = "postgres"), shared by agent hosts: agent.bots_db.

Real agent processes on the session's SoftHSM2 token (one HSM, several hosts) and a throw-away cluster
(tests/support/pg.py); each test has a database of its own.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path

import pytest

from agent.bots_db import POLL_SECONDS, STALE_SECONDS, BotsWatch, PostgresBots
from support.deploy import PERMISSIVE_POLICY, TEST_BOT, Env, run_cli, start_agent, write_bots
from support.leaks import new_secret, register_secret
from support.pg import Cluster, host_config


def _import_key(env: Env, config: Path, label: str) -> None:
    proc = run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AKID-" + label,
                   stdin=new_secret(64) + "\n", config=config)
    assert proc.returncode == 0, proc.stderr


def _token() -> str:
    return register_secret("sa1_" + secrets.token_urlsafe(32))


def _audit(env: Env, host: str) -> list[dict]:
    path = env.root / f"state-{host}" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _until(what: str, within: float, since: float, attempt) -> None:
    """Call ATTEMPT until it returns true; fail unless that happened within WITHIN s of SINCE."""
    while not attempt():
        assert time.monotonic() - since < within, f"{what} not within {within:g} s"
        time.sleep(0.02)


def test_a_bot_added_on_one_host_signs_on_the_other_and_a_revocation_holds_on_both_within_a_second(
        env: Env, dsn: str, label: str, tmp_path: Path):
    from signing_agent_client.client import NotAuthenticatedError, SignerClient

    policy = env.root / f"policy-{label}.toml"
    policy.write_text(PERMISSIVE_POLICY + '\n[bots.carol]\nkeys = ["*"]\n')
    hosts = [f"{label}-a", f"{label}-b"]
    configs = [host_config(env, h, dsn, policy) for h in hosts]
    moved = run_cli(env, "bots", "import-file", config=configs[0])  # the deployment's bots.toml: the test bot
    assert moved.returncode == 0 and "imported 1 bot(s)" in moved.stdout, moved.stderr
    _import_key(env, configs[0], label)
    agents = [start_agent(env, c) for c in configs]
    clients = []
    try:
        token_file = tmp_path / "carol.token"
        added = run_cli(env, "bots", "add", "carol", "--token-file", str(token_file), config=configs[0])
        assert added.returncode == 0, added.stderr
        added_at = time.monotonic()
        register_secret(token_file.read_text().strip())
        with PostgresBots(dsn) as registry:
            (carol,) = [c for c in registry.list() if c.name == "carol"]
        assert carol.token_sha256 and carol.created  # the hash, never the token, is what the database holds
        # One connection per host, kept open across the revocation: each call on it is identified afresh.
        clients = [SignerClient(a.target, token_file=token_file) for a in agents]

        def signs(client) -> bool:
            try:
                client.sign(label, "GET", "/api/v3/account")
                return True
            except NotAuthenticatedError:
                return False

        # Host B has no bots file entry for carol: it learns of her from the database.
        # Each host polls on its own: both accept her within a second of the add.
        _until("both hosts accepting a bot added through host A", 1.0, added_at,
               lambda: signs(clients[1]) and signs(clients[0]))

        revoke = run_cli(env, "bots", "revoke", "carol", config=configs[0])
        assert revoke.returncode == 0 and "on every host" in revoke.stdout, revoke.stderr
        revoked_at = time.monotonic()
        _until("both hosts refusing the revoked bot", 1.0, revoked_at,
               lambda: not signs(clients[0]) and not signs(clients[1]))
        for client in clients:
            with pytest.raises(NotAuthenticatedError, match="not a known bot's"):
                client.sign(label, "GET", "/api/v3/account")
        # the bot that came from the file still signs on both hosts
        for a in agents:
            with SignerClient(a.target) as test_bot:
                test_bot.sign(label, "GET", "/api/v3/account")
        reloads = [line for line in _audit(env, hosts[1]) if line["event"] == "bots.reload"]
        assert [line["changed"] for line in reloads][-2:] == [["carol"], ["carol"]]  # added, then revoked
    finally:
        for c in clients:
            c.close()
        for a in agents:
            assert a.stop() == 0, a.log.read_text()


def test_credentials_outlive_a_silent_database_by_the_stale_bound_only_then_recover_and_survive_a_restart(
        env: Env, cluster: Cluster, dsn: str, label: str):
    from signing_agent_client.client import AgentUnavailableError, NotAuthenticatedError, SignerClient

    host = f"{label}-h"
    config = host_config(env, host, dsn)
    assert run_cli(env, "bots", "import-file", config=config).returncode == 0
    _import_key(env, config, label)
    agent = start_agent(env, config)
    client = SignerClient(agent.target)

    def outcome() -> str:
        try:
            client.sign(label, "GET", "/api/v3/account")
            return "signed"
        except AgentUnavailableError as exc:
            assert "bot credentials database has not answered" in exc.message and "retry" in exc.message, exc.message
            return "unavailable"

    try:
        assert outcome() == "signed"
        with cluster.hung():
            hung_at = time.monotonic()
            # The last poll that answered began at most POLL_SECONDS ago: its credentials still hold.
            assert outcome() == "signed"
            assert time.monotonic() - hung_at < STALE_SECONDS - POLL_SECONDS - 0.1, "the check came too late to mean anything"
            _until("UNAVAILABLE", STALE_SECONDS + POLL_SECONDS + 0.3, hung_at, lambda: outcome() == "unavailable")
            assert outcome() == "unavailable"
        _until("recovery after the database answers again", 10, time.monotonic(), lambda: outcome() == "signed")

        cluster.stop()
        try:
            _until("UNAVAILABLE with the database stopped", STALE_SECONDS + 1.0, time.monotonic(),
                   lambda: outcome() == "unavailable")
        finally:
            cluster.start()
        _until("recovery after a database restart", 10, time.monotonic(), lambda: outcome() == "signed")
        log = agent.log.read_text()
        assert '"bots.store"' in log and '"up": false' in log and '"up": true' in log

        # The polling resumed: a revocation after the restart is in force within a second.
        assert run_cli(env, "bots", "revoke", TEST_BOT, config=config).returncode == 0
        revoked_at = time.monotonic()

        def refused() -> bool:
            try:
                client.sign(label, "GET", "/api/v3/account")
                return False
            except NotAuthenticatedError:
                return True

        _until("the revocation after a restart", 1.0, revoked_at, refused)
    finally:
        client.close()
        assert agent.stop() == 0, agent.log.read_text()


def test_the_credentials_in_force_are_a_new_object_at_each_change_and_only_then(dsn: str):
    """What a stream that identified its caller once relies on (it identifies it again when Guard.bots is
    another object): an add, a revoke and a stale database each give another object; a poll that finds
    nothing new keeps the same one."""
    with PostgresBots(dsn) as registry:
        watch = BotsWatch(dsn)
        try:
            empty = watch.current()
            token = register_secret(registry.add("s1"))
            watch.poll()
            added = watch.current()
            assert added is not empty and added.by_bearer(token).name == "s1" and empty.by_bearer(token) is None
            watch.poll()
            assert watch.current() is added
            registry.revoke("s1")
            watch.poll()
            revoked = watch.current()
            assert revoked is not added and revoked.by_bearer(token) is None and revoked.unavailable is None
            time.sleep(STALE_SECONDS + 0.05)  # no poll: as if the database had stopped answering
            stale = watch.current()
            assert stale is not revoked and stale.unavailable and not stale.names
            watch.poll()
            assert watch.current() is revoked  # fresh again, unchanged
        finally:
            watch.stop()


def test_import_file_moves_a_bots_file_once_all_or_none(env: Env, dsn: str, label: str, tmp_path: Path):
    config = host_config(env, f"{label}-i", dsn)
    bots_file = tmp_path / "bots.toml"
    first, second = _token(), _token()
    write_bots(bots_file, {"mm-1": first, "mm-2": second})

    def cli(*args: str):
        return run_cli(env, "bots", *args, config=config)

    def names() -> list[str]:
        listed = cli("list")
        assert listed.returncode == 0, listed.stderr
        return [line.split()[0] for line in listed.stdout.splitlines() if not line.startswith("no bots")]

    moved = cli("import-file", "--file", str(bots_file))
    assert moved.returncode == 0 and "imported 2 bot(s)" in moved.stdout and "no longer read" in moved.stdout
    assert names() == ["mm-1", "mm-2"]
    again = cli("import-file", "--file", str(bots_file))  # the same file twice: nothing new, nothing refused
    assert again.returncode == 0 and "imported 0 bot(s)" in again.stdout and "2 were there already" in again.stdout

    # A credential revoked in the database never comes back through a stale copy of the file.
    assert cli("revoke", "mm-1").returncode == 0
    write_bots(bots_file, {"mm-1": first, "mm-2": second, "mm-3": _token()})
    refused = cli("import-file", "--file", str(bots_file))
    assert refused.returncode == 1 and "'mm-1'" in refused.stderr and "was revoked" in refused.stderr
    assert "nothing was imported" in refused.stderr and "Traceback" not in refused.stderr
    assert names() == ["mm-2"]  # mm-3 was not imported either: all or none

    write_bots(bots_file, {"mm-2": _token()})  # the name, with another credential
    clash = cli("import-file", "--file", str(bots_file))
    assert clash.returncode == 1 and "'mm-2'" in clash.stderr and "another credential" in clash.stderr
    write_bots(bots_file, {"mm-9": second})  # mm-2's credential, under another name
    clash = cli("import-file", "--file", str(bots_file))
    assert clash.returncode == 1 and "'mm-2'" in clash.stderr and "one credential identifies one bot" in clash.stderr
    assert names() == ["mm-2"]

    missing = cli("import-file", "--file", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[bots.x\n")
    malformed = cli("import-file", "--file", str(bad))
    assert malformed.returncode == 1 and "not valid TOML" in malformed.stderr
    assert names() == ["mm-2"]
    events = [line for line in _audit(env, f"{label}-i") if line["event"] == "bot.import"]
    assert [e["bots"] for e in events] == [["mm-1", "mm-2"], []]

    # Without the database the agent reads the file itself: nothing to import into.
    plain = run_cli(env, "bots", "import-file", config=env.config)
    assert plain.returncode == 2 and 'backend = "postgres"' in plain.stderr


def test_bots_commands_say_when_the_database_does_not_answer(env: Env, label: str, tmp_path: Path):
    socket_dir = tmp_path / "no-server"
    socket_dir.mkdir()
    config = host_config(env, f"{label}-down", f"host={socket_dir} port=5 dbname=x user=signing")
    for args in (("add", "nobody"), ("list",), ("revoke", "nobody"), ("import-file",)):
        proc = run_cli(env, "bots", *args, config=config)
        assert proc.returncode == 4, (args, proc.stderr)
        assert "database is unreachable" in proc.stderr and "Traceback" not in proc.stderr
        assert "sa1_" not in proc.stdout  # `add` printed no token for a bot that was never registered
    start = run_cli(env, "serve", config=config)
    assert start.returncode == 4 and "database is unreachable" in start.stderr


def test_a_quorum_with_postgres_takes_bots_from_bundles_in_the_database_not_from_the_bots_table(
        env: Env, label: str):
    from agent.config import load_config

    operator = "ed25519:" + base64.b64encode(os.urandom(32)).decode()
    config = env.write_config(f"{label}-q", extra='[store]\nbackend = "postgres"\ndsn = "host=/nowhere dbname=x"\n'
                                                  f'[quorum]\nthreshold = 1\n[quorum.operators]\nalice = "{operator}"\n')
    loaded = load_config(config)  # one source of credentials: the bundles, which the database carries
    assert loaded.bundles_in_database and not loaded.bots_in_database
    moved = run_cli(env, "bots", "import-file", config=config)
    assert moved.returncode == 2 and "[quorum]" in moved.stderr and "policy propose" in moved.stderr, moved.stderr
    sqlite = env.write_config(f"{label}-qs", extra='[store]\nbackend = "sqlite"\n'
                                                   f'[quorum]\nthreshold = 1\n[quorum.operators]\nalice = "{operator}"\n')
    assert not load_config(sqlite).bots_in_database and not load_config(sqlite).bundles_in_database
