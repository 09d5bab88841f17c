"""SignStream against a real agent process: each message decided and audited as Sign decides it,
answered in order (sync and asyncio clients), the caller checked again when the credentials change,
streams capped per bot, and none holding the agent's stop up."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from agent.server import MAX_SIGN_STREAMS_PER_BOT
from signing_agent_client.aio import AsyncSignerClient
from signing_agent_client.client import (
    KeyNotFoundError,
    NotAuthenticatedError,
    RateLimitedError,
    RefusedError,
    SignerClient,
    SigningError,
)
from support.deploy import TEST_BOT, TEST_BOT_TOKEN, Env, import_key, make_env, start_agent, write_bots
from support.reference import ccxt_binance
from support.leaks import new_secret

pytestmark = pytest.mark.e2e

ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000", "newClientOrderId": "stream-1"}


def _sign_lines(env: Env) -> list[dict]:
    audit = env.root / "state" / "audit.jsonl"
    return [json.loads(line) for line in audit.read_text().splitlines() if '"event":"sign"' in line]


def test_each_message_is_signed_as_sign_signs_it_and_a_refusal_refuses_only_itself(env: Env, agent, label: str):
    secret = new_secret(64)
    assert import_key(env, label, secret).returncode == 0
    before, logged_before = len(_sign_lines(env)), len(_stream_log_lines(agent))
    with SignerClient(agent.target) as client, client.stream() as stream:
        for i in range(5):
            stamp = 1_700_000_000_000 + i
            got = stream.sign(label, "POST", "/api/v3/order", body=ORDER, timestamp_ms=stamp)
            expected = ccxt_binance(secret, "AKID-e2e", stamp).sign("order", ["private"], "POST", dict(ORDER))
            assert "https://api.binance.com" + got.path == expected["url"] and got.body == expected["body"]
            assert got.headers_dict() == expected["headers"]
        with pytest.raises(KeyNotFoundError):
            stream.sign(label + "-missing", "GET", "/api/v3/account")
        with pytest.raises(RefusedError, match="withdraw"):
            stream.sign(label, "POST", "/sapi/v1/capital/withdraw/apply", body={"coin": "BTC", "address": "x",
                                                                                "amount": "1"})
        after = stream.sign(label, "GET", "/api/v3/account", query={"timestamp": "1700000000000"})
    expected = ccxt_binance(secret, "AKID-e2e", 1700000000000).sign("account", ["private"], "GET", {})
    assert "https://api.binance.com" + after.path == expected["url"]
    lines = _sign_lines(env)[before:]  # one audit line per message, in order
    assert [(line["key"], line["decision"]) for line in lines] == (
        [(label, "signed")] * 5 + [(label + "-missing", "refused"), (label, "refused"), (label, "signed")])
    assert all(line["bot"] == TEST_BOT for line in lines)
    # The log pays per stream, not per message: its refusals at once, its signatures counted in a
    # sign.stream line (once a second, and when it ends).
    deadline, counts = time.monotonic() + 5, []
    while sum(c["items"] for c in counts) < 8 and time.monotonic() < deadline:  # the last line: at its end
        time.sleep(0.05)
        counts = _stream_log_lines(agent)[logged_before:]
    assert sum(c["items"] for c in counts) == 8 and sum(c["signed"] for c in counts) == 6
    assert sum(c["refused"] for c in counts) == 2 and {c["bot"] for c in counts} == {TEST_BOT}


def _stream_log_lines(agent) -> list[dict]:
    lines = [json.loads(text) for text in agent.log.read_text().splitlines() if text.startswith("{")]
    return [line for line in lines if line.get("event") == "sign.stream"]


def test_the_asyncio_client_streams_too_and_concurrent_calls_get_their_own_answers(env: Env, agent, label: str):
    secret = new_secret(64)
    assert import_key(env, label, secret).returncode == 0

    async def run() -> list:
        async with AsyncSignerClient(agent.target) as client:
            async with client.stream() as stream:
                return await asyncio.gather(*(
                    stream.sign(label, "GET", "/api/v3/account", query={"timestamp": str(1_700_000_000_000 + i)})
                    for i in range(20)))

    results = asyncio.run(run())
    for i, got in enumerate(results):
        expected = ccxt_binance(secret, "AKID-e2e", 1_700_000_000_000 + i).sign("account", ["private"], "GET", {})
        assert "https://api.binance.com" + got.path == expected["url"]


def test_a_stream_without_a_known_credential_is_refused_and_audited(env: Env, agent, label: str, tmp_path):
    token = tmp_path / "wrong.token"
    token.write_text("sa1_not_a_known_token\n")
    before = len(_sign_lines(env))
    with SignerClient(agent.target, token_file=token) as client, client.stream() as stream:
        with pytest.raises(NotAuthenticatedError):
            stream.sign(label, "GET", "/api/v3/account")
    (line,) = _sign_lines(env)[before:]
    assert line["status"] == "UNAUTHENTICATED" and line["bot"] == ""


def test_a_bot_revoked_while_its_stream_is_open_is_refused_at_its_next_request(tmp_path_factory, label: str):
    env = make_env(tmp_path_factory, "stream-revoke")
    assert import_key(env, label, new_secret(64)).returncode == 0
    agent = start_agent(env, env.config)
    try:
        with SignerClient(agent.target) as client, client.stream() as stream:
            stream.sign(label, "GET", "/api/v3/account")
            write_bots(env.root / "bots.toml", {"someone-else": TEST_BOT_TOKEN + "x"})
            revoked_at = time.monotonic()
            with pytest.raises(NotAuthenticatedError):
                while True:
                    stream.sign(label, "GET", "/api/v3/account")
                    assert time.monotonic() - revoked_at < 2.0, "a revoked bot still signs on its open stream"
                    time.sleep(0.02)
    finally:
        assert agent.stop() == 0


def test_a_bot_holds_a_bounded_number_of_streams_and_the_agent_stops_with_streams_open(
        tmp_path_factory, label: str):
    env = make_env(tmp_path_factory, "stream-cap")
    assert import_key(env, label, new_secret(64)).returncode == 0
    agent = start_agent(env, env.config)
    client = SignerClient(agent.target)
    streams = []
    try:
        for _ in range(MAX_SIGN_STREAMS_PER_BOT):
            streams.append(client.stream())
            streams[-1].sign(label, "GET", "/api/v3/account")  # open on the agent: it has answered
        extra = client.stream()
        with pytest.raises(RateLimitedError, match="MAX_SIGN_STREAMS_PER_BOT"):
            extra.sign(label, "GET", "/api/v3/account")
        streams.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the closed stream's slot is released when the agent sees its end
            again = client.stream()
            try:
                again.sign(label, "GET", "/api/v3/account")
                streams.append(again)
                break
            except RateLimitedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # Streams wait for their bot's next request; stopping cancels them rather than wait out the grace.
        started = time.monotonic()
        assert agent.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 4.0
        with pytest.raises(SigningError) as ended:
            streams[0].sign(label, "GET", "/api/v3/account")
        assert ended.value.code in ("CANCELLED", "UNAVAILABLE")
    finally:
        for stream in streams:
            stream.close()
        client.close()
        agent.stop(signal.SIGKILL)
