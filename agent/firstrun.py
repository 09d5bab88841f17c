"""What to do next, said once at start when the agent cannot sign anything yet.

An agent with no key, no bot or no grant signs nothing, and its JSON log alone does not say how to
go on. At start it logs `agent.next-step` with the missing steps, and prints them as a plain line
when its standard error is a terminal (`make run`).
"""

from __future__ import annotations

import sys
from typing import TextIO

from agent.config import Config


def next_steps(config: Config, key_count: int) -> list[str]:
    """The steps still missing before a bot can get a signature (empty: none)."""
    from agent.bots import BotsError
    from agent.bots_db import open_registry
    from agent.custody.store import StoreUnavailable
    from agent.policy import PolicyError, load_policy

    steps = []
    if key_count == 0:
        steps.append("put a key in the token: make import-key LABEL=binance-main EXCHANGE=binance API_KEY=<id> "
                     "< secret.txt (or make generate-key LABEL=... EXCHANGE=... TYPE=ed25519, then make register-key)")
    try:
        registry = open_registry(config)
        try:
            no_bots = not registry.list()
        finally:
            registry.close()
    except (BotsError, StoreUnavailable):
        no_bots = False  # the agent's own log says what is wrong with it
    if no_bots:
        steps.append("add a bot: .venv/bin/signing-agent bots add mm-1 --token-file <its directory>/agent.token")
    try:
        policy = load_policy(config.policy_file)
        no_grants = not policy.bots or not (policy.keys or policy.fallback)
    except PolicyError:
        no_grants = False
    if no_grants:
        steps.append(f"grant the bot the key in {config.policy_file}: .venv/bin/signing-agent policy template "
                     f"--exchange binance --key binance-main --bot mm-1 --merge {config.policy_file}")
    return steps


def announce(config: Config, key_count: int, log, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    try:
        steps = next_steps(config, key_count)
    except Exception:  # noqa: BLE001 - a hint must never stop the agent
        return
    if not steps:
        return
    log.info("agent.next-step", steps=steps)
    if stream.isatty():
        print("signing-agent: it signs nothing yet. Next: " + "; then ".join(steps)
              + ". Check with: .venv/bin/signing-agent status", file=stream, flush=True)
