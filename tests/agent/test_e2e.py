"""End to end: the real agent process, keys imported with the CLI, requests signed through
the CLI and the Python client exactly as a bot would, checked against ccxt's own sign()."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from signing_agent_client.client import InvalidRequestError, KeyNotFoundError, SignerClient
from support.deploy import Env, import_key, make_env, run_cli, start_agent
from support.reference import ccxt_binance
from support.leaks import new_secret

pytestmark = pytest.mark.e2e


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000", "newClientOrderId": "e2e-1"}


def test_import_then_sign_through_cli_and_client_equals_ccxt(env: Env, agent, label: str):
    secret = new_secret(64)
    proc = import_key(env, label, secret)
    assert proc.returncode == 0, proc.stderr
    assert "fingerprint" in proc.stdout

    listed = json.loads(run_cli(env, "keys", "list", "--json", check=True).stdout)
    (info,) = [k for k in listed if k["label"] == label]
    assert info["exchange"] == "binance" and info["api_key"] == "AKID-e2e" and info["key_type"] == "hmac"
    assert set(info) == {"label", "exchange", "api_key", "key_type", "created", "fingerprint", "options",
                         "has_passphrase", "registered", "storage"}

    # CLI, with the caller's timestamp: byte-identical to ccxt.
    now_ms = int(time.time() * 1000)
    request = {"method": "POST", "path": "/api/v3/order",
               "body": [("timestamp", now_ms)] + list(ORDER.items())}
    stdin = json.dumps({**request, "body": dict(request["body"])})
    out = run_cli(env, "sign", "--key", label, stdin=stdin, check=True)
    signed = json.loads(out.stdout)
    expected = ccxt_binance(secret, "AKID-e2e", now_ms).sign("order", ["private"], "POST", dict(ORDER))
    assert "https://api.binance.com" + signed["path"] == expected["url"]
    assert signed["body"] == expected["body"]
    assert signed["headers"] == expected["headers"]

    # Python client, timestamp set by the agent: ccxt with that timestamp agrees.
    with SignerClient(agent.target) as client:
        before = int(time.time() * 1000)
        got = client.sign(label, "GET", "/api/v3/openOrders", query={"symbol": "BTCUSDT"})
        after = int(time.time() * 1000)
    stamp = int(re.search(r"timestamp=(\d+)", got.path).group(1))
    assert before - 5 <= stamp <= after + 5
    expected = ccxt_binance(secret, "AKID-e2e", stamp).sign("openOrders", ["private"], "GET", {"symbol": "BTCUSDT"})
    assert "https://api.binance.com" + got.path == expected["url"]
    assert got.headers_dict() == expected["headers"] and got.body == ""


@pytest.mark.parametrize("length", [8, 20, 32, 48, 63, 64, 65, 100, 128])
def test_secret_lengths_sign_right_through_the_agent(env: Env, agent, label: str, length: int):
    secret = new_secret(length)
    assert import_key(env, label, secret).returncode == 0
    with SignerClient(agent.target) as client:
        got = client.sign(label, "GET", "/api/v3/account", query={"timestamp": "1700000000000"})
    expected = ccxt_binance(secret, "AKID-e2e", 1700000000000).sign("account", ["private"], "GET", {})
    assert "https://api.binance.com" + got.path == expected["url"]


def test_revocation_takes_effect_on_the_running_agent_within_one_second(env: Env, agent, label: str):
    assert import_key(env, label, new_secret(64)).returncode == 0
    with SignerClient(agent.target) as client:
        client.sign(label, "GET", "/api/v3/account")  # cached in the agent now
        assert run_cli(env, "keys", "revoke", "--label", label).returncode == 0
        revoked_at = time.monotonic()
        while True:
            try:
                client.sign(label, "GET", "/api/v3/account")
            except KeyNotFoundError as exc:
                assert label in exc.message
                break
            assert time.monotonic() - revoked_at < 1.0, "agent still signs with a revoked key"
            time.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.0


def test_rotation_under_the_same_label_uses_the_new_key(env: Env, agent, label: str):
    old, new = new_secret(64), new_secret(64)
    assert import_key(env, label, old, api_key="AK-old").returncode == 0
    with SignerClient(agent.target) as client:
        client.sign(label, "GET", "/api/v3/account")
        assert run_cli(env, "keys", "revoke", "--label", label).returncode == 0
        assert import_key(env, label, new, api_key="AK-new").returncode == 0
        got = client.sign(label, "GET", "/api/v3/account", query={"timestamp": "1"})
    expected = ccxt_binance(new, "AK-new", 1).sign("account", ["private"], "GET", {})
    assert "https://api.binance.com" + got.path == expected["url"] and got.headers_dict() == expected["headers"]


def test_unknown_key_is_not_found_and_bad_request_is_invalid_argument(env: Env, agent, label: str):
    with SignerClient(agent.target) as client:
        with pytest.raises(KeyNotFoundError, match="no key labelled"):
            client.sign("no-such-key", "GET", "/api/v3/account")
        assert import_key(env, label, new_secret(64)).returncode == 0
        with pytest.raises(InvalidRequestError, match="method"):
            client.sign(label, "FETCH", "/api/v3/account")
        with pytest.raises(InvalidRequestError, match="signature"):
            client.sign(label, "GET", "/api/v3/account", query={"signature": "forged"})
        with pytest.raises(InvalidRequestError, match="key"):
            client.sign("../etc/passwd", "GET", "/api/v3/account")
    cli = run_cli(env, "sign", "--key", "no-such-key", stdin='{"method": "GET", "path": "/api/v3/account"}')
    assert cli.returncode == 1 and "NOT_FOUND" in cli.stderr
    cli = run_cli(env, "sign", "--key", label, stdin='{"method": "GET"')
    assert cli.returncode == 1 and "not valid" in cli.stderr


def test_cli_import_refuses_existing_label_and_malformed_secret(env: Env, agent, label: str):
    secret = new_secret(64)
    assert import_key(env, label, secret).returncode == 0
    again = import_key(env, label, new_secret(64))
    assert again.returncode == 1 and "exists" in again.stderr
    bad = import_key(env, label + "x", "two words here ok")
    assert bad.returncode == 1 and "spaces" in bad.stderr
    empty = import_key(env, label + "y", "")
    assert empty.returncode == 1 and "empty" in empty.stderr
    labels = [k["label"] for k in json.loads(run_cli(env, "keys", "list", "--json", check=True).stdout)]
    assert label in labels and label + "x" not in labels and label + "y" not in labels
    with SignerClient(agent.target) as client:  # the original key still signs with the original secret
        got = client.sign(label, "GET", "/api/v3/account", query={"timestamp": "1"})
    assert got.path == ccxt_binance(secret, "AKID-e2e", 1).sign("account", ["private"], "GET", {})["url"][23:]


def test_socket_is_private_and_logs_are_json_decisions(env: Env, agent, label: str):
    mode = os.stat(agent.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(agent.socket.parent).st_mode) == 0o700
    assert import_key(env, label, new_secret(64)).returncode == 0
    with SignerClient(agent.target) as client:
        client.sign(label, "GET", "/api/v3/account")
        with pytest.raises(KeyNotFoundError):
            client.sign(label + "-missing", "GET", "/api/v3/account")
    time.sleep(0.2)
    events = [json.loads(line) for line in agent.log.read_text().splitlines() if line.startswith("{")]
    decisions = [e for e in events if e["event"] == "sign" and e["key"] in (label, label + "-missing")]
    assert [d["decision"] for d in decisions] == ["signed", "refused"]
    assert decisions[1]["status"] == "NOT_FOUND"
    assert all("signature" not in json.dumps(d) for d in decisions)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_is_opt_in_and_loopback_only(env: Env, label: str):
    config = env.write_config("tcp")
    refused = run_cli(env, "serve", "--tcp", "0.0.0.0:50999", "--tcp-plaintext", config=config)
    assert refused.returncode == 2 and "loopback" in refused.stderr
    port = free_port()
    agent = start_agent(env, config, "--tcp", f"127.0.0.1:{port}", "--tcp-plaintext")
    try:
        assert import_key(env, label, new_secret(64)).returncode == 0
        with SignerClient(f"127.0.0.1:{port}") as client:
            assert "signature=" in client.sign(label, "GET", "/api/v3/account").path
    finally:
        assert agent.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    "case,expected_code,message",
    [
        ("wrong-pin", 3, "rejected the PIN"),
        ("missing-module", 4, "does not exist"),
        ("missing-token", 4, "no token labelled"),
        ("open-pin-file", 2, "chmod 600"),
    ],
)
def test_startup_failures_are_clear_and_non_zero(env: Env, case: str, expected_code: int, message: str):
    if case == "wrong-pin":
        config = env.write_config("wrongpin", pin="not-the-pin")
    elif case == "missing-module":
        config = env.write_config("nomodule")
        config.write_text(config.read_text().replace("libsofthsm2.so", "libmissing.so"))
    elif case == "missing-token":
        config = env.write_config("notoken", label="no-such-token")
    else:
        config = env.write_config("openpin", pin="whatever")
        (env.root / "openpin.pin").chmod(0o644)
    proc = run_cli(env, "serve", config=config)
    assert proc.returncode == expected_code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_second_agent_on_the_same_socket_is_refused(env: Env, agent):
    proc = run_cli(env, "serve")
    assert proc.returncode == 2 and "already serving" in proc.stderr


def test_token_unreachable_is_unavailable_and_the_agent_recovers_by_itself(tmp_path_factory, label: str):
    """The token's files vanish under a running agent, then come back: UNAVAILABLE, then signing again."""
    from signing_agent_client.client import AgentUnavailableError

    env = make_env(tmp_path_factory, "vanish")  # its own token: other tests keep theirs
    config = env.config
    assert import_key(env, label, new_secret(64)).returncode == 0
    agent = start_agent(env, config)
    tokens = env.root / "softhsm" / "tokens"
    hidden = env.root / "softhsm" / "tokens.hidden"
    try:
        with SignerClient(agent.target) as client:
            client.sign(label, "GET", "/api/v3/account")
            tokens.rename(hidden)
            try:
                with pytest.raises(AgentUnavailableError, match="unreachable"):
                    client.sign(label, "GET", "/api/v3/account")
                with pytest.raises(AgentUnavailableError):
                    client.sign(label, "GET", "/api/v3/account")
            finally:
                hidden.rename(tokens)
            got = client.sign(label, "GET", "/api/v3/account", query={"timestamp": "1"})
            assert "signature=" in got.path
    finally:
        assert agent.stop() == 0


def test_import_at_a_terminal_does_not_echo_the_secret(env: Env, label: str):
    """At a terminal the secret is prompted for without echo; the terminal transcript never shows it."""
    import pty
    import select
    import sys

    secret = new_secret(64)
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI, with the pty as its controlling terminal
        os.chdir(env.root)
        os.execv(sys.executable, [sys.executable, "-m", "agent", "--config", str(env.config), "keys", "import",
                                  "--label", label, "--exchange", "binance", "--api-key", "AKID-tty"])
    transcript = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while marker not in transcript and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    transcript += os.read(fd, 4096)
                except OSError:
                    return

    read_until(b"Secret: ")
    assert b"Secret: " in transcript
    os.write(fd, secret.encode() + b"\n")
    read_until(b"fingerprint")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    (env.logs / f"tty-{label}.out").write_bytes(transcript)  # scanned by the leak guard too
    assert os.waitstatus_to_exitcode(status) == 0, transcript.decode(errors="replace")
    assert secret.encode() not in transcript
    assert label in [k["label"] for k in json.loads(run_cli(env, "keys", "list", "--json", check=True).stdout)]


@pytest.mark.parametrize(
    "stdin,message",
    [
        ("[1]", "must be an object"),
        ('[["method", "GET"]]', "must be an object"),
        ('{"method": "GET", "path": "/x", "query": [1]}', "'query' must be an object"),
        ('{"method": "GET", "path": "/x", "query": {"a": null}}', "string, number or boolean"),
        ('{"method": "GET", "path": "/x", "query": {"a": {"b": 1}}}', "string, number or boolean"),
        ('{"method": "GET", "path": "/x", "query": {"a": 1, "a": 2}}', "appears twice"),
        ('{"method": "GET", "path": "/x", "query": {"a": NaN}}', "not a valid value"),
        ('{"method": "GET", "path": "/x", "extra": 1}', "unknown field"),
        ("[" * 100_000, "not valid"),
        (b"\xff\xfe".decode("latin-1"), "not UTF-8"),
    ],
)
def test_cli_sign_refuses_malformed_json_clearly(env: Env, agent, stdin: str, message: str):
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(env.config), "sign", "--key", "k"],
        input=stdin.encode("latin-1") if "\xff" in stdin else stdin.encode(), capture_output=True, timeout=60,
        cwd=env.root,
    )
    assert proc.returncode == 1
    assert message in proc.stderr.decode() and b"Traceback" not in proc.stderr


def test_malformed_labels_and_methods_are_invalid_argument(env: Env, agent, label: str):
    assert import_key(env, label, new_secret(64)).returncode == 0
    newline = import_key(env, label + "\n", new_secret(64))
    assert newline.returncode == 2 and "label" in newline.stderr
    with SignerClient(agent.target) as client:
        for bad_label in (label + "\n", "", "x" * 65):
            with pytest.raises(InvalidRequestError, match="key"):
                client.sign(bad_label, "GET", "/api/v3/account")
        with pytest.raises(InvalidRequestError, match="method"):
            client.sign(label, "X" * 100_000, "/api/v3/account")
        with pytest.raises(InvalidRequestError, match="query only"):
            client.sign(label, "GET", "/api/v3/account", body={"a": "1"})
