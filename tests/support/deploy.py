"""A test deployment: its own SoftHSM2 token, agent config, bots and policy; the CLI and the agent process.

Used by the token and agent layers (tests/token, tests/agent) through the fixtures in tests/conftest.py
(`env`, `keyring`, `agent`) or directly (make_env, run_cli, start_agent) for deployments of their own.
"""

from __future__ import annotations

import os
import secrets as _secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from support.leaks import OUTPUT_DIRS, register_secret

ROOT = Path(__file__).resolve().parents[2]
MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
TOKEN_LABEL = "test-token"

# Every deployment made here knows one test bot, granted every key under a permissive policy
# (test_guardrails.py writes strict ones). Its token reaches every client, in this process and
# in CLI subprocesses, through the variable SignerClient reads.
TEST_BOT = "test-bot"
TEST_BOT_TOKEN = f"sa1_test_{_secrets.token_urlsafe(24)}"
PERMISSIVE_POLICY = f"""
[bots.{TEST_BOT}]
keys = ["*"]

[keys."*"]
endpoints = ["* /**"]
timestamps = "any"      # the tests replay fixed instants
allow = ["session-token"]   # Deribit: every signature is also a login (the tests' bot is trusted)
"""

register_secret(TEST_BOT_TOKEN)  # a bot's bearer token is a credential too: never in any output


# -- token ------------------------------------------------------------------------


@dataclass
class Env:
    """A test deployment: token dir, agent config, and a directory for process output."""

    root: Path
    config: Path
    logs: Path

    def write_config(self, name: str, *, label: str = TOKEN_LABEL, pin: str | None = None, extra: str = "") -> Path:
        pin_line = 'pin_file = "softhsm/user.pin"'
        if pin is not None:
            pin_file = self.root / f"{name}.pin"
            pin_file.write_text(pin + "\n")
            pin_file.chmod(0o600)
            pin_line = f'pin_file = "{pin_file.name}"'
        path = self.root / f"{name}.toml"
        path.write_text(
            f'[token]\nmodule = "{MODULE}"\nlabel = "{label}"\n{pin_line}\n'
            '[token.env]\nSOFTHSM2_CONF = "softhsm/softhsm2.conf"\n'
            f'[server]\nsocket = "run/{name}.sock"\n{extra}'
        )
        return path


# How tests start `signing-agent`: this checkout's code. tests/agent/test_supply_chain.py passes the
# console script of a wheel installed in a fresh venv instead.
AGENT_COMMAND = (sys.executable, "-m", "agent")


def run_cli(env: Env, *args: str, stdin: str = "", config: Path | None = None, check: bool = False,
            command: tuple[str, ...] = AGENT_COMMAND):
    """Run `signing-agent ARGS` as a separate process, as an operator would; output is kept for the leak scan."""
    proc = subprocess.run(
        [*command, "--config", str(config or env.config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=env.root,
    )
    stamp = f"{time.monotonic_ns()}"
    (env.logs / f"cli-{stamp}.out").write_text(proc.stdout)
    (env.logs / f"cli-{stamp}.err").write_text(proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"signing-agent {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def make_env(tmp_path_factory: pytest.TempPathFactory, name: str) -> Env:
    """A deployment with its own SoftHSM2 token (its own softhsm2.conf and token directory)."""
    if not Path(MODULE).exists():
        pytest.fail(f"SoftHSM2 module {MODULE} not found: `make test` installs softhsm2")
    root = tmp_path_factory.mktemp(name)
    logs = root / "logs"
    logs.mkdir()
    OUTPUT_DIRS.append(root)  # logs/ and state/ (audit, symbol history) and the config files
    subprocess.run(
        [sys.executable, "-m", "agent", "token", "init-softhsm", "--dir", str(root / "softhsm"),
         "--label", TOKEN_LABEL, "--module", MODULE],
        check=True, capture_output=True, cwd=ROOT, timeout=60,
    )
    e = Env(root=root, config=root / "agent.toml", logs=logs)
    e.write_config("agent")
    write_bots(root / "bots.toml", {TEST_BOT: TEST_BOT_TOKEN})
    (root / "policy.toml").write_text(PERMISSIVE_POLICY)
    return e


def write_bots(path: Path, tokens: dict[str, str]) -> None:
    """A bots file holding the hashes of TOKENS (name -> token), as `signing-agent bots add` writes."""
    from agent.bots import hash_token

    path.write_text("".join(f'[bots."{name}"]\ntoken_sha256 = "{hash_token(token)}"\ncreated = "2026-11-21T00:00:00Z"\n'
                            for name, token in tokens.items()))
    path.chmod(0o600)


# -- the agent process ----------------------------------------------------------------


@dataclass
class Agent:
    proc: subprocess.Popen
    socket: Path
    log: Path

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_agent(env: Env, config: Path, *extra: str, wait: bool = True,
                command: tuple[str, ...] = AGENT_COMMAND) -> Agent:
    from agent.config import load_config

    socket = load_config(config).server.socket
    log = env.logs / f"agent-{config.stem}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [*command, "--config", str(config), "serve", *extra],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=env.root,
    )
    agent = Agent(proc=proc, socket=socket, log=log)
    if wait:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}: {log.read_text()}")
            if socket.exists():
                with grpc.insecure_channel(agent.target) as ch:
                    try:
                        grpc.channel_ready_future(ch).result(timeout=1)
                        return agent
                    except grpc.FutureTimeoutError:
                        pass
            time.sleep(0.05)
        agent.stop(signal.SIGKILL)
        raise AssertionError(f"agent did not come up: {log.read_text()}")
    return agent


def load_keyring(env: Env):
    """A keyring in this test process on ENV's token (a context manager: the session is closed on exit)."""
    from agent.config import load_config
    from agent.custody import Keyring

    return Keyring.open(load_config(env.config).token)


def import_key(env: Env, label: str, secret: str, api_key: str = "AKID-e2e", exchange: str = "binance"):
    return run_cli(env, "keys", "import", "--label", label, "--exchange", exchange, "--api-key", api_key,
                   stdin=secret + "\n")
