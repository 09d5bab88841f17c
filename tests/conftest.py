"""Fixtures: a real SoftHSM2 token in a temp dir, the real agent process, the secret-leak guard, and
the layer markers.

Layers: each test carries the marker of its folder (tests/unit, tests/token, tests/agent; the pure
tests of tests/adversarial are `unit` too, its agent-process ones `agent`), set in
pytest_collection_modifyitems below, so `pytest -m unit` runs the fast layer alone.

Leak guard: every secret a test uses comes from `new_secret()` (or is registered
with `register_secret()`, both in support.leaks). After each test, its captured output and failure
report are searched for every registered secret; at the end of the session,
so is every output, audit, state and config file the agent and CLI processes wrote. Any hit fails the run,
naming where, never printing the secret.

Helpers live in tests/support (this file's directory is on sys.path, so `import support` works in
every layer); this file keeps the fixtures and the hooks.
"""

from __future__ import annotations

import os
import secrets as _secrets
import sys
from pathlib import Path

import pytest

from support.deploy import TEST_BOT_TOKEN, Env, load_keyring, make_env, start_agent
from support.leaks import OUTPUT_DIRS, find_leaks

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "token", "agent")
# tests/adversarial holds the security proofs the security model cites, kept together whatever their
# speed: each file's layer is named here (the rest of the folder is pure, `unit`).
ADVERSARIAL_LAYERS = {"test_stream_starvation.py": "agent"}
_LEAKS: list[str] = []


def layer_of(path: Path) -> str | None:
    """The layer of a test file: its folder under tests/ (None for a file not in a layer yet)."""
    folder = path.resolve().relative_to(TESTS).parts[0]
    if folder == "adversarial":
        return ADVERSARIAL_LAYERS.get(path.name, "unit")
    return folder if folder in LAYERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        layer = layer_of(Path(str(item.path)))
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))
        if Path(str(item.path)).resolve().parent.name == "adversarial":
            item.add_marker(pytest.mark.adversarial)


# -- leak guard -------------------------------------------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    texts = [content for _, content in report.sections]
    if report.longrepr is not None:
        texts.append(str(report.longrepr))
    if any(find_leaks(t) for t in texts):
        _LEAKS.append(f"output or failure report of {report.nodeid} ({report.when})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for directory in OUTPUT_DIRS:
        for path in directory.rglob("*"):
            # Process output, and what the agent and CLI write: audit lines, symbol history, bot files.
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".jsonl", ".json", ".toml"):
                if find_leaks(path.read_text(errors="replace")):
                    _LEAKS.append(str(path))
    if _LEAKS:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["A TEST SECRET LEAKED into:"] + [f"  {where}" for where in _LEAKS]
        if reporter:
            reporter.write_line("\n".join(lines), red=True, bold=True)
        else:
            print("\n".join(lines), file=sys.stderr)


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _test_bot_token(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("bot") / "token"
    path.write_text(TEST_BOT_TOKEN + "\n")
    path.chmod(0o600)
    os.environ["SIGNING_AGENT_TOKEN_FILE"] = str(path)
    yield path


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return make_env(tmp_path_factory, "deploy")


@pytest.fixture(scope="session")
def keyring(env: Env):
    """A keyring in this test process, on the session token (the module loads once per process)."""
    with load_keyring(env) as kr:
        yield kr


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    """A fresh key label for one test."""
    return f"t{_secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def agent(env: Env):
    a = start_agent(env, env.config)
    yield a
    assert a.stop() == 0, a.log.read_text()


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A throw-away PostgreSQL cluster (support/pg.py), one per test module that asks for it."""
    from support.pg import remove_cluster, start_cluster

    c = start_cluster()
    yield c
    remove_cluster(c)


@pytest.fixture
def dsn(cluster) -> str:
    """A fresh database in the module's cluster."""
    return cluster.new_database()
