"""The bot-side package (clients/python, distribution signing-agent-client): installed from the lock into a
fresh venv that holds nothing of the agent, it signs against a real agent; the asyncio client; the ccxt
bridge's errors as ccxt's own classes, its async flavour, its dry run, and load_markets without private calls."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import ccxt
import pytest

from support.ccxt_calls import LOAD_MARKETS_PRIVATE
from support.deploy import Env, run_cli
from support.leaks import new_secret
from signing_agent_client import (
    AgentUnavailableError,
    InvalidRequestError,
    KeyNotFoundError,
    NotAuthenticatedError,
    RateLimitedError,
    RefusedError,
    SignedRequest,
    SignerClient,
    SigningError,
)
from signing_agent_client.aio import AsyncSignerClient
from signing_agent_client.ccxt_bridge import (
    AUTOMATIC_OFF,
    BRIDGES,
    DryRun,
    agent_exchange,
    agent_exchange_async,
    bridge_module,
    ccxt_error,
    signed_request,
    signed_request_async,
)

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"
ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000"}


def _binance_key(env: Env, label: str) -> str:
    api_key = f"ak-{secrets.token_hex(8)}"
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", api_key, "--type", "hmac",
            stdin=new_secret(64) + "\n", check=True)
    return api_key


# -- the package as a bot installs it -------------------------------------------------------------------


@pytest.mark.shipped
def test_the_client_installed_from_the_lock_into_a_fresh_venv_signs(env: Env, agent, label: str, tmp_path: Path):
    dist = tmp_path / "dist"
    proc = subprocess.run(["make", "client-wheel", f"DIST={dist}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dist.glob("signing_agent_client-*.whl")
    requirements = (dist / "client-requirements.txt").read_text()
    assert "--hash=sha256:" in requirements and "grpcio==" in requirements and "protobuf==" in requirements
    pinned = [line.split("==")[0] for line in requirements.splitlines() if "==" in line and not line.startswith("#")]
    assert not [name for name in pinned if name.startswith("signing-agent")], pinned

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    for args in (["--require-hashes", "--only-binary", ":all:", "-r", dist / "client-requirements.txt"],
                 ["--no-deps", wheel]):
        proc = subprocess.run([python, "-m", "pip", "install", "--quiet", *map(str, args)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr

    api_key = _binance_key(env, label)
    bot = tmp_path / "bot"
    bot.mkdir()
    script = (
        "import sys, signing_agent_client\n"
        "from signing_agent_client import SignerClient\n"
        "with SignerClient() as signer:\n"
        f"    req = signer.sign({label!r}, 'GET', '/api/v3/account')\n"
        "print(req.headers_dict()['X-MBX-APIKEY'], signing_agent_client.__file__)\n"
        "assert not [m for m in sys.modules if m == 'agent' or m.startswith('agent.')]\n"
    )
    # The bot's own directory, no agent config near it: the target comes from the environment.
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=bot, timeout=60,
                          env={"SIGNING_AGENT_TARGET": agent.target,
                               "SIGNING_AGENT_TOKEN_FILE": __import__("os").environ["SIGNING_AGENT_TOKEN_FILE"]})
    assert proc.returncode == 0, proc.stderr
    key_id, module_file = proc.stdout.split()
    assert key_id == api_key and module_file.startswith(str(venv))
    proc = subprocess.run([python, "-c", "import agent"], capture_output=True, text=True, cwd=bot)
    assert proc.returncode != 0  # nothing of the agent in the bot's venv


# -- the asyncio client ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_asyncio_client_signs_what_the_sync_client_signs(env: Env, agent, label: str):
    api_key = _binance_key(env, label)

    async def main():
        async with AsyncSignerClient(agent.target) as signer:
            one = await signer.sign(label, "POST", "/api/v3/order", body=ORDER, timestamp_ms=1_763_700_000_000)
            with pytest.raises(KeyNotFoundError):
                await signer.sign(label + "-none", "GET", "/api/v3/account")
            return one

    signed = asyncio.run(main())
    with SignerClient(agent.target) as signer:
        assert signer.sign(label, "POST", "/api/v3/order", body=ORDER, timestamp_ms=1_763_700_000_000) == signed
    assert signed.headers_dict()["X-MBX-APIKEY"] == api_key


# -- ccxt: errors, async, dry run, load_markets -----------------------------------------------------------


@pytest.mark.parametrize("error,code,expected", [
    (RateLimitedError, "RESOURCE_EXHAUSTED", ccxt.RateLimitExceeded),
    (NotAuthenticatedError, "UNAUTHENTICATED", ccxt.AuthenticationError),
    (RefusedError, "PERMISSION_DENIED", ccxt.PermissionDenied),
    (AgentUnavailableError, "UNAVAILABLE", ccxt.ExchangeNotAvailable),
    (AgentUnavailableError, "DEADLINE_EXCEEDED", ccxt.RequestTimeout),
    (InvalidRequestError, "INVALID_ARGUMENT", ccxt.BadRequest),
    (KeyNotFoundError, "NOT_FOUND", ccxt.AuthenticationError),
    (SigningError, "FAILED_PRECONDITION", ccxt.AuthenticationError),
    (SigningError, "INTERNAL", ccxt.ExchangeError),
])
def test_agent_errors_are_ccxt_classes(error, code, expected):
    assert ccxt_error(error(code, "m")) is expected
    # ccxt retries NetworkErrors (maxRetriesOnFailure) and a bot's back-off catches them; never a refusal.
    assert issubclass(expected, ccxt.NetworkError) == (code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE",
                                                               "DEADLINE_EXCEEDED"))


class _Throttled:
    def sign(self, *args, **kwargs):
        raise RateLimitedError("RESOURCE_EXHAUSTED", "over the key's rate")

    def close(self):
        pass


def test_a_rate_limited_ccxt_call_is_retried_by_ccxt():
    exchange = agent_exchange("binance", "k", client=_Throttled(), config={"options": {"maxRetriesOnFailure": 2}})
    calls = []
    original = exchange.sign
    exchange.sign = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    with pytest.raises(ccxt.RateLimitExceeded, match="signing agent: RESOURCE_EXHAUSTED"):
        exchange.private_get_account()
    assert len(calls) == 3


@pytest.mark.e2e
def test_dry_run_sync_and_async_return_the_signed_request_without_the_network(env: Env, agent, label: str):
    api_key = _binance_key(env, label)
    with SignerClient(agent.target) as client:
        exchange = agent_exchange("binance", label, client=client, dry_run=True)
        exchange.fetch = lambda *a, **k: pytest.fail("dry run sent a request")
        request = signed_request(exchange.private_post_order, dict(ORDER))
    assert request["url"] == "https://api.binance.com/api/v3/order"
    assert request["headers"]["X-MBX-APIKEY"] == api_key and "&signature=" in request["body"]

    async def main():
        async with AsyncSignerClient(agent.target) as client:
            exchange = agent_exchange_async("binance", label, client=client, dry_run=True)
            try:
                return await signed_request_async(exchange.private_post_order, dict(ORDER))
            finally:
                await exchange.close()

    request = asyncio.run(main())
    assert request["url"] == "https://api.binance.com/api/v3/order" and "&signature=" in request["body"]
    with pytest.raises(DryRun):
        raise DryRun(request)


@pytest.mark.parametrize("exchange_id", sorted(BRIDGES))
def test_load_markets_makes_no_private_call_the_bridge_has_not_turned_off(exchange_id: str):
    """Offline: every response is empty; the private requests load_markets asks to be signed are recorded."""
    module = bridge_module(exchange_id)
    private = []

    class Recorder:
        def sign(self, key, method, path, *args, **kwargs):
            private.append((method, path))
            return SignedRequest(method, path)

        def close(self):
            pass

    exchange = agent_exchange(exchange_id, "k", client=Recorder())
    exchange.fetch = lambda url, method="GET", headers=None, body=None: {}
    try:
        exchange.load_markets()
    except Exception:  # noqa: BLE001 - empty responses; what matters is which private calls were asked
        pass
    assert sorted(set(private)) == sorted(LOAD_MARKETS_PRIVATE.get(exchange_id, [])), exchange_id
    assert module.PLACEHOLDER and set(AUTOMATIC_OFF) <= set(BRIDGES)
