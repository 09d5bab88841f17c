"""Every README snippet marked for testing runs, as pasted, against a real agent on a fresh token.

The marker is an HTML comment (invisible on GitHub) on the line before the code fence:

    <!-- test -->
    ```sh
    .venv/bin/signing-agent audit verify
    ```

Marked `sh` blocks run with bash (-e -o pipefail: a failing command fails the snippet), marked `python` blocks with
the project's Python, each in the README's order, in one sandbox that looks like the operator's checkout: `.venv`
(a link to this one), `examples/` (a link to the checkout's), `signing-agent.toml` (the dev layout: run/agent.sock,
state/, policy.toml, bots.toml) on a fresh SoftHSM2 token holding the key `binance-main`, with a running agent, and
the bot credential in SIGNING_AGENT_TOKEN_FILE as a bot's environment would have it. The exchange is a local one
(tests/support/exchange_server.py: Binance, checking every signature with that key), named by EXCHANGE_URL, the variable
the example bots read. Mark only blocks that run offline and need nothing but that (no make, no sudo, no real
exchange); `<!-- test -->` on anything else makes `make test` fail, which is the point.

A block that shows part of a file is marked `<!-- excerpt: PATH -->` instead: its lines (leading and trailing
spaces aside, blank lines skipped, `...` standing for any lines) must appear in that order in PATH, a file the
tests run (examples/bots/ are run by tests/agent/test_examples.py). An excerpt that drifts from its file fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.deploy import Env, make_env, run_cli, start_agent
from support.leaks import new_secret
from support.exchange_server import ExchangeServer, binance_spot
from support.reference import hmac_credential

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- test -->"
EXCERPT = re.compile(r"^<!-- excerpt: (\S+) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")


def marked_blocks(text: str, marker: re.Pattern[str] | str = MARKER) -> list[tuple[int, str, str]]:
    """(line number of the fence, language, code) of each block whose fence follows the marker line.
    MARKER may be a pattern (excerpts): then the language is replaced by its first group (the path)."""
    pattern = marker if isinstance(marker, re.Pattern) else re.compile(re.escape(marker) + "$")
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found = pattern.match(lines[i - 1].strip()) if i > 0 else None
            if found:
                blocks.append((i + 1, found.group(1) if found.groups() else m[1], "\n".join(lines[i + 1:end]) + "\n"))
            i = end + 1
        else:
            if pattern.match(lines[i].strip()) and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                raise AssertionError(f"README.md:{i + 1}: {lines[i].strip()} must be the line just before a code fence")
            i += 1
    return blocks


def excerpt_missing(excerpt: str, text: str) -> str | None:
    """The first line of EXCERPT not found, in order, among TEXT's lines (stripped; `...` skips any); None: all are."""
    lines = iter(line.strip() for line in text.splitlines())
    for wanted in (line.strip() for line in excerpt.splitlines()):
        if wanted in ("", "..."):
            continue
        if not any(line == wanted for line in lines):
            return wanted
    return None


README = (ROOT / "README.md").read_text()
BLOCKS = marked_blocks(README)
EXCERPTS = marked_blocks(README, EXCERPT)


def test_marker_finds_blocks():
    sample = f"x\n{MARKER}\n```sh\necho 1\n```\n```sh\necho 2\n```\n{MARKER}\n```python\nprint(3)\n```\n"
    assert marked_blocks(sample) == [(3, "sh", "echo 1\n"), (10, "python", "print(3)\n")]
    with pytest.raises(AssertionError, match="just before a code fence"):
        marked_blocks(f"{MARKER}\n\n```sh\necho\n```\n")
    assert len(BLOCKS) >= 4 and {lang for _, lang, _ in BLOCKS} <= {"sh", "python"}
    excerpt = "<!-- excerpt: examples/x.py -->\n```python\na = 1\n```\n"
    assert marked_blocks(excerpt, EXCERPT) == [(2, "examples/x.py", "a = 1\n")] and marked_blocks(excerpt) == []


def test_an_excerpt_is_found_in_order_and_a_drifted_one_is_not():
    text = "import x\n\ndef f():\n    return 1\n\nprint(f())\n"
    assert excerpt_missing("import x\n...\n    return 1\nprint(f())\n", text) is None
    assert excerpt_missing("print(f())\nimport x\n", text) == "import x"  # out of order
    assert excerpt_missing("def f():\n    return 2\n", text) == "return 2"


@pytest.mark.parametrize("line,path,code", EXCERPTS, ids=[f"README.md:{line}" for line, _, _ in EXCERPTS])
def test_readme_excerpt_matches_its_file(line: int, path: str, code: str):
    source = ROOT / path
    assert source.is_file(), f"README.md:{line}: the excerpt names {path}, which does not exist"
    missing = excerpt_missing(code, source.read_text())
    assert missing is None, f"README.md:{line}: not in {path} (in this order): {missing!r}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    env: Env = make_env(tmp_path_factory, "readme")
    (env.root / ".venv").symlink_to(Path(sys.executable).parents[1])
    (env.root / "examples").symlink_to(ROOT / "examples")
    config = env.root / "signing-agent.toml"  # the checkout's default config, as `make run` leaves it
    config.write_text(env.config.read_text())
    secret = new_secret(64)
    proc = run_cli(env, "keys", "import", "--label", "binance-main", "--exchange", "binance", "--api-key",
                   "AKID-readme", stdin=secret + "\n", config=config)
    assert proc.returncode == 0, proc.stderr
    agent = start_agent(env, config)
    with ExchangeServer() as exchange:
        exchange.add(binance_spot(), hmac_credential("binance", "AKID-readme", secret))
        yield env, exchange
        assert exchange.rejected() == [], [(r.http.path, r.verdict) for r in exchange.rejected()]
    assert agent.stop() == 0, agent.log.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("line,lang,code", BLOCKS, ids=[f"README.md:{line}" for line, _, _ in BLOCKS])
def test_readme_snippet_runs(sandbox, line: int, lang: str, code: str):
    sandbox, exchange = sandbox
    command = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "sh" else [str(sandbox.root / ".venv/bin/python"), "-c", code]
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNING_AGENT_CONFIG", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)  # `from agent...` as from the checkout
    env["EXCHANGE_URL"] = exchange.url("binance")  # the example bots' exchange: the local one
    proc = subprocess.run(command, cwd=sandbox.root, env=env, capture_output=True, text=True, timeout=120)
    (sandbox.logs / f"readme-{line}.out").write_text(proc.stdout + proc.stderr)  # the leak scan reads it
    assert proc.returncode == 0, f"README.md:{line} failed ({proc.returncode}):\n{code}\n{proc.stdout}\n{proc.stderr}"
