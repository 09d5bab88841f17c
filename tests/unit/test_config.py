"""Config file: paths relative to the file, PIN sources, safe defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_tcp

BASE = """
[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "t"
{pin}
[token.env]
SOFTHSM2_CONF = "softhsm/softhsm2.conf"
{server}
"""


def write(tmp_path: Path, pin: str = 'pin_file = "user.pin"', server: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(BASE.format(pin=pin, server=server))
    return path


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir("/")
    config = load_config(write(tmp_path))
    assert config.token.pin_file == tmp_path / "user.pin"
    assert config.token.env["SOFTHSM2_CONF"] == str(tmp_path / "softhsm/softhsm2.conf")
    assert config.server.socket == tmp_path / "run/agent.sock" and config.server.tcp is None


def test_pin_file_must_be_private(tmp_path: Path):
    config = load_config(write(tmp_path))
    pin = tmp_path / "user.pin"
    pin.write_text("1234\n")
    pin.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        config.token.read_pin()
    pin.chmod(0o600)
    assert config.token.read_pin() == "1234"


def test_pin_from_named_environment_variable(tmp_path: Path, monkeypatch):
    config = load_config(write(tmp_path, pin='pin_env = "TEST_AGENT_PIN"'))
    monkeypatch.delenv("TEST_AGENT_PIN", raising=False)
    with pytest.raises(ConfigError, match="TEST_AGENT_PIN is empty"):
        config.token.read_pin()
    monkeypatch.setenv("TEST_AGENT_PIN", "5678")
    assert config.token.read_pin() == "5678"


@pytest.mark.parametrize(
    "pin,message",
    [
        ('pin = "1234"', "never written in the config"),
        ("", "exactly one of"),
        ('pin_file = "a"\npin_env = "B"', "exactly one of"),
    ],
)
def test_pin_in_config_or_ambiguous_source_is_refused(tmp_path: Path, pin: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, pin=pin))


def test_missing_and_malformed_files_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[token\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("value", ["0.0.0.0:5000", "10.1.2.3:5000", "[::]:5000", "example.com:5000"])
def test_tcp_outside_loopback_is_refused(value: str):
    with pytest.raises(ConfigError):
        parse_tcp(value)


@pytest.mark.parametrize("value,target", [("127.0.0.1:5000", "127.0.0.1:5000"), ("localhost:7", "127.0.0.1:7"),
                                          ("[::1]:5000", "[::1]:5000")])
def test_tcp_on_loopback_is_accepted(value: str, target: str):
    assert parse_tcp(value).target == target


def test_budget_charges_are_synced_unless_the_operator_turns_it_off(tmp_path: Path):
    assert load_config(write(tmp_path)).sync_budgets is True  # the safe default: a host crash forgets nothing
    assert load_config(write(tmp_path, server="[state]\nsync_budgets = false\n")).sync_budgets is False
    with pytest.raises(ConfigError, match="sync_budgets.*true or false"):
        load_config(write(tmp_path, server='[state]\nsync_budgets = "no"\n'))
