"""The operator's side (issue 16): each friction a new operator met, reproduced, and what it does now.

- `bots add --token-file` into a directory that does not exist printed a traceback and left the bot
  registered with a token nobody had; now the path is checked first, and it is all or nothing;
- `policy check` accepted endpoint typos, always-refused endpoints and misspelt symbols without a word;
- `policy template` could not be appended for a second key (a second `[bots.X]` table);
- `keys revoke` of a key generated in the token (unrecoverable) asked nothing;
- there was no `status` and the health probe needed a tool the README did not say how to get;
- the first run printed JSON only, with no next step;
- `make import-key` echoed the API key id;
- the live policy and config were tracked files, and `.bots.toml.lock` was left untracked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import cli
from agent.policy import load_policy, parse_policy
from agent.exchanges import EXCHANGES
from agent.policy_templates import default_policy
from support.deploy import Env, MODULE, ROOT, make_env, run_cli, start_agent
from support.leaks import new_secret

# -- a deployment without a token: the commands that need none ----------------------------------------


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A config whose token is not there (bots and policy commands need none)."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[token]\nmodule = "{MODULE}"\nlabel = "none"\npin_file = "user.pin"\n'
                      '[server]\nsocket = "run/agent.sock"\n')
    return config


def agent_cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(config), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, cwd=config.parent)


def bot_names(config: Path) -> list[str]:
    from agent.bots import list_bots

    return [b.name for b in list_bots(config.parent / "bots.toml")]


# -- 1. bots add: the token path first, all or nothing ------------------------------------------------


def test_bots_add_into_a_missing_directory_is_refused_and_registers_nothing(plain: Path, tmp_path: Path):
    # The README's own command, on a host without /home/mm-1: a traceback and a registered bot, before.
    missing = tmp_path / "home" / "mm-1" / "agent.token"
    proc = agent_cli(plain, "bots", "add", "mm-1", "--token-file", str(missing))
    assert proc.returncode == cli.EXIT_CONFIG
    assert "Traceback" not in proc.stderr
    assert f"the directory {missing.parent} does not exist" in proc.stderr and "install -d -m 700" in proc.stderr
    assert bot_names(plain) == [] and not missing.parent.exists()
    # With the directory made, the same command works.
    missing.parent.mkdir(parents=True)
    proc = agent_cli(plain, "bots", "add", "mm-1", "--token-file", str(missing))
    assert proc.returncode == 0, proc.stderr
    assert bot_names(plain) == ["mm-1"]
    assert stat.S_IMODE(missing.stat().st_mode) == 0o600 and missing.read_text().startswith("sa1_")
    assert [p.name for p in missing.parent.iterdir()] == ["agent.token"]  # no staging file left


@pytest.mark.parametrize("case", ["symlink", "dangling-symlink", "existing", "parent-is-a-file", "directory"])
def test_bots_add_refuses_a_token_path_it_cannot_use(plain: Path, tmp_path: Path, case: str):
    target = tmp_path / "bot.token"
    if case == "symlink":
        (tmp_path / "elsewhere").write_text("x")
        target.symlink_to(tmp_path / "elsewhere")
    elif case == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere")
    elif case == "existing":
        target.write_text("old\n")
    elif case == "parent-is-a-file":
        (tmp_path / "file").write_text("")
        target = tmp_path / "file" / "bot.token"
    else:
        target.mkdir()
    for extra in ([], ["--force"]):
        proc = agent_cli(plain, "bots", "add", "mm-1", "--token-file", str(target), *extra)
        if case == "existing" and extra:
            assert proc.returncode == 0, proc.stderr  # --force replaces a regular file
            assert target.read_text().startswith("sa1_") and stat.S_IMODE(target.stat().st_mode) == 0o600
            continue
        assert proc.returncode == cli.EXIT_CONFIG, proc.stderr
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr
        assert bot_names(plain) == []
    if case in ("symlink", "dangling-symlink"):
        assert "symbolic link" in proc.stderr
        assert (tmp_path / "nowhere").exists() is False


def test_a_token_that_cannot_be_written_leaves_no_bot(plain: Path, tmp_path: Path, monkeypatch, capsys):
    def disk_full(self, token: str) -> None:
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.tmp.write_text("partial")
        raise OSError(28, "No space left on device", str(self.path))

    monkeypatch.setattr(cli.StagedTokenFile, "write", disk_full)
    target = tmp_path / "bot.token"
    assert cli.main(["--config", str(plain), "bots", "add", "mm-1", "--token-file", str(target)]) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "No space left on device" in err and "was not added" in err
    assert bot_names(plain) == [] and not target.exists()
    assert not list(tmp_path.glob(".bot.token.*"))


def test_a_token_file_that_cannot_be_put_in_place_unregisters_the_bot(plain: Path, tmp_path: Path, monkeypatch):
    def taken(self) -> None:
        raise FileExistsError(17, "File exists", str(self.path))

    monkeypatch.setattr(cli.StagedTokenFile, "commit", taken)
    target = tmp_path / "bot.token"
    assert cli.main(["--config", str(plain), "bots", "add", "mm-1", "--token-file", str(target)]) == cli.EXIT_REFUSED
    assert bot_names(plain) == [] and not list(tmp_path.glob(".bot.token.*"))


# -- 2. policy check: warnings about what cannot work -------------------------------------------------

from agent import policy_lint  # noqa: E402 - each section of this file imports what it tests

TYPOS = b"""
[keys.k]
endpoints = ["POST /api/v3/orders", "GET /api/v3/account", "POST /sapi/v1/capital/withdraw/apply",
             "GET /api/v3/openOrders", "* /api/v3/**"]
symbols = ["BTCUSTD", "BTC/USDT", "ETHUSDT"]
"""


def test_policy_lint_names_typos_refused_endpoints_and_symbols():
    report = policy_lint.lint(parse_policy(TYPOS), {"k": "binance"},
                              markets={"binance": frozenset({"BTCUSDT", "ETHUSDT"})})
    text = "\n".join(report.warnings)
    assert len(report.warnings) == 4, text
    assert "'POST /api/v3/orders' is not a private endpoint of binance" in text
    assert "did you mean 'POST /api/v3/order'?" in text
    assert "'POST /sapi/v1/capital/withdraw/apply' is always refused" in text and "'withdrawal'" in text
    assert "remove it from `endpoints`" in text
    assert "'BTC/USDT' is ccxt's unified form" in text
    assert "'BTCUSTD' is not a binance market" in text and "did you mean 'BTCUSDT'?" in text
    assert report.notes == []


def test_an_allowed_category_is_not_always_refused():
    policy = parse_policy(b'[keys.k]\nendpoints = ["POST /sapi/v1/capital/withdraw/apply"]\nallow = ["withdrawal"]\n')
    assert policy_lint.lint(policy, {"k": "binance"}).warnings == []


def test_policy_lint_says_what_it_skipped():
    policy = parse_policy(TYPOS + b'[keys.other]\nendpoints = []\n')
    report = policy_lint.lint(policy, {"k": "binance"}, use_ccxt=False)
    # Without ccxt: no endpoint catalogue, so the typo passes, but the refused endpoint is still named.
    assert not any("orders" in w for w in report.warnings)
    assert any("always refused" in w for w in report.warnings)
    notes = "\n".join(report.notes)
    assert "ccxt is not installed" in notes
    assert "symbols of binance keys not checked against its markets" in notes and "--markets binance=FILE" in notes
    assert "exchange checks skipped for 'other'" in notes and "--exchange LABEL=EXCHANGE" in notes


@pytest.mark.parametrize("exchange", sorted(EXCHANGES))
def test_every_template_is_clean(exchange: str):
    report = policy_lint.lint(parse_policy(default_policy(exchange, "k", bot="b").encode()), {"k": exchange})
    if EXCHANGES[exchange].rules.signature_is_login is None:
        assert report.warnings == []
    else:  # Deribit: every request waits for `session-token`, which the template asks to allow knowingly
        assert report.warnings and all("session-token" in w for w in report.warnings)


def test_policy_check_warns_with_exit_status_0(plain: Path, tmp_path: Path):
    policy = tmp_path / "new-policy.toml"
    policy.write_bytes(TYPOS)
    markets = tmp_path / "markets.json"
    markets.write_text(json.dumps({"BTC/USDT": {"id": "BTCUSDT"}, "ETH/USDT": {"id": "ETHUSDT"}}))  # ccxt's markets
    proc = agent_cli(plain, "policy", "check", "--file", str(policy), "--exchange", "k=binance",
                     "--markets", f"binance={markets}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning:") == 4 and "did you mean 'POST /api/v3/order'?" in proc.stderr
    assert "4 warnings above" in proc.stdout
    # A refused file still fails.
    policy.write_text('[keys.k]\nendpoints = ["FETCH /x"]\n')
    assert agent_cli(plain, "policy", "check", "--file", str(policy)).returncode == 1


def test_policy_check_reads_each_keys_exchange_from_the_token(env: Env, label: str, tmp_path: Path):
    imported = run_cli(env, "keys", "import", "--label", label, "--exchange", "okx", "--api-key", "AK-lint",
                       stdin=f"{new_secret(32)}\n{new_secret(12)}\n")
    assert imported.returncode == 0, imported.stderr
    policy = tmp_path / "p.toml"
    policy.write_text(f'[keys.{label}]\nendpoints = ["POST /api/v5/trade/orders", "POST /api/v5/asset/withdrawal"]\n')
    proc = run_cli(env, "policy", "check", "--file", str(policy))
    assert proc.returncode == 0, proc.stderr
    assert "not a private endpoint of okx" in proc.stderr and "'POST /api/v5/trade/order'" in proc.stderr
    assert "'POST /api/v5/asset/withdrawal' is always refused" in proc.stderr
    assert run_cli(env, "keys", "revoke", "--label", label).returncode == 0


# -- 3. policy template --merge ----------------------------------------------------------------------

from agent.policy_merge import MergeError, merged_text  # noqa: E402

EXISTING = """# the operator's policy
[defaults]
max_age_days = 90

[bots.mm-1]   # the market maker
keys = [
  "binance-main",   # spot
]
rate_per_second = 5

[keys.binance-main]
endpoints = ["GET /api/v3/account"]
"""


def test_merge_adds_the_key_to_the_bots_existing_table():
    text, done = merged_text(EXISTING, "okx", "okx-main", "mm-1")
    policy = parse_policy(text.encode())  # one [bots.mm-1] table: valid TOML
    assert text.count("[bots.") == 1 and "# the operator's policy" in text and "# the market maker" in text
    assert policy.bots["mm-1"].keys == frozenset({"binance-main", "okx-main"})
    assert policy.bots["mm-1"].rate_per_second == 5
    assert set(policy.keys) == {"binance-main", "okx-main"} and "mm-1 may use binance-main, okx-main" in done.replace("'", "")
    # A second bot gets a table of its own.
    text, _ = merged_text(text, "kraken", "kr-main", "hedger")
    assert parse_policy(text.encode()).bots["hedger"].keys == frozenset({"kr-main"})


def test_merge_leaves_a_bot_with_every_key_alone_and_refuses_an_existing_key():
    text, done = merged_text('[bots.b]\nkeys = ["*"]\n', "binance", "k", "b")
    assert parse_policy(text.encode()).bots["b"].keys == frozenset({"*"}) and "every key" in done
    with pytest.raises(MergeError, match="already has a table for key 'binance-main'"):
        merged_text(EXISTING, "binance", "binance-main", "mm-1")


def test_merge_writes_in_one_step_and_never_a_refused_file(plain: Path, tmp_path: Path):
    policy = tmp_path / "policy.toml"
    policy.write_text(EXISTING)
    policy.chmod(0o640)
    proc = agent_cli(plain, "policy", "template", "--exchange", "okx", "--key", "okx-main", "--bot", "mm-1",
                     "--merge", str(policy))
    assert proc.returncode == 0, proc.stderr
    assert load_policy(policy).bots["mm-1"].may_use("okx-main") and stat.S_IMODE(policy.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    before = policy.read_text()
    again = agent_cli(plain, "policy", "template", "--exchange", "okx", "--key", "okx-main", "--bot", "mm-1",
                      "--merge", str(policy))
    assert again.returncode == 1 and "already has a table" in again.stderr and policy.read_text() == before
    broken = tmp_path / "broken.toml"
    broken.write_text("[keys.x]\nendpoints = 1\n")
    refused = agent_cli(plain, "policy", "template", "--exchange", "okx", "--key", "k", "--merge", str(broken))
    assert refused.returncode == 1 and "fix it first" in refused.stderr
    assert broken.read_text() == "[keys.x]\nendpoints = 1\n"
    fresh = tmp_path / "new.toml"  # a missing file is created
    assert agent_cli(plain, "policy", "template", "--exchange", "kraken", "--key", "k", "--bot", "b",
                     "--merge", str(fresh)).returncode == 0
    assert load_policy(fresh).bots["b"].may_use("k")


# -- 4. keys revoke of a key generated in the token ---------------------------------------------------


def test_revoking_a_generated_key_needs_confirmation(env: Env, label: str):
    generated = run_cli(env, "keys", "generate", "--label", label, "--exchange", "binance", "--type", "ed25519")
    assert generated.returncode == 0, generated.stderr
    refused = run_cli(env, "keys", "revoke", "--label", label)  # stdin is not a terminal
    assert refused.returncode == cli.EXIT_CONFIG
    assert "generated inside the token" in refused.stderr and "--yes" in refused.stderr
    listed = json.loads(run_cli(env, "keys", "list", "--json").stdout)
    assert [k["label"] for k in listed if k["label"] == label] == [label]
    assert run_cli(env, "keys", "revoke", "--label", label, "--yes").returncode == 0
    assert label not in run_cli(env, "keys", "list").stdout


def test_revoking_an_imported_key_asks_nothing(env: Env, label: str):
    imported = run_cli(env, "keys", "import", "--label", label, "--exchange", "binance", "--api-key", "AK-r",
                       stdin=new_secret(64) + "\n")
    assert imported.returncode == 0
    assert run_cli(env, "keys", "revoke", "--label", label).returncode == 0


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, confirmed", [("k1\n", True), ("y\n", False), ("", False)])
def test_at_a_terminal_the_label_must_be_typed(monkeypatch, capsys, answer: str, confirmed: bool):
    monkeypatch.setattr(sys, "stdin", _Tty(answer))
    if confirmed:
        cli.confirm_unrecoverable("k1", "binance", yes=False)
    else:
        with pytest.raises(cli.CliError, match="not confirmed"):
            cli.confirm_unrecoverable("k1", "binance", yes=False)
    assert "exists nowhere else" in capsys.readouterr().err


# -- 5. status and health -------------------------------------------------------------------------------


def test_health_and_status_of_a_running_agent(env: Env, agent):
    health = run_cli(env, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    status = run_cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    got = json.loads(status.stdout)
    assert got["agent"]["health"] == "SERVING" and got["token"]["up"] is True and got["token"]["keys"] >= 0
    assert got["bots"]["count"] == 1
    assert got["policy"]["sha256"] == load_policy(env.root / "policy.toml").digest
    assert len(got["audit"]["head"]) == 64 and got["audit"]["lines"] > 0
    assert got["metrics"]["listen"] is None
    text = run_cli(env, "status").stdout
    assert "agent:   SERVING" in text and f"sha256 {got['policy']['sha256']}" in text and "metrics: off" in text


def test_health_and_status_without_an_agent(plain: Path):
    health = agent_cli(plain, "health", "--quiet")
    assert (health.returncode, health.stdout.strip()) == (1, "UNREACHABLE")
    status = agent_cli(plain, "status")
    assert status.returncode == cli.EXIT_UNAVAILABLE and "not running (start it: make run" in status.stdout
    assert "unreachable: PIN file" in status.stdout and "Traceback" not in status.stderr


# -- 6. the first run says what to do next ---------------------------------------------------------------


def test_the_first_run_says_what_to_do_next(tmp_path_factory):
    fresh = make_env(tmp_path_factory, "firstrun")
    (fresh.root / "bots.toml").write_text("")
    (fresh.root / "policy.toml").write_text((ROOT / "examples" / "policy.toml").read_text())
    agent = start_agent(fresh, fresh.config)
    try:
        deadline = time.monotonic() + 10
        while '"agent.next-step"' not in agent.log.read_text():
            assert time.monotonic() < deadline, agent.log.read_text()
            time.sleep(0.05)
    finally:
        assert agent.stop() == 0
    event = next(json.loads(line) for line in agent.log.read_text().splitlines() if '"agent.next-step"' in line)
    steps = " ".join(event["steps"])
    assert "make import-key" in steps and "bots add" in steps and str(fresh.root / "policy.toml") in steps


def test_the_next_step_is_a_plain_line_at_a_terminal(tmp_path: Path, plain: Path):
    from agent.config import load_config
    from agent.firstrun import announce

    logged = []

    class Log:
        def info(self, event, **fields):
            logged.append((event, fields))

    out = _Tty()
    announce(load_config(plain), 0, Log(), out)
    assert logged[0][0] == "agent.next-step" and out.getvalue().startswith("signing-agent: it signs nothing yet. Next:")
    quiet = io.StringIO()
    announce(load_config(plain), 0, Log(), quiet)
    assert quiet.getvalue() == ""  # not a terminal: the JSON line only


# -- 7, 8. the Makefile: no ids echoed, live files from examples/ ---------------------------------------


@pytest.fixture
def makedir(tmp_path: Path) -> Path:
    """The Makefile and examples/ alone, with a stand-in for the CLI that prints its arguments."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def make(makedir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    # -o deps: the venv and softhsm2 are not (re)installed here; AGENT=echo shows what would run.
    return subprocess.run(["make", "--no-print-directory", "-o", "deps", "AGENT=echo", *args], cwd=makedir,
                          input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_prints_no_api_key_id(makedir: Path):
    for target in ("import-key", "register-key"):
        proc = make(makedir, target, "LABEL=k", "EXCHANGE=binance", "API_KEY=AKID-not-for-the-terminal")
        assert proc.returncode == 0, proc.stderr
        # The stand-in prints its arguments once: the command line itself is not echoed.
        assert (proc.stdout + proc.stderr).count("AKID-not-for-the-terminal") == 1, proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_revoke_key_passes_yes(makedir: Path):
    assert "--yes" in make(makedir, "revoke-key", "LABEL=k", "YES=1").stdout
    assert "--yes" not in make(makedir, "revoke-key", "LABEL=k").stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_live_files_come_from_the_examples_and_are_never_overwritten(makedir: Path):
    proc = make(makedir, "live-config")
    assert proc.returncode == 0 and "created policy.toml from examples/policy.toml" in proc.stdout
    for name in ("signing-agent.toml", "policy.toml"):
        assert (makedir / name).read_text() == (makedir / "examples" / name).read_text()
    (makedir / "policy.toml").write_text("# mine\n")
    os.utime(makedir / "examples" / "policy.toml", (time.time() + 10, time.time() + 10))  # a `git pull`
    assert make(makedir, "live-config").returncode == 0
    assert (makedir / "policy.toml").read_text() == "# mine\n"


def test_the_examples_are_valid_and_clean():
    from agent.config import load_config

    config = load_config(ROOT / "examples" / "signing-agent.toml")
    assert config.policy_file.name == "policy.toml" and config.bots_file.name == "bots.toml"
    policy = load_policy(ROOT / "examples" / "policy.toml")
    assert policy.bots == {} and not policy.keys  # it grants nothing: the agent signs nothing until you say


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None, reason="not a git checkout")
def test_live_files_and_the_lock_are_untracked_and_ignored():
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

    tracked = git("ls-files", "--", "policy.toml", "signing-agent.toml", "bots.toml", ".bots.toml.lock").stdout
    assert tracked == ""
    ignored = git("check-ignore", "--no-index", "policy.toml", "signing-agent.toml", ".bots.toml.lock", "bots.toml")
    assert ignored.stdout.split() == ["policy.toml", "signing-agent.toml", ".bots.toml.lock", "bots.toml"]
    assert git("check-ignore", "--no-index", "examples/policy.toml").returncode == 1  # the examples are shipped
