"""The schema helper the three TOML files are read with: unknown keys, defaults, sub-tables, and messages
that name the file, table and key without echoing a string that may be a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.bots import BotsFileError, load_bots
from agent.config import ConfigError, load_config
from agent.policy import PolicyError, parse_policy
from agent.toml_schema import INT, STR, TEXT, Field, Schema, Where, table_of


class Wrong(Exception):
    pass


WHERE = Where("f.toml", Wrong)
SUB = Schema(Field("a", TEXT, required="why"))
SCHEMA = Schema(
    Field("n", INT, default=3, low=1, high=9),
    Field("mode", STR, default="x", choices=("fast", "slow")),
    Field("env", table_of(STR), default={}),
    Field("sub", schema=SUB),
    Field("x"), Field("y"),
    one_of=[("x", "y")],
    refused={"pin": "never here"},
)


def test_defaults_conversion_and_absent_sub_tables():
    assert SCHEMA.read({"x": 1}, WHERE) == {"n": 3, "mode": "x", "env": {}, "sub": None, "x": 1, "y": None}
    assert SCHEMA.read({"y": 2, "n": 4}, WHERE, defaults={"n": 7, "mode": "slow"})["n"] == 4
    assert SCHEMA.read({"y": 2}, WHERE, defaults={"n": 7, "mode": "slow"})["mode"] == "slow"
    assert Schema(Field("sub", schema=Schema(Field("b", default=5)))).read({}, WHERE) == {"sub": {"b": 5}}


@pytest.mark.parametrize("raw,message", [
    ({"x": 1, "modes": 2}, "f.toml: [t] has unknown setting(s) ['modes'] (did you mean 'mode'?); known: "),
    ({"x": 1, "y": 1}, "f.toml: [t] needs exactly one of 'x' or 'y'"),
    ({"x": 1, "pin": "1234"}, "f.toml: [t] pin is refused: never here"),
    ({"x": 1, "n": 10}, "f.toml: [t] n must be an integer from 1 to 9, not 10"),
    ({"x": 1, "n": True}, "f.toml: [t] n must be an integer from 1 to 9, not true"),
    ({"x": 1, "mode": "fats"}, "f.toml: [t] mode must be one of 'fast', 'slow', not 'fats' (did you mean 'fast'?)"),
    ({"x": 1, "env": {"A": 1}}, "f.toml: [t.env] A must be a string, not 1"),
    ({"x": 1, "env": 2}, "f.toml: [t.env] must be a table of NAME = string, not 2"),
    ({"x": 1, "sub": {}}, "f.toml: [t.sub] 'a' is required (why)"),
    ({"x": 1, "sub": {"a": ""}}, "f.toml: [t.sub] a must be a non-empty string, not an empty string"),
    ([], "f.toml: [t] must be a table, not an array"),
])
def test_messages_name_the_place_and_what_to_write(raw, message: str):
    with pytest.raises(Wrong) as caught:
        SCHEMA.read(raw, WHERE.sub("t"))
    assert str(caught.value).startswith(message)


def test_table_names_are_written_as_in_toml():
    with pytest.raises(PolicyError, match=r'\[keys\."binance\.main"\] has unknown setting'):
        parse_policy(b'[keys."binance.main"]\nendpoints = []\nsymbol = ["A"]\n')
    with pytest.raises(PolicyError, match=r'\[keys\."\*"\] timestamp_skew_ms must be'):
        parse_policy(b'[keys."*"]\nendpoints = []\ntimestamp_skew_ms = -1\n')


def test_a_wrong_default_is_named_in_defaults():
    with pytest.raises(PolicyError, match=r"\[defaults\] max_age_days must be an integer from 1 to 3650, not 0"):
        parse_policy(b"[defaults]\nmax_age_days = 0\n[keys.k]\nendpoints = []\n")


def test_string_values_are_not_echoed(tmp_path: Path):
    """A secret pasted into the wrong key must not reach the error (and so the log)."""
    config = tmp_path / "agent.toml"
    config.write_text('[token]\nmodule = "/m"\nlabel = "t"\npin_env = "P"\n'
                      '[alerts]\nwebhook = "hxxps://hooks.example/SECRET-hook-token"\n')
    with pytest.raises(ConfigError, match=r"\[alerts\] webhook must be an http:// or https:// URL") as caught:
        load_config(config)
    assert "SECRET" not in str(caught.value)
    bots = tmp_path / "bots.toml"
    bots.write_text('[bots.a]\ntoken_sha256 = "SECRET-not-a-hash"\n')
    with pytest.raises(BotsFileError, match="64 lowercase hex digits") as caught:
        load_bots(bots)
    assert "SECRET" not in str(caught.value)


def test_unknown_config_tables_and_keys_are_refused_with_the_nearest_name(tmp_path: Path):
    config = tmp_path / "agent.toml"
    config.write_text('[token]\nmodule = "/m"\nlabel = "t"\npin_env = "P"\n[metric]\nlisten = "127.0.0.1:9"\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['metric'\] \(did you mean 'metrics'\?\)"):
        load_config(config)
    config.write_text('[token]\nmodule = "/m"\nlabel = "t"\npin_env = "P"\n[server.tls]\ncert_file = "a.pem"\n')
    with pytest.raises(ConfigError, match=r"\[server\.tls\] 'key_file' is required"):
        load_config(config)
