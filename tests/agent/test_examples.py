"""The example bots (examples/bots/), run as a user runs them: as processes, finding the agent from the
environment, against a real agent on a fresh SoftHSM2 token holding the template policy, and a local
exchange (exchange_server.py) that checks each request's signature as Binance would and answers in
Binance's shapes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from support.exchange_readers import Http
from support.deploy import TEST_BOT, Env, make_env, run_cli, start_agent
from support.leaks import new_secret
from support.exchange_server import ExchangeServer, binance_spot, verify
from support.reference import hmac_credential

ROOT = Path(__file__).resolve().parents[2]
BOTS = ROOT / "examples" / "bots"
KEY = "binance-main"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    """An agent whose policy is `signing-agent policy template` for the key, and the local Binance."""
    env: Env = make_env(tmp_path_factory, "examples")
    template = run_cli(env, "policy", "template", "--exchange", "binance", "--key", KEY, "--bot", TEST_BOT, check=True)
    # The examples show sign mode (the bot sends what the agent signed): the template's "send" becomes "sign".
    assert 'delivery = "send"' in template.stdout
    (env.root / "policy.toml").write_text(template.stdout.replace('delivery = "send"', 'delivery = "sign"'))
    api_key, secret = f"ak-{secrets.token_hex(8)}", new_secret(64)
    run_cli(env, "keys", "import", "--label", KEY, "--exchange", "binance", "--api-key", api_key,
            stdin=secret + "\n", check=True)
    agent = start_agent(env, env.config)
    with ExchangeServer() as server:
        server.add(binance_spot(), hmac_credential("binance", api_key, secret))
        yield env, agent, server, api_key
    assert agent.stop() == 0, agent.log.read_text()


def run_bot(env: Env, agent, script: str, *args: str, exchange_url: str) -> subprocess.CompletedProcess:
    """The example as a user runs it: its own directory (no agent config near it), the agent's place
    and the bot's credential from the environment, nothing else of the test's."""
    bot_dir = env.root / "bot"
    bot_dir.mkdir(exist_ok=True)
    environment = {"PATH": os.environ["PATH"], "SIGNING_AGENT_TARGET": agent.target,
                   "SIGNING_AGENT_TOKEN_FILE": os.environ["SIGNING_AGENT_TOKEN_FILE"], "EXCHANGE_URL": exchange_url}
    proc = subprocess.run([sys.executable, str(BOTS / script), *args], cwd=bot_dir, env=environment,
                          capture_output=True, text=True, timeout=60)
    (env.logs / f"{script}-{secrets.token_hex(4)}.out").write_text(proc.stdout + proc.stderr)  # leak scan
    return proc


def _new(server: ExchangeServer, before: int):
    return server.received("binance")[before:]


@pytest.mark.e2e
@pytest.mark.parametrize("script,orders", [("client_bot.py", 1), ("ccxt_bot.py", 1), ("ccxt_async_bot.py", 2)])
def test_example_bot_gets_its_answers_and_the_exchange_verifies_every_signature(deployment, script, orders):
    env, agent, server, api_key = deployment
    before = len(server.received("binance"))
    proc = run_bot(env, agent, script, exchange_url=server.url("binance"))
    assert proc.returncode == 0, proc.stderr
    seen = _new(server, before)
    private = [r for r in seen if r.private]
    assert private and all(r.verdict.ok for r in private), [(r.http.path, r.verdict) for r in private]
    assert all(r.http.header("X-MBX-APIKEY") == api_key for r in private)
    placed = [r for r in private if (r.http.method, r.http.path) == ("POST", "/api/v3/order")]
    assert len(placed) == orders and all(r.status == 200 for r in placed)
    assert {(r.params["symbol"], r.params["quantity"]) for r in placed} == {("BTCUSDT", "0.001")}
    assert [r for r in private if r.http.path == "/api/v3/account"]
    # The bot got the exchange's answers: the order (Binance's orderId 28, NEW) and the balances.
    assert "order" in proc.stdout and "28" in proc.stdout and "10000" in proc.stdout, proc.stdout
    assert "open" in proc.stdout or "NEW" in proc.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("script", ["client_bot.py", "ccxt_bot.py", "ccxt_async_bot.py"])
def test_example_dry_run_prints_a_valid_signed_order_and_sends_nothing_private(deployment, script):
    env, agent, server, api_key = deployment
    before = len(server.received("binance"))
    proc = run_bot(env, agent, script, "--dry-run", exchange_url=server.url("binance"))
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in _new(server, before) if r.private]  # ccxt loads markets (public), nothing more
    printed = json.loads(proc.stdout)
    path = printed["path"] if "path" in printed else printed["url"].removeprefix(server.url("binance"))
    path, _, query = path.partition("?")
    assert printed["headers"]["X-MBX-APIKEY"] == api_key
    http = Http(printed["method"], path, query, printed["body"] or "", tuple(printed["headers"].items()))
    credential = server.credential("binance")
    assert verify("binance", http, credential).ok  # what it would have sent verifies as Binance would
    assert (http.method, http.path) == ("POST", "/api/v3/order") and "symbol=BTCUSDT" in http.body


@pytest.mark.e2e
def test_an_example_bot_refused_by_the_policy_says_so_and_sends_nothing(deployment):
    env, agent, server, _ = deployment
    before = len(server.received("binance"))
    proc = run_bot(env, agent, "ccxt_bot.py", "--key", "not-granted", exchange_url=server.url("binance"))
    assert proc.returncode != 0 and "refused" in proc.stderr and "grant" in proc.stderr, proc.stderr
    assert not [r for r in _new(server, before) if r.private]
