"""Every README snippet marked for testing runs, as pasted, against a real agent on a fresh token.

The marker is an HTML comment (invisible on GitHub) on the line before the code fence:

    <!-- test -->
    ```sh
    .venv/bin/signing-agent audit verify
    ```

Marked `sh` blocks run with bash (-e -o pipefail: a failing command fails the snippet), marked `python` blocks with
the project's Python, each in the README's order, in one sandbox that looks like the operator's checkout: `.venv`
(a link to this one), `signing-agent.toml` (the dev layout: run/agent.sock, state/, policy.toml, bots.toml) on a
fresh SoftHSM2 token holding the key `binance-main`, with a running agent, and the bot credential in
SIGNING_AGENT_TOKEN_FILE as a bot's environment would have it. Mark only blocks that run offline and need nothing
but that (no make, no sudo, no exchange); `<!-- test -->` on anything else makes `make test` fail, which is the point.
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

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- test -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def marked_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the fence, language, code) of each block whose fence follows the marker line."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if i > 0 and lines[i - 1].strip() == MARKER:
                blocks.append((i + 1, m[1], "\n".join(lines[i + 1:end]) + "\n"))
            i = end + 1
        else:
            if lines[i].strip() == MARKER and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                raise AssertionError(f"README.md:{i + 1}: {MARKER} must be the line just before a code fence")
            i += 1
    return blocks


BLOCKS = marked_blocks((ROOT / "README.md").read_text())


def test_marker_finds_blocks():
    sample = f"x\n{MARKER}\n```sh\necho 1\n```\n```sh\necho 2\n```\n{MARKER}\n```python\nprint(3)\n```\n"
    assert marked_blocks(sample) == [(3, "sh", "echo 1\n"), (10, "python", "print(3)\n")]
    with pytest.raises(AssertionError, match="just before a code fence"):
        marked_blocks(f"{MARKER}\n\n```sh\necho\n```\n")
    assert len(BLOCKS) >= 4 and {lang for _, lang, _ in BLOCKS} <= {"sh", "python"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    env: Env = make_env(tmp_path_factory, "readme")
    (env.root / ".venv").symlink_to(Path(sys.executable).parents[1])
    config = env.root / "signing-agent.toml"  # the checkout's default config, as `make run` leaves it
    config.write_text(env.config.read_text())
    secret = new_secret(64)
    proc = run_cli(env, "keys", "import", "--label", "binance-main", "--exchange", "binance", "--api-key",
                   "AKID-readme", stdin=secret + "\n", config=config)
    assert proc.returncode == 0, proc.stderr
    agent = start_agent(env, config)
    yield env
    assert agent.stop() == 0, agent.log.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("line,lang,code", BLOCKS, ids=[f"README.md:{line}" for line, _, _ in BLOCKS])
def test_readme_snippet_runs(sandbox: Env, line: int, lang: str, code: str):
    command = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "sh" else [str(sandbox.root / ".venv/bin/python"), "-c", code]
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNING_AGENT_CONFIG", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)  # `from agent...` as from the checkout
    proc = subprocess.run(command, cwd=sandbox.root, env=env, capture_output=True, text=True, timeout=120)
    (sandbox.logs / f"readme-{line}.out").write_text(proc.stdout + proc.stderr)  # the leak scan reads it
    assert proc.returncode == 0, f"README.md:{line} failed ({proc.returncode}):\n{code}\n{proc.stdout}\n{proc.stderr}"
