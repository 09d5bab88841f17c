"""Deployment: the systemd units in deploy/ pass `systemd-analyze verify` and keep their hardening, the sysusers
file makes the user they run as, the deploy config matches the unit's directories, and the agent serves, reloads
and stops as the unit expects, under the kernel's W^X switch (what MemoryDenyWriteExecute= asks for)."""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.server import GRACE_SECONDS
from support.deploy import Env, run_cli, start_agent
from support.leaks import new_secret

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ["signing-agent.service", "signing-agent-audit-rotate.service", "signing-agent-audit-rotate.timer"]
INSTALLED = "/opt/signing-agent/venv/bin/signing-agent"  # where the units expect the agent (README, Deployment)


def unit(name: str) -> dict[str, list[str]]:
    """KEY -> its values, in order, over the unit's sections (systemd allows a key more than once)."""
    keys: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package systemd; `make test` installs it)")
    return path


def test_units_pass_systemd_analyze_verify(tmp_path: Path):
    analyze = tool("systemd-analyze")
    agent = Path(sys.executable).with_name("signing-agent")  # this venv's console script stands in for /opt's
    assert agent.exists(), "make deps installs the signing-agent console script"
    for name in UNITS:
        (tmp_path / name).write_text((DEPLOY / name).read_text().replace(INSTALLED, str(agent)))
    # Runs without a running systemd (no D-Bus, no PID 1): it parses each unit and checks its commands.
    proc = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_service_exposure_is_low(tmp_path: Path):
    analyze = tool("systemd-analyze")
    (tmp_path / UNITS[0]).write_text((DEPLOY / UNITS[0]).read_text())
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(tmp_path / UNITS[0])],
                          capture_output=True, text=True, timeout=60)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m[1]) <= 1.5, proc.stdout  # 1.2 when written; 10 is an unhardened service


def test_service_hardening_and_lifecycle_settings():
    u = unit("signing-agent.service")
    one = {k: v[-1] for k, v in u.items()}
    expected = {
        "User": "signing-agent", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "UMask": "0077", "LimitCORE": "0",
        "MemoryDenyWriteExecute": "yes", "RestrictAddressFamilies": "AF_UNIX", "RuntimeDirectory": "signing-agent",
        "RuntimeDirectoryMode": "0700", "StateDirectory": "signing-agent", "LogsDirectory": "signing-agent",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
    }
    assert {k: one.get(k) for k in expected} == expected
    assert u["SystemCallFilter"][0] == "@system-service" and u["SystemCallFilter"][1].startswith("~")
    assert "ReadWritePaths" not in u  # the three managed directories are the only writable ones
    # Reload is SIGHUP (the agent re-reads policy and bots); stop waits past the agent's grace.
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert float(one["TimeoutStopSec"]) >= 2 * GRACE_SECONDS
    assert one["ExecStart"] == f"{INSTALLED} --config /etc/signing-agent/signing-agent.toml serve"

    rotate = unit("signing-agent-audit-rotate.service")
    assert rotate["User"] == ["signing-agent"] and rotate["ReadWritePaths"] == ["/var/log/signing-agent"]
    assert rotate["ExecStart"][0].startswith(f"{INSTALLED} --config /etc/signing-agent/signing-agent.toml audit rotate")
    assert unit("signing-agent-audit-rotate.timer")["OnCalendar"] == ["daily"]


def test_deploy_config_lives_in_the_units_directories():
    from agent.config import load_config

    c = load_config(DEPLOY / "signing-agent.toml")
    assert c.server.socket.parent == Path("/run/signing-agent")  # RuntimeDirectory
    assert c.state_dir.is_relative_to("/var/lib/signing-agent")  # StateDirectory
    assert c.audit_file.parent == Path("/var/log/signing-agent")  # LogsDirectory (and the rotation's ReadWritePaths)
    assert Path(c.token.env["SOFTHSM2_CONF"]).is_relative_to("/var/lib/signing-agent")  # the token's files: writable
    assert c.token.pin_file.is_relative_to("/var/lib/signing-agent/softhsm")  # where token init-softhsm writes it
    for path in (c.policy_file, c.bots_file):
        assert path.is_relative_to("/etc/signing-agent")  # read-only under ProtectSystem=strict: the agent only reads
    assert c.server.tcp is None and c.metrics_listen is None  # AF_UNIX only, as the unit restricts


def test_sysusers_creates_the_units_user(tmp_path: Path):
    sysusers = tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    proc = subprocess.run([sysusers, f"--root={tmp_path}", str(DEPLOY / "signing-agent.sysusers")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (entry,) = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                if line.startswith("signing-agent:")]
    assert entry[5] == "/var/lib/signing-agent" and entry[6] == "/usr/sbin/nologin"


def test_logrotate_snippet_is_for_the_log_only():
    text = (DEPLOY / "logrotate" / "signing-agent").read_text()
    rules = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "/var/log/signing-agent/agent.log {" in rules and "copytruncate" in rules
    assert "audit" not in rules  # the audit log is rotated by `signing-agent audit rotate` only
    logrotate = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")
    if logrotate:
        proc = subprocess.run([logrotate, "--debug", str(DEPLOY / "logrotate" / "signing-agent")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "error" not in proc.stderr.lower(), proc.stderr


PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
# The agent, started under PR_SET_MDWE (Linux 6.3+): no mapping may be or become writable and executable,
# inherited across fork and execve. systemd's MemoryDenyWriteExecute= enforces the same (with seccomp or this).
MDWE_AGENT = (
    sys.executable, "-c",
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit(f'PR_SET_MDWE: {os.strerror(ctypes.get_errno())}')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'agent', *sys.argv[1:]])\n",
)


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0


@pytest.mark.e2e
def test_agent_signs_reloads_and_stops_under_memory_deny_write_execute(env: Env, label: str):
    if not _mdwe_supported():
        pytest.skip("the kernel has no PR_SET_MDWE (Linux < 6.3): MemoryDenyWriteExecute= is not exercised here")
    secret = new_secret(64)
    assert run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AKID-mdwe",
                   stdin=secret + "\n").returncode == 0
    config = env.write_config("mdwe")
    agent = start_agent(env, config, command=MDWE_AGENT)
    try:
        request = {"method": "POST", "path": "/api/v3/order",
                   "body": {"timestamp": int(time.time() * 1000), "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                            "timeInForce": "GTC", "quantity": "0.001", "price": "50000"}}
        signed = json.loads(run_cli(env, "sign", "--key", label, stdin=json.dumps(request), config=config,
                                    check=True).stdout)
        assert "signature=" in signed["path"] or "signature=" in signed.get("body", "")
        agent.proc.send_signal(signal.SIGHUP)  # ExecReload
        deadline = time.monotonic() + 10
        while "policy.reloaded" not in agent.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "policy.reloaded" in agent.log.read_text()
        started = time.monotonic()
        assert agent.stop(timeout=float(unit("signing-agent.service")["TimeoutStopSec"][0])) == 0, agent.log.read_text()
        assert time.monotonic() - started < GRACE_SECONDS + 5
    finally:
        agent.stop(signal.SIGKILL)
