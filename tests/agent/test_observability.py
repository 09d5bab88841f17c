"""Health and metrics of the real agent: the gRPC health service follows the token (Check for anyone,
Watch for bots), and Prometheus metrics count signatures by exchange and outcome, refusals by rule, and latency."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signing_agent_client.client import AgentUnavailableError, RefusedError, SignerClient
from support.agent_io import free_port, scrape
from support.deploy import TEST_BOT_TOKEN, make_env, run_cli, start_agent
from support.leaks import new_secret

pytestmark = pytest.mark.e2e


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for_status(target: str, wanted: int, timeout: float = 3.0) -> float:
    started = time.monotonic()
    while health_status(target) != wanted:
        assert time.monotonic() - started < timeout, f"health did not become {wanted} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_health_follows_the_token_and_metrics_count_decisions(tmp_path_factory, label: str):
    env = make_env(tmp_path_factory, "observe")
    port = free_port()
    config = env.write_config("observe", extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "id", "--type", "hmac",
            stdin=new_secret(64) + "\n", config=config, check=True)
    agent = start_agent(env, config)
    tokens, hidden = env.root / "softhsm" / "tokens", env.root / "softhsm" / "tokens.hidden"
    try:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health_status(agent.target) == serving
        assert health_status(agent.target, "signing_agent.v1.Signer") == serving
        watch_channel = grpc.insecure_channel(agent.target)
        watch_stub = health_pb2_grpc.HealthStub(watch_channel)
        with pytest.raises(grpc.RpcError) as refused:  # a stream held open: for bots, not for anyone
            next(watch_stub.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and "use Check" in refused.value.details()
        watch = watch_stub.Watch(health_pb2.HealthCheckRequest(), timeout=60,
                                 metadata=(("authorization", f"Bearer {TEST_BOT_TOKEN}"),))
        assert next(watch).status == serving
        with SignerClient(agent.target) as client:
            for _ in range(3):
                client.sign(label, "GET", "/api/v3/account")
            with pytest.raises(RefusedError):
                client.sign(label, "POST", "/sapi/v1/capital/withdraw/apply",
                            body={"coin": "USDT", "address": "x", "amount": "1"})
            metrics = scrape(port)
            assert metrics['signing_agent_sign_total{exchange="binance",outcome="signed"}'] == 3
            assert metrics['signing_agent_refusals_total{rule="forbidden:withdrawal"}'] == 1
            assert metrics["signing_agent_sign_latency_seconds_count"] == 4
            assert metrics["signing_agent_token_up"] == 1

            tokens.rename(hidden)  # the token vanishes under the running agent
            try:
                wait_for_status(agent.target, health_pb2.HealthCheckResponse.NOT_SERVING)
                assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # pushed to the bot
                assert scrape(port)["signing_agent_token_up"] == 0
                with pytest.raises(AgentUnavailableError):
                    client.sign(label, "GET", "/api/v3/account")
            finally:
                hidden.rename(tokens)
            # It comes back by itself: no request needed for health to recover.
            wait_for_status(agent.target, serving)
            assert next(watch).status == serving
            watch.cancel()
            watch_channel.close()
            assert scrape(port)["signing_agent_token_up"] == 1
            assert "signature=" in client.sign(label, "GET", "/api/v3/account").path
    finally:
        assert agent.stop() == 0
    log = agent.log.read_text()
    assert '"token.status"' in log and '"up": false' in log
