"""The seams between parts: the client a bot imports does not read the agent's configuration."""

from __future__ import annotations

import ast
from pathlib import Path

from agent.client import default_target
from agent.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    """Every module PATH imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_client_does_not_import_the_agent_config():
    assert "agent.config" not in _imported_modules(ROOT / "agent" / "client.py")


def test_the_client_finds_the_socket_the_agent_serves_on(tmp_path: Path, monkeypatch):
    """The client reads only [server] socket, without agent.config: it must agree with the agent."""
    monkeypatch.delenv("SIGNING_AGENT_CONFIG", raising=False)
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
