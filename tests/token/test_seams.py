"""The seams between parts: tests and the bench use custody's public seam, never its private names.

Keyring offers what they need (`session()`, `locked()`, `forget_cached_handles()`, `is_cached()`,
`recording_searches()`; agent.custody.objects for raw objects): reaching into `_lock`, `_cache`,
`_ensure_session`... would tie them to custody's insides, and a refactoring would break them
silently. The agent's own layering is checked here too: custody and the client do not import the
agent's configuration, and the signing path checks names without custody.
"""

from __future__ import annotations

import ast
import re
import threading

import pytest
from pathlib import Path

from signing_agent_client.client import default_target
from agent.config import load_config
from agent.custody import Keyring

ROOT = Path(__file__).resolve().parents[2]

# `keyring._x`, `kr._x`, `custody._x`, `Keyring._x`, `self._keyring._x`...: a private name of custody's.
# Matched in the text, so that code held in strings (bench/soak.py's instrumented agent) counts too.
PRIVATE_ATTRIBUTE = re.compile(r"\b\w*(?:keyring|custody|kr)\._\w", re.IGNORECASE)


def _sources() -> list[Path]:
    return sorted(p for d in ("tests", "bench") for p in (ROOT / d).rglob("*.py") if p != Path(__file__).resolve())


def test_no_test_or_bench_reaches_into_custody_private_names():
    hits = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for match in PRIVATE_ATTRIBUTE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            hits.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agent.custody"):
                hits.extend(f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}"
                            for alias in node.names if alias.name.startswith("_"))
    assert not hits, "use Keyring's public seam instead:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_is_for():
    assert PRIVATE_ATTRIBUTE.search("with keyring._lock:")
    assert PRIVATE_ATTRIBUTE.search("self._keyring._cache.clear()")
    assert PRIVATE_ATTRIBUTE.search("custody.Keyring._new_info(")
    assert PRIVATE_ATTRIBUTE.search("    with kr._lock:")
    assert not PRIVATE_ATTRIBUTE.search("keyring.forget_cached_handles()")
    assert not PRIVATE_ATTRIBUTE.search("self._keyring = keyring")


def _imported_modules(path: Path) -> set[str]:
    """Every module PATH imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_custody_does_not_import_the_agent_config_and_the_client_package_nothing_of_the_agent():
    paths = sorted((ROOT / "agent" / "custody").glob("*.py"))
    assert not [str(p.relative_to(ROOT)) for p in paths if "agent.config" in _imported_modules(p)]
    client = sorted((ROOT / "clients" / "python" / "src").rglob("*.py"))
    assert client and not [str(p.relative_to(ROOT)) for p in client
                           if any(m == "agent" or m.startswith("agent.") for m in _imported_modules(p))]


def test_names_stand_alone():
    """agent.names is a leaf: the service checks a label with it, not with custody."""
    assert _imported_modules(ROOT / "agent" / "names.py") <= {"__future__", "re"}


def test_locked_holds_off_every_token_call(keyring: Keyring):
    answered = threading.Event()
    with keyring.locked():
        caller = threading.Thread(target=lambda: (keyring.probe(), answered.set()))
        caller.start()
        assert not answered.wait(0.2), "a token call ran while the keyring was locked"
    assert answered.wait(10)
    caller.join()


def test_the_client_finds_the_socket_the_agent_serves_on(tmp_path: Path, monkeypatch):
    """The client reads only [server] socket, without agent.config: it must agree with the agent."""
    monkeypatch.delenv("SIGNING_AGENT_CONFIG", raising=False)
    monkeypatch.delenv("SIGNING_AGENT_TARGET", raising=False)
    token = '[token]\nmodule = "/m.so"\nlabel = "t"\npin_env = "PIN"\n'
    for name, server in (("default", ""), ("relative", '[server]\nsocket = "sockets/a.sock"\n'),
                         ("absolute", f'[server]\nsocket = "{tmp_path}/abs.sock"\n')):
        path = tmp_path / name / "signing-agent.toml"
        path.parent.mkdir()
        path.write_text(token + server)
        expected = f"unix://{load_config(path).server.socket}"
        assert default_target(path) == expected
        monkeypatch.chdir(path.parent)  # no path given: ./signing-agent.toml, as the agent
        assert default_target() == expected


def test_a_client_outside_the_project_is_told_what_to_pass(tmp_path: Path, monkeypatch):
    """SignerClient() in a bot's own directory: $SIGNING_AGENT_TARGET, else an error naming what to pass."""
    from signing_agent_client import NoTargetError, SignerClient

    monkeypatch.delenv("SIGNING_AGENT_CONFIG", raising=False)
    monkeypatch.delenv("SIGNING_AGENT_TARGET", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoTargetError) as caught:
        SignerClient()
    message = str(caught.value)
    assert "SIGNING_AGENT_TARGET" in message and "SignerClient('unix://" in message and "--config" not in message
    monkeypatch.setenv("SIGNING_AGENT_TARGET", "unix:///run/signing-agent/agent.sock")
    with SignerClient() as client:
        assert client.target == "unix:///run/signing-agent/agent.sock"
