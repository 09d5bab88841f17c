"""`signing-agent serve --workers N`: several agent processes, each with its own module instance and
session, behind one round-robin client channel; SIGTERM stops them all with exit 0."""

from __future__ import annotations

import signal
import time

import pytest

from signing_agent_client.client import SignerClient
from agent.workers import unix_target, worker_socket
from support.deploy import Env, run_cli, start_agent
from support.leaks import new_secret
from support.agent_io import free_port, scrape

pytestmark = pytest.mark.e2e


def test_two_workers_sign_and_stop_together(env: Env, label: str):
    port = free_port()
    config = env.write_config("workers", extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "id", "--type", "hmac",
            stdin=new_secret(64) + "\n", config=config, check=True)
    agent = start_agent(env, config, "--workers", "2")
    second = worker_socket(agent.socket, 1)
    try:
        deadline = time.monotonic() + 20
        while not second.exists():
            assert time.monotonic() < deadline, "the second worker did not come up"
            time.sleep(0.05)
        for target in (f"unix://{agent.socket}", f"unix://{second}"):  # each worker signs on its own
            with SignerClient(target) as client:
                assert "signature=" in client.sign(label, "GET", "/api/v3/account").path
        with SignerClient(unix_target(agent.socket, 2)) as client:  # one channel over both
            for _ in range(20):
                assert "signature=" in client.sign(label, "GET", "/api/v3/account").path
        # The supervisor serves the sum of both workers' metrics.
        assert scrape(port)['signing_agent_sign_total{exchange="binance",outcome="signed"}'] == 22
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.log.read_text()
    assert not agent.socket.exists() and not second.exists()
    log = agent.log.read_text()
    assert log.count('"agent.ready"') == 2 and log.count('"agent.stopped"') == 2
